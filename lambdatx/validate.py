"""
Validation of invoke requests, shared by the Invoke API (HTTP), the AMQP consumer and the gateway.

Everything here is a pure function of its arguments (plus the clock and randomness for generated
trace ids): it raises a :class:`lambdatx.errors.ServiceError` subclass with the exact message of
``spec/invoke-api.md`` and ``spec/errors.md`` (E03-E14), or returns validated values.

These functions run on every invocation: patterns are compiled once at import, the common
cases (the configured name, no qualifier, absent headers, a small body) return early, and the
payload is never copied or re-encoded.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from typing import NamedTuple

from twisted.logger import Logger

from lambdatx.config import Config
from lambdatx.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestEntityTooLargeException,
    ResourceNotFoundException,
    UnsupportedMediaTypeException,
    ValidationException,
)
from lambdatx.invocation import Invocation, new_request_id

log = Logger(namespace="lambdatx.validate")

#: The AWS ``FunctionName`` pattern, as published (quoted verbatim in error messages).
FUNCTION_NAME_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?"
    r"([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
#: The same pattern with named groups and ASCII-only classes (``\d`` matches other digits).
_FUNCTION_NAME_RE = re.compile(
    r"(?P<arn>arn:(?P<partition>aws[a-zA-Z-]*)?:lambda:)?"
    r"(?:(?P<region>[a-z]{2}(?:-gov)?-[a-z]+-[0-9]):)?"
    r"(?:(?P<account>[0-9]{12}):)?"
    r"(?P<prefix>function:)?"
    r"(?P<name>[a-zA-Z0-9_.-]+)"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?"
)
QUALIFIER_PATTERN = "(|[a-zA-Z0-9$_-]+)"
_QUALIFIER_RE = re.compile(r"[a-zA-Z0-9$_-]+")
#: The AWS model's ``TenantId`` pattern (botocore lambda 2015-03-31), quoted in messages.
TENANT_ID_PATTERN = r"[a-zA-Z0-9\._:\/=+\-@ ]+"
_TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

MAX_ARN_LENGTH = 256
MAX_NAME_LENGTH = 64
MAX_QUALIFIER_LENGTH = 128
MAX_TENANT_ID_LENGTH = 256
MAX_CLIENT_CONTEXT_BYTES = 3583
MAX_COGNITO_IDENTITY_BYTES = 4096
MAX_TRACE_ID_BYTES = 2048

LATEST = "$LATEST"
FUNCTION_ALIAS = "function"

REQUEST_RESPONSE = "RequestResponse"
EVENT = "Event"
DRY_RUN = "DryRun"
INVOCATION_TYPES = frozenset((REQUEST_RESPONSE, EVENT, DRY_RUN))
LOG_TYPES = frozenset(("None", "Tail"))

_INVOCATION_TYPE_ENUM = "Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
_LOG_TYPE_ENUM = "Member must satisfy enum value set: [None, Tail]"
_CLIENT_CONTEXT_INVALID = "Client context must be a valid Base64-encoded JSON object."
_CLIENT_CONTEXT_TOO_LONG = f"Client context must be at most {MAX_CLIENT_CONTEXT_BYTES} bytes."
COGNITO_IDENTITY_INVALID = (
    f"Cognito identity must be a JSON object of at most {MAX_COGNITO_IDENTITY_BYTES} bytes."
)
_QUALIFIER_CONFLICT = (
    "The derived qualifier from the function name does not match the specified qualifier."
)
_EMPTY_EVENT = b"{}"


def _max_length(length: int) -> str:
    return f"Member must have length less than or equal to {length}"


def _min_length(length: int) -> str:
    return f"Member must have length greater than or equal to {length}"


# --- Function name and qualifier ------------------------------------------------------------


class FunctionName(NamedTuple):
    """A parsed ``{FunctionName}``: the bare name and the ``:qualifier`` suffix, if any."""

    name: str
    qualifier: str | None


def function_arn(partition: str, region: str, account_id: str, name: str) -> str:
    return f"arn:{partition}:lambda:{region}:{account_id}:function:{name}"


def function_not_found(arn: str, qualifier: str | None = None) -> ResourceNotFoundException:
    """E05/E06: ``Function not found: <arn>[:<qualifier>]``."""
    if qualifier:
        return ResourceNotFoundException(f"Function not found: {arn}:{qualifier}")
    return ResourceNotFoundException(f"Function not found: {arn}")


def _match_function_name(raw: str) -> re.Match[str]:
    """Check lengths and the AWS pattern (E03, member ``functionName``)."""
    if not raw:
        raise ValidationException.for_value(raw, "functionName", _min_length(1))
    if len(raw) > MAX_ARN_LENGTH:
        raise ValidationException.for_value(raw, "functionName", _max_length(MAX_ARN_LENGTH))
    match = _FUNCTION_NAME_RE.fullmatch(raw)
    if match is None:
        raise ValidationException.for_value(
            raw,
            "functionName",
            "Member must satisfy regular expression pattern: " + FUNCTION_NAME_PATTERN,
        )
    if len(match["name"]) > MAX_NAME_LENGTH:
        raise ValidationException.for_value(raw, "functionName", _max_length(MAX_NAME_LENGTH))
    return match


def _check_scope(match: re.Match[str], partition: str, region: str, account_id: str) -> None:
    """Raise E05 when the ARN's partition, region or account is not ours."""
    sent_partition = (match["partition"] or "") if match["arn"] else partition
    sent_region = match["region"] or region
    sent_account = match["account"] or account_id
    if (sent_partition, sent_region, sent_account) != (partition, region, account_id):
        arn = function_arn(sent_partition, sent_region, sent_account, match["name"])
        raise function_not_found(arn, match["qualifier"])


