"""Tests for lambdatx.invoke_api: routes, headers and errors in memory, and boto3 on a real port."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.web.server import Site

from http_helpers import UUID4, call, header, service_error
from lambdatx.config import Config
from lambdatx.errors import ShuttingDown, TooManyRequestsException
from lambdatx.invocation import Outcome, timed_out
from lambdatx.invoke_api import InvokeApi, invoke_body_limit, invoke_too_large_response

CONFIG = Config(function_name="echo", function_version="$LATEST")
BASE = "http://lambda.test"
INVOKE = BASE + "/2015-03-31/functions/{}/invocations"


class FakeDispatcher:
    """Records submissions; answers with ``respond(invocation)`` or leaves them pending."""

    def __init__(self):
        self.submitted = []
        self.pending: list[Deferred] = []
        self.cancelled = []
        self.refuse = None
        self.shutting_down = False
        self.ready = True
        self.respond = lambda invocation: Outcome(invocation.payload)

    def submit(self, invocation):
        if self.refuse is not None:
            raise self.refuse
        self.submitted.append(invocation)
        d = Deferred(lambda _: self.cancelled.append(invocation))
        outcome = self.respond(invocation)
        if outcome is None:
            self.pending.append(d)
        else:
            d.callback(outcome)
        return d


@pytest.fixture
def dispatcher():
    return FakeDispatcher()


def client(dispatcher, config=CONFIG):
    return StubTreq(InvokeApi(config, dispatcher).app.resource())


def assert_error(response, content, status, error_type, **body):
    document = service_error(response, content, status, error_type)
    assert header(response, "X-Amz-Function-Error") is None
    for key, value in body.items():
        assert document[key] == value
    return document


# --- successful invocations -----------------------------------------------------------------------


def test_invoke_echo(dispatcher):
    """A synchronous invoke answers 200 with the outcome's body, version and request id."""
    response, content = call(client(dispatcher), "POST", INVOKE.format("echo"), b'{"a":1}')
    assert response.code == 200
    assert content == b'{"a":1}'
    assert header(response, "X-Amz-Executed-Version") == "$LATEST"
    assert header(response, "Content-Type") == "application/json"
    (invocation,) = dispatcher.submitted
    assert header(response, "x-amzn-RequestId") == invocation.request_id
    assert UUID4.fullmatch(invocation.request_id)
    assert (
        invocation.payload == b'{"a":1}' and not invocation.event and invocation.qualifier is None
    )


@pytest.mark.parametrize(
    "name, query, qualifier",
    [
        ("function", "", None),
        (
            "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aecho%3A%24LATEST",
            "",
            "$LATEST",
        ),
        ("arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST", "", "$LATEST"),
        ("echo%3A%24LATEST", "", "$LATEST"),
        ("echo", "?Qualifier=%24LATEST", "$LATEST"),
        ("function", "?Qualifier=", None),
    ],
)
def test_invoke_name_forms(dispatcher, name, query, qualifier):
    """Percent-encoded ARNs (as botocore sends them), aliases and ?Qualifier= are accepted."""
    response, _ = call(client(dispatcher), "POST", INVOKE.format(name) + query, b"{}")
    assert response.code == 200
    assert dispatcher.submitted[0].qualifier == qualifier


