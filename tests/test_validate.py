"""Unit tests for lambdatx.validate: names, qualifiers, headers and bodies (invoke-api.md §2-4)."""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import replace

import pytest

from lambdatx.config import Config
from lambdatx.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestEntityTooLargeException,
    ResourceNotFoundException,
    UnsupportedMediaTypeException,
    ValidationException,
)
from lambdatx.validate import (
    FUNCTION_NAME_PATTERN,
    build_invocation,
    check_invocation_type,
    check_qualifier,
    check_trace_id,
    generate_trace_id,
    parse_function_name,
    resolve_function,
)

CONFIG = Config(function_name="echo", function_version="7")
ARN = "arn:aws:lambda:us-east-1:000000000000:function:echo"
NAME_PATTERN = "Member must satisfy regular expression pattern: " + FUNCTION_NAME_PATTERN
TRACE_RE = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0")


def validation(value: str, member: str, constraint: str) -> str:
    return (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def build(**overrides):
    arguments = dict(
        payload=b'{"a":1}',
        event=False,
        qualifier=None,
        client_context=None,
        trace_id=None,
        tenant_id=None,
        cognito_identity=None,
        log_type=None,
        content_encoding=None,
    )
    config = overrides.pop("config", CONFIG)
    arguments.update(overrides)
    return build_invocation(config, **arguments)


def b64(document) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


# --- resolve_function -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, query, expected",
    [
        ("function", None, None),
        ("echo", None, None),
        ("echo", "", None),
        ("echo:$LATEST", None, "$LATEST"),
        ("echo:7", None, "7"),
        ("function:$LATEST", None, "$LATEST"),
        ("function:7", None, "7"),
        ("function:echo", None, None),
        ("echo", "$LATEST", "$LATEST"),
        ("function", "7", "7"),
        ("echo:7", "7", "7"),
        ("000000000000:function:echo", None, None),
        ("000000000000:echo", None, None),
        ("000000000000:echo:$LATEST", None, "$LATEST"),
        (ARN, None, None),
        (ARN + ":$LATEST", None, "$LATEST"),
        (ARN, "7", "7"),
        ("us-east-1:000000000000:function:echo", None, None),
    ],
)
def test_resolve_accepted_forms(raw, query, expected):
    """Every accepted form of invoke-api.md §2 resolves to the qualifier the caller used."""
    assert resolve_function(CONFIG, raw, query) == expected


@pytest.mark.parametrize(
    "raw, query, message",
    [
        ("nope", None, "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"),
        ("Echo", None, "Function not found: arn:aws:lambda:us-east-1:000000000000:function:Echo"),
        (
            "nope:3",
            None,
            "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope:3",
        ),
        ("echo:8", None, f"Function not found: {ARN}:8"),
        ("echo", "prod", f"Function not found: {ARN}:prod"),
        ("function:nope", None, f"Function not found: {ARN}:nope"),
        (
            "111111111111:function:echo",
            None,
            "Function not found: arn:aws:lambda:us-east-1:111111111111:function:echo",
        ),
        (
            "arn:aws:lambda:eu-west-1:000000000000:function:echo",
            None,
            "Function not found: arn:aws:lambda:eu-west-1:000000000000:function:echo",
        ),
        (
            "arn:aws-cn:lambda:us-east-1:000000000000:function:echo:$LATEST",
            None,
            "Function not found: arn:aws-cn:lambda:us-east-1:000000000000:function:echo:$LATEST",
        ),
    ],
)
def test_resolve_not_found(raw, query, message):
    """Unserved names, versions, partitions, regions and accounts are 404s naming what was sent."""
    with pytest.raises(ResourceNotFoundException) as caught:
        resolve_function(CONFIG, raw, query)
    assert caught.value.message == message