def parse_function_name(raw: str, region: str, account_id: str, partition: str) -> FunctionName:
    """
    Parse a percent-decoded ``{FunctionName}`` for a server that serves any name (the gateway).

    Accepts the forms of invoke-api.md §2 (name, ``name:q``, partial and full ARN), with no
    ``function`` alias. Raises ``ValidationException`` for a malformed value and
    ``ResourceNotFoundException`` when an ARN names another partition, region or account. The
    qualifier is returned unchecked against any configuration (the daemon checks it).
    """
    match = _match_function_name(raw)
    _check_scope(match, partition, region, account_id)
    return FunctionName(match["name"], match["qualifier"])


def check_qualifier_syntax(qualifier: str | None) -> str | None:
    """Validate a ``Qualifier`` parameter (E03, member ``qualifier``); empty means none."""
    if not qualifier:
        return None
    if len(qualifier) > MAX_QUALIFIER_LENGTH:
        raise ValidationException.for_value(
            qualifier, "qualifier", _max_length(MAX_QUALIFIER_LENGTH)
        )
    if _QUALIFIER_RE.fullmatch(qualifier) is None:
        raise ValidationException.for_value(
            qualifier,
            "qualifier",
            "Member must satisfy regular expression pattern: " + QUALIFIER_PATTERN,
        )
    return qualifier


def merge_qualifiers(from_name: str | None, from_query: str | None) -> str | None:
    """
    Combine the ``:q`` suffix of the name with the ``Qualifier`` parameter.

    The parameter is validated first; both present and different is E04.
    """
    from_query = check_qualifier_syntax(from_query)
    if from_name is None:
        return from_query
    if from_query is not None and from_query != from_name:
        raise InvalidParameterValueException(_QUALIFIER_CONFLICT)
    return from_name


def check_qualifier(config: Config, qualifier: str | None) -> str | None:
    """
    Validate a qualifier for the configured function (the AMQP ``X-Lambdatx-Qualifier``).

    Returns the qualifier, or None when absent or empty. Raises ``ValidationException`` when
    malformed, ``ResourceNotFoundException`` for any other version (E06).
    """
    qualifier = check_qualifier_syntax(qualifier)
    if qualifier is None or qualifier == LATEST or qualifier == config.function_version:
        return qualifier
    raise function_not_found(config.function_arn, qualifier)