def test_form_encoded_body_is_not_a_query(dispatcher):
    """A curl-style form-encoded body never counts as the Qualifier parameter."""
    response, _ = call(
        client(dispatcher),
        "POST",
        INVOKE.format("echo"),
        b'"Qualifier=9"',
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.code == 200
    assert dispatcher.submitted[0].qualifier is None


def test_headers_reach_invocation(dispatcher):
    """Client context, trace id, tenant, cognito identity and Tail are passed to the invocation."""
    context = base64.b64encode(b'{"custom":{"a":"b"}}').decode()
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    identity = '{"cognitoIdentityId":"i","cognitoIdentityPoolId":"p"}'
    dispatcher.respond = lambda inv: Outcome(b"{}").with_log_result("dGFpbA==")
    response, _ = call(
        client(dispatcher),
        "POST",
        INVOKE.format("echo"),
        b"{}",
        {
            "X-Amz-Client-Context": context,
            "X-Amzn-Trace-Id": trace,
            "X-Amz-Tenant-Id": "acme",
            "X-Lambdatx-Cognito-Identity": identity,
            "X-Amz-Log-Type": "Tail",
            "Content-Type": "binary/octet-stream",
            "Authorization": "AWS4-HMAC-SHA256 whatever",
        },
    )
    assert response.code == 200
    assert header(response, "X-Amz-Log-Result") == "dGFpbA=="
    (invocation,) = dispatcher.submitted
    assert invocation.client_context == '{"custom":{"a":"b"}}'
    assert invocation.trace_id == trace
    assert invocation.tenant_id == "acme"
    assert invocation.cognito_identity == identity
    assert invocation.tail


def test_function_error_is_200(dispatcher):
    """A function error outcome is a 200 with X-Amz-Function-Error: Unhandled and its document."""
    dispatcher.respond = lambda inv: timed_out(inv.request_id, 3)
    response, content = call(client(dispatcher), "POST", INVOKE.format("echo"), b"{}")
    assert response.code == 200
    assert header(response, "X-Amz-Function-Error") == "Unhandled"
    assert json.loads(content)["errorType"] == "Sandbox.Timedout"


def test_runtime_content_type(dispatcher):
    """The runtime's Content-Type is returned on a 200."""
    dispatcher.respond = lambda inv: Outcome(b"plain", "text/plain")
    response, content = call(client(dispatcher), "POST", INVOKE.format("echo"), b"{}")
    assert (content, header(response, "Content-Type")) == (b"plain", "text/plain")


def test_event_202(dispatcher, log_events):
    """An Event invoke is submitted, answered 202 with no body, and its outcome logged."""
    dispatcher.respond = lambda inv: None
    response, content = call(
        client(dispatcher), "POST", INVOKE.format("echo"), b"{}", {"X-Amz-Invocation-Type": "Event"}
    )
    assert (response.code, content) == (202, b"")
    assert header(response, "Content-Type") is None
    (invocation,) = dispatcher.submitted
    assert invocation.event and header(response, "x-amzn-RequestId") == invocation.request_id
    dispatcher.pending[0].callback(timed_out(invocation.request_id, 3))
    (event,) = [e for e in log_events if "event invocation failed" in e.get("log_format", "")]
    assert event["request_id"] == invocation.request_id
    assert event["error_type"] == "Sandbox.Timedout"


def test_event_outcomes_logged(dispatcher, log_events):
    """Event successes are logged at INFO and refusals after submission never go unhandled."""
    dispatcher.respond = lambda inv: None
    treq = client(dispatcher)
    for _ in range(2):
        call(treq, "POST", INVOKE.format("echo"), b"{}", {"X-Amz-Invocation-Type": "Event"})
    dispatcher.pending[0].callback(Outcome(b"{}"))
    dispatcher.pending[1].errback(ShuttingDown())
    formats = [e.get("log_format", "") for e in log_events]
    assert any("event invocation succeeded" in f for f in formats)
    assert any("event invocation not run" in f for f in formats)


def test_dry_run_204(dispatcher):
    """DryRun validates and answers 204 without submitting anything."""
    response, content = call(
        client(dispatcher),
        "POST",
        INVOKE.format("echo"),
        b"not json",
        {"X-Amz-Invocation-Type": "DryRun"},
    )
    assert (response.code, content) == (204, b"")
    assert UUID4.fullmatch(header(response, "x-amzn-RequestId"))
    assert dispatcher.submitted == []


def test_dry_run_still_validates(dispatcher):
    """DryRun with an unknown name or bad header is refused as the real invoke would be."""
    treq = client(dispatcher)
    response, content = call(
        treq, "POST", INVOKE.format("nope"), b"", {"X-Amz-Invocation-Type": "DryRun"}
    )
    assert_error(response, content, 404, "ResourceNotFoundException")
    response, content = call(
        treq,
        "POST",
        INVOKE.format("echo"),
        b"",
        {"X-Amz-Invocation-Type": "DryRun", "X-Amz-Log-Type": "All"},
    )
    assert_error(response, content, 400, "ValidationException")


def test_cancel_on_disconnect(dispatcher):
    """A caller that goes away cancels the Deferred the dispatcher returned."""
    dispatcher.respond = lambda inv: None
    treq = client(dispatcher)
    d = treq.request("POST", INVOKE.format("echo"), data=b"{}")
    treq.flush()
    assert len(dispatcher.pending) == 1 and dispatcher.cancelled == []
    d.addErrback(lambda failure: None)
    d.cancel()
    treq.flush()
    assert dispatcher.cancelled == dispatcher.submitted


# --- service errors -------------------------------------------------------------------------------


def test_unknown_function(dispatcher):
    """An unknown name is 404 ResourceNotFoundException with the ARN in Message."""
    response, content = call(client(dispatcher), "POST", INVOKE.format("nope"), b"{}")
    assert_error(
        response,
        content,
        404,
        "ResourceNotFoundException",
        Type="User",
        Message="Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
    )
    assert dispatcher.submitted == []


@pytest.mark.parametrize(
    "url, headers, status, error_type",
    [
        (INVOKE.format("bad%20name"), {}, 400, "ValidationException"),
        (INVOKE.format("echo") + "?Qualifier=a.b", {}, 400, "ValidationException"),
        (INVOKE.format("echo:1") + "?Qualifier=2", {}, 400, "InvalidParameterValueException"),
        (INVOKE.format("echo:9"), {}, 404, "ResourceNotFoundException"),
        (INVOKE.format("echo"), {"X-Amz-Invocation-Type": "Async"}, 400, "ValidationException"),
        (INVOKE.format("echo"), {"X-Amz-Log-Type": "Full"}, 400, "ValidationException"),
        (INVOKE.format("echo"), {"X-Amz-Tenant-Id": "a;b"}, 400, "ValidationException"),
        (
            INVOKE.format("echo"),
            {"X-Amz-Client-Context": "!!"},
            400,
            "InvalidRequestContentException",
        ),
        (
            INVOKE.format("echo"),
            {"X-Lambdatx-Cognito-Identity": "[]"},
            400,
            "InvalidRequestContentException",
        ),
        (INVOKE.format("echo"), {"Content-Encoding": "gzip"}, 415, "UnsupportedMediaTypeException"),
    ],
)
def test_refusals(dispatcher, url, headers, status, error_type):
    """Malformed names, qualifiers and headers are refused with their AWS codes; nothing runs."""
    response, content = call(client(dispatcher), "POST", url, b"{}", headers)
    document = assert_error(response, content, status, error_type)
    if error_type == "ValidationException":
        assert list(document) == ["message"]
    assert dispatcher.submitted == []


def test_body_not_json(dispatcher):
    """A non-JSON body is 400 InvalidRequestContentException with the parser detail."""
    response, content = call(client(dispatcher), "POST", INVOKE.format("echo"), b"hello")
    assert_error(
        response,
        content,
        400,
        "InvalidRequestContentException",
        message=(
            "Could not parse request body into json: Could not parse payload into json: "
            "Expecting value: line 1 column 1 (char 0)"
        ),
    )


def test_body_too_large(dispatcher):
    """Bodies over the limit of their invocation type are 413 with the configured numbers."""
    treq = client(dispatcher, replace(CONFIG, max_request_bytes=10, max_event_bytes=4))
    response, content = call(treq, "POST", INVOKE.format("echo"), b'"0123456789"')
    assert_error(
        response,
        content,
        413,
        "RequestEntityTooLargeException",
        message=("Request must be smaller than 10 bytes for the InvokeFunction operation"),
    )
    response, content = call(
        treq, "POST", INVOKE.format("echo"), b'"abc"', {"X-Amz-Invocation-Type": "Event"}
    )
    assert_error(
        response,
        content,
        413,
        "RequestEntityTooLargeException",
        message=("5 byte payload is too large for the Event invocation type (limit 4 bytes)"),
    )


def test_throttled(dispatcher):
    """A synchronous refusal by the dispatcher (queue full) is 429 with Retry-After and Reason."""
    dispatcher.refuse = TooManyRequestsException()
    response, content = call(client(dispatcher), "POST", INVOKE.format("echo"), b"{}")
    assert_error(
        response,
        content,
        429,
        "TooManyRequestsException",
        Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
    )
    assert header(response, "Retry-After") == "1"


def test_shutting_down(dispatcher):
    """An invoke during shutdown is 500 ServiceException with a capitalised Message."""
    dispatcher.refuse = ShuttingDown()
    response, content = call(client(dispatcher), "POST", INVOKE.format("echo"), b"{}")
    assert_error(
        response,
        content,
        500,
        "ServiceException",
        Type="Service",
        Message="Service is shutting down.",
    )


@pytest.mark.allow_logged_errors.with_args(ZeroDivisionError)
def test_internal_error(dispatcher, log_events):
    """An unexpected exception is logged once and answered as E18 naming the request id."""

    def boom(invocation):
        raise ZeroDivisionError()

    dispatcher.respond = boom
    response, content = call(client(dispatcher), "POST", INVOKE.format("echo"), b"{}")
    document = assert_error(response, content, 500, "ServiceException")
    request_id = header(response, "x-amzn-RequestId")
    assert document["Message"] == f"Internal error (request {request_id})."
    assert len([e for e in log_events if e.get("log_failure") is not None]) == 1


@pytest.mark.parametrize(
    "method, url, status",
    [
        ("GET", INVOKE.format("echo"), 405),
        ("PUT", INVOKE.format("nope"), 405),
        ("DELETE", INVOKE.format("echo"), 405),
        ("POST", BASE + "/2021-11-15/functions/echo/response-streaming-invocations", 404),
        ("POST", BASE + "/2015-03-31/functions/echo", 404),
        ("GET", BASE + "/", 404),
        ("POST", BASE + "/", 404),
        ("GET", BASE + "/_/health", 404),
        ("GET", BASE + "/2018-06-01/runtime/invocation/next", 404),
    ],
)
def test_unknown_operations(dispatcher, method, url, status):
    """Unknown paths are 404 and other methods on the invoke path 405, as UnknownOperation."""
    response, content = call(client(dispatcher), method, url)
    path = url[len(BASE) :]
    assert_error(
        response,
        content,
        status,
        "UnknownOperationException",
        message=f"Unknown operation: {method} {path}",
    )
    assert header(response, "Allow") == ("POST" if status == 405 else None)
    assert dispatcher.submitted == []


# --- OpenFaaS -------------------------------------------------------------------------------------


def test_openfaas_routes(dispatcher):
    """OpenFaaS: POST / invokes and the health and ready probes track the dispatcher."""
    treq = client(dispatcher, replace(CONFIG, enable_openfaas=True))
    response, content = call(treq, "POST", BASE + "/", b'{"x":2}')
    assert (response.code, content) == (200, b'{"x":2}')
    assert dispatcher.submitted[0].qualifier is None
    assert call(treq, "GET", BASE + "/_/health")[0].code == 200
    assert call(treq, "GET", BASE + "/_/ready")[0].code == 200
    dispatcher.ready = False
    assert call(treq, "GET", BASE + "/_/ready")[0].code == 503
    dispatcher.shutting_down = True
    assert call(treq, "GET", BASE + "/_/health")[0].code == 503
    response, content = call(treq, "GET", BASE + "/")
    assert_error(response, content, 405, "UnknownOperationException")


# --- hooks for the HTTP layer ---------------------------------------------------------------------


class _Headers:
    def __init__(self, invocation_type):
        self.value = invocation_type

    def getRawHeaders(self, name):
        return [self.value] if self.value is not None and name == b"x-amz-invocation-type" else None


class _Request:
    def __init__(self, invocation_type=None):
        self.requestHeaders = _Headers(invocation_type)


def test_body_limit_by_type():
    """The HTTP layer's body limit is per invocation type; DryRun bodies are discarded."""
    assert invoke_body_limit(CONFIG, _Request()) == CONFIG.max_request_bytes
    assert invoke_body_limit(CONFIG, _Request(b"RequestResponse")) == CONFIG.max_request_bytes
    assert invoke_body_limit(CONFIG, _Request(b"Event")) == CONFIG.max_event_bytes
    assert invoke_body_limit(CONFIG, _Request(b"DryRun")) is None


def test_too_large_response():
    """The early 413 carries the Lambda error shape and the message of the invocation type."""
    status, headers, body = invoke_too_large_response(CONFIG, _Request(b"Event"), 2000000)
    assert status == 413
    assert (b"x-amzn-ErrorType", b"RequestEntityTooLargeException") in headers
    assert json.loads(body)["message"] == (
        "2000000 byte payload is too large for the Event invocation type (limit 1048576 bytes)"
    )
    status, _, body = invoke_too_large_response(CONFIG, _Request(), 7000000)
    assert json.loads(body)["message"].startswith("Request must be smaller than 6291456 bytes")


# --- boto3 against a real listener ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_boto3_parses_errors_and_outcomes():
    """boto3 raises the right error codes and reports results and function errors as AWS does."""
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import ClientError
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.threads import deferToThread

    dispatcher = FakeDispatcher()
    dispatcher.respond = lambda inv: (
        timed_out(inv.request_id, 3) if inv.payload == b'{"fail":true}' else Outcome(inv.payload)
    )
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Site(InvokeApi(CONFIG, dispatcher).app.resource())
    )
    try:
        lam = boto3.client(
            "lambda",
            endpoint_url=f"http://127.0.0.1:{port.getHost().port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
            config=BotoConfig(retries={"max_attempts": 0}),
        )

        def error_code(**kwargs):
            try:
                lam.invoke(**kwargs)
            except ClientError as e:
                return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
            raise AssertionError("no error")

        assert await deferToThread(error_code, FunctionName="nope") == (
            "ResourceNotFoundException",
            404,
        )
        assert await deferToThread(error_code, FunctionName="echo", LogType="Full") == (
            "ValidationException",
            400,
        )
        assert await deferToThread(error_code, FunctionName="echo", Payload=b"hello") == (
            "InvalidRequestContentException",
            400,
        )

        def invoke(**kwargs):
            result = lam.invoke(**kwargs)
            return result, result["Payload"].read()

        arn = "arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST"
        result, payload = await deferToThread(invoke, FunctionName=arn, Payload=b'{"k":"v"}')
        assert (result["StatusCode"], payload, result["ExecutedVersion"]) == (
            200,
            b'{"k":"v"}',
            "$LATEST",
        )
        assert "FunctionError" not in result
        assert dispatcher.submitted[-1].qualifier == "$LATEST"

        result, payload = await deferToThread(invoke, FunctionName="echo", Payload=b'{"fail":true}')
        assert (result["StatusCode"], result["FunctionError"]) == (200, "Unhandled")
        assert json.loads(payload)["errorType"] == "Sandbox.Timedout"

        result, _ = await deferToThread(invoke, FunctionName="echo", InvocationType="Event")
        assert result["StatusCode"] == 202
        result, _ = await deferToThread(invoke, FunctionName="echo", InvocationType="DryRun")
        assert result["StatusCode"] == 204
    finally:
        await port.stopListening()