def test_resolve_configured_version_and_partition():
    """A China region yields the aws-cn partition, and the configured version is accepted."""
    config = Config(function_name="echo", region="cn-north-1", function_version="$LATEST")
    arn = "arn:aws-cn:lambda:cn-north-1:000000000000:function:echo:$LATEST"
    assert resolve_function(config, arn, None) == "$LATEST"
    with pytest.raises(ResourceNotFoundException):
        resolve_function(config, "arn:aws:lambda:cn-north-1:000000000000:function:echo", None)


@pytest.mark.parametrize(
    "raw, constraint",
    [
        ("", "Member must have length greater than or equal to 1"),
        ("a" * 257, "Member must have length less than or equal to 256"),
        ("a" * 65, "Member must have length less than or equal to 64"),
        ("bad name", NAME_PATTERN),
        ("echo:$NOPE", NAME_PATTERN),
        ("echo:", NAME_PATTERN),
        ("a/b", NAME_PATTERN),
        ("arn:aws:s3:us-east-1:000000000000:function:echo", NAME_PATTERN),
        ("écho", NAME_PATTERN),
    ],
)
def test_resolve_malformed_name(raw, constraint):
    """A malformed name is a ValidationException on member functionName with AWS's constraint."""
    with pytest.raises(ValidationException) as caught:
        resolve_function(CONFIG, raw, None)
    assert caught.value.message == validation(raw, "functionName", constraint)


@pytest.mark.parametrize(
    "query, constraint",
    [
        ("bad q", "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"),
        ("a.b", "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"),
        ("q" * 129, "Member must have length less than or equal to 128"),
    ],
)
def test_resolve_malformed_qualifier(query, constraint):
    """A malformed Qualifier parameter is a ValidationException on member qualifier."""
    with pytest.raises(ValidationException) as caught:
        resolve_function(CONFIG, "echo", query)
    assert caught.value.message == validation(query, "qualifier", constraint)


def test_resolve_qualifier_conflict():
    """A name qualifier that differs from ?Qualifier= is InvalidParameterValueException."""
    with pytest.raises(InvalidParameterValueException) as caught:
        resolve_function(CONFIG, "echo:$LATEST", "7")
    assert caught.value.message == (
        "The derived qualifier from the function name does not match the specified qualifier."
    )


# --- parse_function_name, check_qualifier ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("anything", ("anything", None)),
        ("function", ("function", None)),
        ("function:$LATEST", ("function", "$LATEST")),
        ("other:prod", ("other", "prod")),
        ("000000000000:function:other", ("other", None)),
        ("arn:aws:lambda:us-east-1:000000000000:function:other:3", ("other", "3")),
    ],
)
def test_parse_function_name_any_name(raw, expected):
    """The gateway's parser returns the bare name and qualifier of any well-formed name."""
    assert parse_function_name(raw, "us-east-1", "000000000000", "aws") == expected


def test_parse_function_name_rejects():
    """The gateway's parser raises for malformed names and for another region or account."""
    with pytest.raises(ValidationException):
        parse_function_name("no good", "us-east-1", "000000000000", "aws")
    with pytest.raises(ResourceNotFoundException) as caught:
        parse_function_name(
            "arn:aws:lambda:eu-west-1:000000000000:function:x", "us-east-1", "000000000000", "aws"
        )
    assert caught.value.message == (
        "Function not found: arn:aws:lambda:eu-west-1:000000000000:function:x"
    )


def test_check_qualifier():
    """The AMQP qualifier header accepts $LATEST and the version, refusing others."""
    assert check_qualifier(CONFIG, None) is None
    assert check_qualifier(CONFIG, "") is None
    assert check_qualifier(CONFIG, "$LATEST") == "$LATEST"
    assert check_qualifier(CONFIG, "7") == "7"
    with pytest.raises(ResourceNotFoundException) as caught:
        check_qualifier(CONFIG, "8")
    assert caught.value.message == f"Function not found: {ARN}:8"
    with pytest.raises(ValidationException):
        check_qualifier(CONFIG, "no way")


# --- invocation type and log type -----------------------------------------------------------------