def resolve_function(config: Config, raw_name: str, query_qualifier: str | None) -> str | None:
    """
    Resolve ``{FunctionName}`` (percent-decoded) and ``?Qualifier=`` against the served function.

    Returns the qualifier the caller used, or None. Raises the E03-E06 errors of
    invoke-api.md §2.
    """
    # Fast path: the plain name or the aws-lambda-rie alias, without a qualifier.
    if not query_qualifier and (raw_name == FUNCTION_ALIAS or raw_name == config.function_name):
        return None
    match = _match_function_name(raw_name)
    name = match["name"]
    name_qualifier = match["qualifier"]
    if (
        match["prefix"]
        and name_qualifier is None
        and not (match["arn"] or match["region"] or match["account"])
        and name != config.function_name
    ):
        # "function:7" is ambiguous: the pattern reads it as a function named "7", but for
        # the daemon it is the aws-lambda-rie alias with a qualifier, like "function:$LATEST".
        name, name_qualifier = FUNCTION_ALIAS, name
    qualifier = merge_qualifiers(name_qualifier, query_qualifier)
    _check_scope(match, config.partition, config.region, config.account_id)
    if name != config.function_name and name != FUNCTION_ALIAS:
        arn = function_arn(config.partition, config.region, config.account_id, name)
        raise function_not_found(arn, qualifier)
    return check_qualifier(config, qualifier)


# --- Headers ----------------------------------------------------------------------------------


def check_invocation_type(value: str | None) -> str:
    """``X-Amz-Invocation-Type``: absent or empty means ``RequestResponse``."""
    if not value:
        return REQUEST_RESPONSE
    if value in INVOCATION_TYPES:
        return value
    raise ValidationException.for_value(value, "invocationType", _INVOCATION_TYPE_ENUM)


def check_log_type(value: str | None) -> bool:
    """``X-Amz-Log-Type``: True for ``Tail``."""
    if not value or value == "None":
        return False
    if value == "Tail":
        return True
    raise ValidationException.for_value(value, "logType", _LOG_TYPE_ENUM)


def check_content_encoding(value: str | None) -> None:
    """E14: only ``identity`` (or nothing) is accepted."""
    if value and value.strip().lower() != "identity":
        raise UnsupportedMediaTypeException(f"Unsupported content encoding: {value}")


def check_tenant_id(value: str | None) -> str | None:
    """
    ``X-Amz-Tenant-Id``: 1-256 characters of the AWS model's pattern (E03, member ``tenantId``).

    The spec says "visible ASCII"; AWS's model is both narrower (letters, digits, ``._:/=+-@``)
    and wider (space), and AWS wins.
    """
    if value is None:
        return None
    if not value:
        raise ValidationException.for_value(value, "tenantId", _min_length(1))
    if len(value) > MAX_TENANT_ID_LENGTH:
        raise ValidationException.for_value(value, "tenantId", _max_length(MAX_TENANT_ID_LENGTH))
    if _TENANT_ID_RE.fullmatch(value) is None:
        raise ValidationException.for_value(
            value,
            "tenantId",
            "Member must satisfy regular expression pattern: " + TENANT_ID_PATTERN,
        )
    return value


def _is_json_object(text: str | bytes) -> bool:
    try:
        return isinstance(json.loads(text, parse_constant=_reject_constant), dict)
    except (ValueError, RecursionError):
        return False


def decode_client_context(value: str | None) -> str | None:
    """``X-Amz-Client-Context``: base64 of a UTF-8 JSON object → the JSON text (E08, E09)."""
    if not value:
        return None
    if len(value) > MAX_CLIENT_CONTEXT_BYTES:
        raise InvalidRequestContentException(_CLIENT_CONTEXT_TOO_LONG)
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        raise InvalidRequestContentException(_CLIENT_CONTEXT_INVALID) from None
    if not _is_json_object(text):
        raise InvalidRequestContentException(_CLIENT_CONTEXT_INVALID)
    return text


def check_cognito_identity(value: str | None) -> str | None:
    """``X-Lambdatx-Cognito-Identity``: a JSON object of at most 4096 bytes (E10)."""
    if value is None:
        return None
    if len(value.encode("utf-8", "surrogatepass")) > MAX_COGNITO_IDENTITY_BYTES or not (
        _is_json_object(value)
    ):
        raise InvalidRequestContentException(COGNITO_IDENTITY_INVALID)
    return value


def generate_trace_id() -> str:
    """A fresh X-Ray header, as runtime-api.md §4 describes."""
    return (
        f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()};"
        f"Parent={os.urandom(8).hex()};Sampled=0"
    )


def check_trace_id(value: str | None, request_id: str | None = None) -> str:
    """``X-Amzn-Trace-Id`` verbatim when valid, else a generated one (invalid ones logged)."""
    if value:
        size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        if size <= MAX_TRACE_ID_BYTES and _CONTROL_RE.search(value) is None:
            return value
        log.warn(
            "invalid trace id replaced request_id={request_id} length={length}",
            request_id=request_id,
            length=len(value),
        )
    return generate_trace_id()


# --- Body ---------------------------------------------------------------------------------------


def _reject_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity; JSON does not.
    raise ValueError(f"Invalid JSON token {name}")


#: Parses without building dictionaries (about twice as fast on object-heavy bodies).
_VALIDATOR = json.JSONDecoder(object_pairs_hook=lambda pairs: None, parse_constant=_reject_constant)
#: Bodies SDKs and tests send all the time, known to be valid.
_KNOWN_VALID = frozenset((b"{}", b"[]", b"null", b"true", b"false", b'""'))


def check_json(payload: bytes) -> None:
    """E07: the body must be one UTF-8 JSON value of any type."""
    if payload in _KNOWN_VALID:
        return
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        detail = f"Invalid UTF-8 start byte 0x{payload[e.start]:02x} at position {e.start}"
        raise _unparsable(detail) from None
    try:
        _VALIDATOR.decode(text)
    except ValueError as e:  # JSONDecodeError included
        raise _unparsable(str(e)) from None
    except RecursionError:
        raise _unparsable("Nesting too deep") from None


def _unparsable(detail: str) -> InvalidRequestContentException:
    return InvalidRequestContentException(
        "Could not parse request body into json: Could not parse payload into json: " + detail
    )


def too_large(config: Config, event: bool, length: int) -> RequestEntityTooLargeException:
    """E12/E13 with the configured limits."""
    if event:
        return RequestEntityTooLargeException(
            f"{length} byte payload is too large for the Event invocation type "
            f"(limit {config.max_event_bytes} bytes)"
        )
    return RequestEntityTooLargeException(
        f"Request must be smaller than {config.max_request_bytes} bytes for the InvokeFunction "
        "operation"
    )


def build_invocation(
    config: Config,
    *,
    payload: bytes,
    event: bool,
    qualifier: str | None,
    client_context: str | None,
    trace_id: str | None,
    tenant_id: str | None,
    cognito_identity: str | None,
    log_type: str | None,
    content_encoding: str | None,
    request_id: str | None = None,
    source: str = "http",
) -> Invocation:
    """
    Validate everything but the name and build the :class:`Invocation`.

    ``qualifier`` must already be resolved (:func:`resolve_function`, :func:`check_qualifier`).
    Header values are text (HTTP: latin-1 decoded bytes), None when absent. Order of checks:
    content encoding, size, log type, client context, tenant, cognito identity, JSON.
    """
    check_content_encoding(content_encoding)
    length = len(payload)
    if length > (config.max_event_bytes if event else config.max_request_bytes):
        raise too_large(config, event, length)
    tail = check_log_type(log_type) and not event
    context = decode_client_context(client_context)
    tenant_id = check_tenant_id(tenant_id)
    cognito_identity = check_cognito_identity(cognito_identity)
    if not length:
        payload = _EMPTY_EVENT
    elif config.validate_json:
        check_json(payload)
    if request_id is None:
        request_id = new_request_id()
    return Invocation(
        request_id,
        payload,
        event=event,
        qualifier=qualifier,
        # AWS passes the client context for synchronous invocations only.
        client_context=None if event else context,
        cognito_identity=cognito_identity,
        tenant_id=tenant_id,
        trace_id=check_trace_id(trace_id, request_id),
        tail=tail,
        source=source,
    )