def test_invocation_type():
    """X-Amz-Invocation-Type defaults to RequestResponse and rejects values outside the enum."""
    assert check_invocation_type(None) == "RequestResponse"
    assert check_invocation_type("") == "RequestResponse"
    for value in ("RequestResponse", "Event", "DryRun"):
        assert check_invocation_type(value) == value
    with pytest.raises(ValidationException) as caught:
        check_invocation_type("event")
    assert caught.value.message == validation(
        "event",
        "invocationType",
        "Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
    )


def test_log_type():
    """X-Amz-Log-Type Tail sets tail on synchronous invocations only; other values are refused."""
    assert build(log_type="Tail").tail is True
    assert build(log_type="None").tail is False
    assert build(log_type="Tail", event=True).tail is False
    with pytest.raises(ValidationException) as caught:
        build(log_type="tail")
    assert caught.value.message == validation(
        "tail", "logType", "Member must satisfy enum value set: [None, Tail]"
    )


# --- body -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b'{"a":[1,2,{"b":null}]}',
        b"[]",
        b'"text"',
        b"42",
        b"-1.5e3",
        b"true",
        b"null",
        b' {"x": "\xc3\xa9"} ',
    ],
)
def test_json_values_accepted(payload):
    """Any UTF-8 JSON value is accepted and passed verbatim."""
    assert build(payload=payload).payload is payload


@pytest.mark.parametrize(
    "payload, detail",
    [
        (b"hello", "Expecting value: line 1 column 1 (char 0)"),
        (b'{"a":1}{}', "Extra data: line 1 column 8 (char 7)"),
        (b"NaN", "Invalid JSON token NaN"),
        (b'"\xff"', "Invalid UTF-8 start byte 0xff at position 1"),
        (b"   ", "Expecting value: line 1 column 4 (char 3)"),
    ],
)
def test_json_refused(payload, detail):
    """A body that is not one UTF-8 JSON value is InvalidRequestContentException with detail."""
    with pytest.raises(InvalidRequestContentException) as caught:
        build(payload=payload)
    assert caught.value.message == (
        "Could not parse request body into json: Could not parse payload into json: " + detail
    )


def test_deeply_nested_json_refused():
    """Nesting deeper than the parser's recursion limit is refused, not a crash."""
    with pytest.raises(InvalidRequestContentException):
        build(payload=b"[" * 100000 + b"]" * 100000)


def test_empty_body_and_no_validation():
    """An empty body becomes {}; with validation off the bytes pass verbatim."""
    assert build(payload=b"").payload == b"{}"
    assert build(payload=b"hello", config=replace(CONFIG, validate_json=False)).payload == b"hello"


def test_large_body_is_fast():
    """A 6 MB object-heavy body validates well under a second and is not copied."""
    payload = json.dumps([{"id": i, "v": [1, 2.5, None]} for i in range(140000)]).encode()
    assert len(payload) < CONFIG.max_request_bytes
    started = time.perf_counter()
    invocation = build(payload=payload)
    assert time.perf_counter() - started < 1.0
    assert invocation.payload is payload


def test_size_limits():
    """Bodies over their invocation type's limit get the 413 messages with configured limits."""
    config = replace(CONFIG, max_request_bytes=10, max_event_bytes=5, validate_json=False)
    assert build(config=config, payload=b"x" * 10).payload == b"x" * 10
    with pytest.raises(RequestEntityTooLargeException) as caught:
        build(config=config, payload=b"x" * 11)
    assert caught.value.message == (
        "Request must be smaller than 10 bytes for the InvokeFunction operation"
    )
    with pytest.raises(RequestEntityTooLargeException) as caught:
        build(config=config, payload=b"x" * 6, event=True)
    assert caught.value.message == (
        "6 byte payload is too large for the Event invocation type (limit 5 bytes)"
    )


def test_content_encoding():
    """Only an absent or identity Content-Encoding is accepted (415 otherwise)."""
    build(content_encoding="identity")
    build(content_encoding="")
    with pytest.raises(UnsupportedMediaTypeException) as caught:
        build(content_encoding="gzip")
    assert caught.value.message == "Unsupported content encoding: gzip"


# --- client context, tenant, cognito, trace -------------------------------------------------------


def test_client_context_decoded():
    """A base64 JSON object is delivered decoded, for synchronous invocations only."""
    context = {"custom": {"k": "v"}, "env": {}}
    text = json.dumps(context)
    assert build(client_context=b64(context)).client_context == text
    assert build(client_context=b64(context), event=True).client_context is None


@pytest.mark.parametrize(
    "value",
    [
        "not base64!",
        base64.b64encode(b"[1,2]").decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        base64.b64encode(b"{bad").decode(),
        "e30",
    ],
)
def test_client_context_invalid(value):
    """Client context that is not base64 of a UTF-8 JSON object is refused with the AWS message."""
    with pytest.raises(InvalidRequestContentException) as caught:
        build(client_context=value)
    assert caught.value.message == "Client context must be a valid Base64-encoded JSON object."


def test_client_context_too_long():
    """Client context longer than 3583 bytes of base64 is refused with its own message."""
    value = b64({"custom": {"k": "x" * 2700}})
    assert len(value) > 3583
    with pytest.raises(InvalidRequestContentException) as caught:
        build(client_context=value)
    assert caught.value.message == "Client context must be at most 3583 bytes."


def test_tenant_id():
    """Tenant ids matching AWS's TenantId shape pass; others are ValidationExceptions."""
    for value in ("acme-1:x/y", "a.b_c=d+e@f g", "t" * 256):
        assert build(tenant_id=value).tenant_id == value
    for value in ("", "t" * 257, "tab\there", "é", "semi;colon", "<x>"):
        with pytest.raises(ValidationException) as caught:
            build(tenant_id=value)
        assert "at 'tenantId'" in caught.value.message
    with pytest.raises(ValidationException) as caught:
        build(tenant_id="a;b")
    assert caught.value.message == validation(
        "a;b",
        "tenantId",
        r"Member must satisfy regular expression pattern: [a-zA-Z0-9\._:\/=+\-@ ]+",
    )


def test_cognito_identity():
    """A JSON object of at most 4096 bytes passes; anything else is refused with E10's message."""
    identity = '{"cognitoIdentityId":"id","cognitoIdentityPoolId":"pool"}'
    assert build(cognito_identity=identity).cognito_identity == identity
    for value in ("[]", "nope", '{"a":"' + "x" * 4100 + '"}'):
        with pytest.raises(InvalidRequestContentException) as caught:
            build(cognito_identity=value)
        assert caught.value.message == (
            "Cognito identity must be a JSON object of at most 4096 bytes."
        )


def test_trace_id_verbatim_or_generated(log_events):
    """Valid trace headers pass verbatim; absent ones are generated; invalid ones are logged."""
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert build(trace_id=header).trace_id == header
    assert TRACE_RE.fullmatch(build().trace_id)
    assert not [e for e in log_events if e.get("log_level") and "trace" in e["log_format"]]
    for bad in ("a\x01b", "x" * 2049):
        assert TRACE_RE.fullmatch(check_trace_id(bad, "rid"))
    warnings = [e for e in log_events if "invalid trace id" in e.get("log_format", "")]
    assert len(warnings) == 2 and warnings[0]["request_id"] == "rid"


def test_generated_trace_id_time():
    """Generated trace ids carry the current epoch seconds in hex."""
    root = generate_trace_id().split(";")[0]
    assert abs(int(root.split("-")[1], 16) - time.time()) < 5


def test_request_id_and_source():
    """A given request id and source are kept; otherwise a UUID v4 is assigned."""
    invocation = build(request_id="rid", source="amqp", qualifier="7")
    assert (invocation.request_id, invocation.source, invocation.qualifier) == ("rid", "amqp", "7")
    assert re.fullmatch(r"[0-9a-f-]{36}", build().request_id)
