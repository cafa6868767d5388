"""The gateway without a broker: reply → HTTP, configuration, local validation, the router's
bookkeeping on a fake connection and a fake clock, and the console script and twistd plugin."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task, threads
from txamqp.content import Content

from http_helpers import UUID4, header
from http_helpers import call as treq_call
from http_helpers import service_error as error
from lambdatx import gateway
from lambdatx.amqp_client import Closed, Nacked
from lambdatx.config import ConfigError
from lambdatx.errors import ServiceException
from lambdatx.gateway import GatewayApi, make_gateway_service
from lambdatx.gateway_amqp import (
    BROKER_UNAVAILABLE,
    PUBLISH_NACKED,
    REPLY_LOST,
    AmqpRouter,
    FunctionNotFound,
    reply_response,
)
from lambdatx.gateway_config import DEFAULT_AMQP_URI, GatewayConfig, load_gateway_config
from lambdatx.gateway_tap import Options

BIN = Path(sys.executable).parent
SERVER = BIN / "lambdatx-server"
TWISTD = BIN / "twistd"
CONFIG = GatewayConfig()
BASE = "http://gateway.test"
INVOKE = BASE + "/2015-03-31/functions/{}/invocations"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


# --- reply → HTTP (G07) ------------------------------------------------------------------------


def test_reply_maps_status_headers_and_body():
    """Status from X-Lambdatx-Status-Code; outcome headers copied whatever their case; body verbatim."""
    properties = {
        "content-type": "application/json",
        "headers": {
            "x-amzn-RequestId": "ignored-the-gateway-sets-its-own",
            "X-Lambdatx-Status-Code": 400,
            "x-amzn-ErrorType": "InvalidRequestContentException",
            "x-amz-log-result": b"U1RBUlQ=",
            "X-Something-Else": "dropped",
        },
    }
    status, headers, body = reply_response(properties, b'{"message":"x"}', "rid")
    assert status == 400 and body == b'{"message":"x"}'
    assert dict(headers) == {
        b"Content-Type": b"application/json",
        b"x-amzn-RequestId": b"rid",
        b"x-amzn-ErrorType": b"InvalidRequestContentException",
        b"X-Amz-Log-Result": b"U1RBUlQ=",
    }


def test_reply_function_error_keeps_200_and_its_markers():
    """A function error is a 200 with X-Amz-Function-Error and the executed version."""
    properties = {"headers": {"X-Lambdatx-Status-Code": 200, "X-Amz-Function-Error": "Unhandled",
                              "X-Amz-Executed-Version": "$LATEST"}}  # fmt: skip
    status, headers, _ = reply_response(properties, b"{}", "rid")
    assert status == 200
    assert dict(headers)[b"X-Amz-Function-Error"] == b"Unhandled"
    assert dict(headers)[b"X-Amz-Executed-Version"] == b"$LATEST"
    assert dict(headers)[b"Content-Type"] == b"application/json"


@pytest.mark.parametrize(
    "value, status", [(None, 200), (404, 404), ("413", 413), ("x", 200), (99, 200), (True, 200)]
)
def test_reply_status_fallbacks(value, status):
    """A Go daemon's reply (no status header) is 200; a status as text works; nonsense is 200."""
    headers = {} if value is None else {"X-Lambdatx-Status-Code": value}
    assert reply_response({"headers": headers}, b"", "rid")[0] == status


def test_reply_content_type_from_the_reply():
    """The runtime's content type travels as the reply's content_type."""
    _, headers, _ = reply_response({"content-type": "text/plain", "headers": None}, b"hi", "r")
    assert dict(headers)[b"Content-Type"] == b"text/plain"


# --- configuration (configuration.md §5-§6) -----------------------------------------------------


def test_config_defaults():
    """Nothing set: the documented defaults, no warnings."""
    config = load_gateway_config({})
    assert config == GatewayConfig()
    assert (config.invoke_api_host, config.port, config.timeout) == ("0.0.0.0", 8080, 1800.0)
    assert config.amqp_uri == DEFAULT_AMQP_URI and "heartbeat" not in config.amqp_uri
    assert config.warnings == ()


def test_config_reads_every_variable_and_options_win():
    """Each §5 variable is read; an option overrides its variable; empty counts as unset."""
    env = {
        "INVOKE_API_HOST": "127.0.0.1", "PORT": "9000", "AMQP_URI": "amqp://rabbit/",
        "AMQP_USERNAME": "u", "AMQP_PASSWORD": "p", "LAMBDATX_GATEWAY_TIMEOUT": "30",
        "AWS_REGION": "eu-west-1", "AWS_ACCOUNT_ID": "123456789012", "LOG_LEVEL": "warn",
        "USE_STRUCTURED_LOGGING": "yes", "ENABLE_OPENFAAS": "1",
        "LAMBDATX_MAX_REQUEST_BYTES": "100", "LAMBDATX_MAX_EVENT_BYTES": "", 
    }  # fmt: skip
    config = load_gateway_config(env, {"port": "9001", "enable-openfaas": False})
    assert config == GatewayConfig(
        invoke_api_host="127.0.0.1", port=9001, amqp_uri="amqp://rabbit/", amqp_username="u",
        amqp_password="p", timeout=30.0, region="eu-west-1", account_id="123456789012",
        log_level="WARNING", structured_logging=True, enable_openfaas=True,
        max_request_bytes=100,
    )  # fmt: skip
    assert config.function_arn("f") == "arn:aws:lambda:eu-west-1:123456789012:function:f"


def test_config_reports_every_problem_at_once_without_secrets():
    """All problems are listed, one line each; passwords never appear."""
    env = {
        "PORT": "x", "LAMBDATX_GATEWAY_TIMEOUT": "0", "AWS_REGION": "mars",
        "AWS_ACCOUNT_ID": "1", "LOG_LEVEL": "loud", "ENABLE_OPENFAAS": "maybe",
        "LAMBDATX_MAX_EVENT_BYTES": "0", "AMQP_URI": "http://u:hunter2@host/",
        "AMQP_PASSWORD": "hunter3",
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(env)
    lines = caught.value.problems
    assert [line.split('"')[0] for line in lines] == [
        "lambdatx: configuration error: PORT=",
        "lambdatx: configuration error: AMQP_URI=",
        "lambdatx: configuration error: LAMBDATX_GATEWAY_TIMEOUT=",
        "lambdatx: configuration error: AWS_REGION=",
        "lambdatx: configuration error: AWS_ACCOUNT_ID=",
        "lambdatx: configuration error: LOG_LEVEL=",
        "lambdatx: configuration error: ENABLE_OPENFAAS=",
        "lambdatx: configuration error: LAMBDATX_MAX_EVENT_BYTES=",
        "lambdatx: configuration error: AMQP_PASSWORD=",
    ]
    assert "hunter" not in "\n".join(lines)
    assert 'AMQP_PASSWORD="***": AMQP_USERNAME must be set too' in lines[-1]


def test_config_legacy_timeout_is_accepted_with_a_warning():
    """AWS_LAMBDA_FUNCTION_TIMEOUT stands in for LAMBDATX_GATEWAY_TIMEOUT, with a warning."""
    config = load_gateway_config({"AWS_LAMBDA_FUNCTION_TIMEOUT": "60"})
    assert config.timeout == 60.0
    assert len(config.warnings) == 1 and "LAMBDATX_GATEWAY_TIMEOUT" in config.warnings[0]
    both = load_gateway_config(
        {"AWS_LAMBDA_FUNCTION_TIMEOUT": "3", "LAMBDATX_GATEWAY_TIMEOUT": "90"}
    )
    assert (both.timeout, both.warnings) == (90.0, ())
    with pytest.raises(ConfigError) as caught:
        load_gateway_config({"AWS_LAMBDA_FUNCTION_TIMEOUT": "3s"})
    assert caught.value.problems[0].startswith(
        'lambdatx: configuration error: AWS_LAMBDA_FUNCTION_TIMEOUT="3s"'
    )


def test_config_uri_warnings():
    """Unknown AMQP_URI parameters and user info beside AMQP_USERNAME/PASSWORD are warnings."""
    config = load_gateway_config(
        {"AMQP_URI": "amqp://a:b@h/?foo=1", "AMQP_USERNAME": "u", "AMQP_PASSWORD": "p"}
    )
    assert len(config.warnings) == 2


def test_settings_mask_secrets():
    """The logged configuration hides the password, also inside the URI."""
    config = GatewayConfig(amqp_uri="amqp://u:hunter2@h/", amqp_username="x", amqp_password="y")
    shown = json.dumps(config.settings())
    assert "hunter2" not in shown and '"amqp_password": "***"' in shown


def test_twistd_options_become_overrides(monkeypatch):
    """twistd options override the environment, like the daemon's."""
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.delenv("AMQP_URI", raising=False)
    options = Options()
    options.parseOptions(["--port", "4321", "--enable-openfaas", "--timeout", "5"])
    assert options.config == GatewayConfig(port=4321, enable_openfaas=True, timeout=5.0)


# --- the Invoke API, in memory (a fake router) -------------------------------------------------


class FakeRouter:
    """Records calls; replies with ``reply`` (Content), or raises ``error``."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.connected = True
        self.queues = {"echo", "function"}
        self.error: Exception | None = None
        self.pending: defer.Deferred | None = None
        self.reply = Content(b'{"ok":true}', properties={
            "content-type": "application/json",
            "headers": {"X-Lambdatx-Status-Code": 200, "X-Amz-Executed-Version": "$LATEST"},
        })  # fmt: skip

    def _answer(self, kind, name, payload, headers, content_type, request_id, result):
        self.calls.append((kind, name, payload, headers, content_type, request_id))
        if self.error is not None:
            return defer.fail(self.error)
        if name not in self.queues:
            return defer.fail(FunctionNotFound(name))
        if self.pending is not None:
            return self.pending
        return defer.succeed(result)

    def request(self, name, payload, headers, content_type, request_id):
        return self._answer("request", name, payload, headers, content_type, request_id, self.reply)

    def event(self, name, payload, headers, content_type, request_id):
        return self._answer("event", name, payload, headers, content_type, request_id, None)

    async def exists(self, name):
        self.calls.append(("exists", name))
        return name in self.queues

    # The service's view of it.
    pending_count = 0

    def start(self):
        pass

    async def close(self):
        pass


@pytest.fixture
def router():
    return FakeRouter()


def call(api, method, url, body=b"", headers=None):
    """One request through StubTreq; (response, body bytes)."""
    return treq_call(StubTreq(api.app.resource()), method, url, body, headers)


def api(router, config=CONFIG):
    return GatewayApi(config, router)


def test_invoke_publishes_and_answers_with_the_reply(router):
    """The reply becomes the answer; the request id is a UUID v4 given to the router."""
    response, content = call(api(router), "POST", INVOKE.format("echo"), b'{"a":1}')
    assert response.code == 200 and content == b'{"ok":true}'
    assert header(response, "X-Amz-Executed-Version") == "$LATEST"
    [(kind, name, payload, headers, content_type, request_id)] = router.calls
    assert (kind, name, payload, headers) == ("request", "echo", b'{"a":1}', {})
    assert header(response, "x-amzn-RequestId") == request_id and UUID4.fullmatch(request_id)
    assert content_type is None


@pytest.mark.parametrize(
    "name, query, routed, qualifier",
    [
        ("echo", "", "echo", None),
        ("function", "", "function", None),  # no alias: the queue named "function"
        ("echo%3A%24LATEST", "", "echo", "$LATEST"),
        ("echo", "?Qualifier=7", "echo", "7"),
        ("echo:7", "?Qualifier=7", "echo", "7"),
        ("000000000000%3Afunction%3Aecho", "", "echo", None),
        ("000000000000:echo", "", "echo", None),
        ("arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aecho%3A%24LATEST", "", "echo", "$LATEST"),
    ],
)  # fmt: skip
def test_name_forms_route_to_the_bare_name(router, name, query, routed, qualifier):
    """Every name form routes to the bare name; the qualifier travels as X-Lambdatx-Qualifier."""
    response, _ = call(api(router), "POST", INVOKE.format(name) + query, b"{}")
    assert response.code == 200
    [(_, sent, _, headers, _, _)] = router.calls
    assert sent == routed
    assert headers.get("X-Lambdatx-Qualifier") == qualifier


@pytest.mark.parametrize(
    "name, query, status, error_type, message",
    [
        ("arn:aws:lambda:eu-west-1:000000000000:function:echo", "", 404,
         "ResourceNotFoundException", "Function not found: arn:aws:lambda:eu-west-1:000000000000:function:echo"),
        ("111111111111:function:echo", "", 404, "ResourceNotFoundException", None),
        ("echo:1", "?Qualifier=2", 400, "InvalidParameterValueException", None),
        ("bad%20name", "", 400, "ValidationException", None),
        ("a" * 65, "", 400, "ValidationException", None),
        ("echo", "?Qualifier=a%2Fb", 400, "ValidationException", None),
    ],
)  # fmt: skip
def test_names_refused_locally(router, name, query, status, error_type, message):
    """Malformed names, other regions/accounts and qualifier conflicts never reach the broker."""
    response, content = call(api(router), "POST", INVOKE.format(name) + query, b"{}")
    document = error(response, content, status, error_type)
    if message:
        assert document["Message"] == message
    assert router.calls == []


def test_headers_are_forwarded_as_the_daemon_reads_them(router):
    """Client context (still base64), trace, log type, tenant and identity travel as AMQP headers."""
    sent = {
        "X-Amz-Client-Context": "eyJhIjogMX0=",
        "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        "X-Amz-Log-Type": "Tail",
        "X-Amz-Tenant-Id": "tenant-1",
        "X-Lambdatx-Cognito-Identity": '{"cognitoIdentityId": "i"}',
        "Content-Type": "application/octet-stream",
        "amz-sdk-invocation-id": "ignored",
    }
    response, _ = call(api(router), "POST", INVOKE.format("echo%3A%24LATEST"), b"[]", sent)
    assert response.code == 200
    [(_, _, _, headers, content_type, _)] = router.calls
    assert headers == {
        "X-Amz-Client-Context": "eyJhIjogMX0=",
        "X-Amzn-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        "X-Amz-Log-Type": "Tail",
        "X-Amz-Tenant-Id": "tenant-1",
        "X-Lambdatx-Cognito-Identity": '{"cognitoIdentityId": "i"}',
        "X-Lambdatx-Qualifier": "$LATEST",
    }
    assert content_type == b"application/octet-stream"


@pytest.mark.parametrize(
    "headers, status, error_type",
    [
        ({"X-Amz-Invocation-Type": "Sometimes"}, 400, "ValidationException"),
        ({"X-Amz-Log-Type": "Head"}, 400, "ValidationException"),
        ({"X-Amz-Tenant-Id": "bad\ttenant"}, 400, "ValidationException"),
        ({"X-Amz-Client-Context": "not base64!"}, 400, "InvalidRequestContentException"),
        ({"X-Amz-Client-Context": "A" * 3584}, 400, "InvalidRequestContentException"),
        ({"X-Lambdatx-Cognito-Identity": "[1]"}, 400, "InvalidRequestContentException"),
        ({"Content-Encoding": "gzip"}, 415, "UnsupportedMediaTypeException"),
    ],
)
def test_headers_refused_locally(router, headers, status, error_type):
    """Header syntax is checked at the gateway (errors.md E03, E08-E10, E14)."""
    response, content = call(api(router), "POST", INVOKE.format("echo"), b"{}", headers)
    error(response, content, status, error_type)
    assert router.calls == []


def test_json_validity_is_left_to_the_daemon(router):
    """A body that is not JSON is published as is (whether it must be JSON is the daemon's call)."""
    response, _ = call(api(router), "POST", INVOKE.format("echo"), b"not json")
    assert response.code == 200 and router.calls[0][2] == b"not json"


def test_event_and_dry_run(router):
    """Event → 202 once published; DryRun → 204 if the queue exists, else 404; no body sent."""
    event = {"X-Amz-Invocation-Type": "Event"}
    response, content = call(api(router), "POST", INVOKE.format("echo"), b"{}", event)
    assert (response.code, content, router.calls[0][0]) == (202, b"", "event")
    assert UUID4.fullmatch(header(response, "x-amzn-RequestId"))
    dry = {"X-Amz-Invocation-Type": "DryRun"}
    response, content = call(api(router), "POST", INVOKE.format("echo"), b"{}", dry)
    assert (response.code, content, router.calls[1]) == (204, b"", ("exists", "echo"))
    response, content = call(api(router), "POST", INVOKE.format("nope:3"), b"", dry)
    document = error(response, content, 404, "ResourceNotFoundException")
    assert document == {"Type": "User", "Message": f"Function not found: {ARN}nope:3"}


def test_unknown_function_is_404(router):
    """basic.return (FunctionNotFound) → 404 ResourceNotFoundException with the ARN."""
    response, content = call(api(router), "POST", INVOKE.format("nope"), b"{}")
    document = error(response, content, 404, "ResourceNotFoundException")
    assert document["Message"] == f"Function not found: {ARN}nope"


@pytest.mark.parametrize("message", [BROKER_UNAVAILABLE, REPLY_LOST, PUBLISH_NACKED])
def test_broker_failures_are_500_service_exceptions(router, message):
    """G03-G06 are 500 ServiceException with the router's message."""
    router.error = ServiceException(message)
    response, content = call(api(router), "POST", INVOKE.format("echo"), b"{}")
    assert error(response, content, 500, "ServiceException") == {
        "Type": "Service",
        "Message": message,
    }


def test_disconnecting_caller_cancels_the_call(router):
    """A caller that goes away cancels the router's Deferred (its pending entry is dropped)."""
    cancelled = []
    router.pending = defer.Deferred(lambda d: cancelled.append(True))
    treq = StubTreq(api(router).app.resource())
    d = treq.request("POST", INVOKE.format("echo"), data=b"{}")
    treq.flush()
    d.cancel()
    treq.flush()
    assert cancelled == [True]
    d.addErrback(lambda _: None)


def test_routes_and_methods(router):
    """Unknown routes are 404, other methods 405 Allow: POST, streaming is not served."""
    response, content = call(api(router), "GET", INVOKE.format("echo"))
    assert error(response, content, 405, "UnknownOperationException")
    assert header(response, "Allow") == "POST"
    for path in ("/", "/2021-11-15/functions/echo/response-streaming-invocations", "/_/health"):
        response, content = call(api(router), "POST", BASE + path, b"{}")
        assert error(response, content, 404, "UnknownOperationException")["message"].startswith(
            "Unknown operation: POST"
        )
    assert router.calls == []


def test_openfaas_health_and_ready(router):
    """With ENABLE_OPENFAAS, /_/health is 200 while running, /_/ready 200 only while connected."""
    openfaas = api(router, GatewayConfig(enable_openfaas=True))
    assert call(api(router), "GET", BASE + "/_/ready")[0].code == 404
    assert call(openfaas, "GET", BASE + "/_/health")[0].code == 200
    assert call(openfaas, "GET", BASE + "/_/ready")[0].code == 200
    router.connected = False
    assert call(openfaas, "GET", BASE + "/_/ready")[0].code == 503
    assert call(openfaas, "GET", BASE + "/_/health")[0].code == 200
    assert call(openfaas, "POST", BASE + "/")[0].code == 404
    openfaas.stopping = True
    assert call(openfaas, "GET", BASE + "/_/health")[0].code == 503


def test_requests_while_stopping_are_refused(router):
    """After shutdown began, requests on open connections get 500 "Service is shutting down."."""
    stopping = api(router)
    stopping.stopping = True
    response, content = call(stopping, "POST", INVOKE.format("echo"), b"{}")
    assert (
        error(response, content, 500, "ServiceException")["Message"] == "Service is shutting down."
    )
    assert router.calls == []


@pytest_twisted.ensureDeferred
async def test_oversized_body_is_refused_before_the_upload(router):
    """A Content-Length over the limit gets 413 before any body byte (Expect: 100-continue)."""
    config = GatewayConfig(invoke_api_host="127.0.0.1", port=0, max_event_bytes=10)
    service = make_gateway_service(config, reactor, router=router)
    service.startService()
    try:
        port = (await service.when_ready()).port.getHost().port

        def send(extra: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: x\r\n"
                          + extra + b"Expect: 100-continue\r\n\r\n")  # fmt: skip
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data

        sync = await threads.deferToThread(send, b"Content-Length: 6291457\r\n")
        assert sync.startswith(b"HTTP/1.1 413 ") and b"RequestEntityTooLargeException" in sync
        assert b"Request must be smaller than 6291456 bytes" in sync
        event = await threads.deferToThread(
            send, b"X-Amz-Invocation-Type: Event\r\nContent-Length: 11\r\n"
        )
        assert (
            b"11 byte payload is too large for the Event invocation type (limit 10 bytes)" in event
        )
        assert router.calls == []
    finally:
        await service.stopService()


# --- the router's bookkeeping on a fake connection ----------------------------------------------


class FakeChannel:
    def __init__(self):
        self.closed = False

    async def basic_consume(self, **kwargs):
        self.consumed = kwargs


class FakeConfirm:
    def __init__(self):
        self.channel = FakeChannel()
        self.published: list[tuple] = []
        self.refuse = False

    def publish(self, routing_key, body, properties, mandatory=True):
        if self.refuse:
            raise Closed("gone")
        d = defer.Deferred()
        self.published.append((routing_key, body, properties, d))
        return d


class FakeProtocol:
    close_reason = None
    lost_reason = None

    def __init__(self):
        self.confirm = FakeConfirm()
        self.lost = defer.Deferred()
        self.transport = self

    async def confirm_channel(self):
        return self.confirm

    def when_lost(self):
        return self.lost

    def loseConnection(self):
        self.lost.callback(None)


class FakeConnector:
    uri = type("Uri", (), {"display": lambda self: "amqp://fake"})()
    last_error = "closed by test"

    def startService(self):
        pass

    async def close(self):
        pass


def message(properties, body=b"{}"):
    return type("Message", (), {"content": Content(body, properties=properties)})()


@pytest.fixture
def wired():
    """An AmqpRouter on a fake connection and a fake clock, already 'connected'."""
    clock = task.Clock()
    router = AmqpRouter(GatewayConfig(timeout=5), clock, lambda: None, connector=FakeConnector())
    protocol = FakeProtocol()
    ready = defer.Deferred.fromCoroutine(router._ready(protocol))
    assert ready.called and router.connected
    return router, protocol, clock


def outcome(d):
    """A Deferred's result so far (None while pending); a failure is marked handled."""
    if not d.called:
        return None
    result = d.result
    d.addErrback(lambda _: None)
    return result


def test_router_publishes_with_the_contracts_properties(wired):
    """RequestResponse: mandatory, direct reply-to, correlation id, expiration = fail-safe ms."""
    router, protocol, _ = wired
    assert protocol.confirm.channel.consumed["queue"] == b"amq.rabbitmq.reply-to"
    assert protocol.confirm.channel.consumed["no_ack"] is True
    router.request("echo", b"{}", {"X-Amz-Log-Type": "Tail"}, None, "rid-1")
    router.event("echo", b"{}", {}, b"text/plain", "rid-2")
    (key1, _, sync, _), (key2, _, event, _) = protocol.confirm.published
    assert key1 == key2 == b"echo"
    assert sync == {"reply-to": b"amq.rabbitmq.reply-to", "correlation-id": b"rid-1",
                    "content-type": b"application/json", "delivery-mode": 1,
                    "expiration": b"5000", "headers": {"X-Amz-Log-Type": "Tail"}}  # fmt: skip
    assert "reply-to" not in event and event["delivery-mode"] == 2
    assert event["content-type"] == b"text/plain"


def test_router_matches_replies_and_drops_the_rest(wired):
    """A reply fires its call once; duplicates and strangers are dropped; the timer is cancelled."""
    router, protocol, clock = wired
    d = router.request("echo", b"{}", {}, None, "rid-1")
    channel = protocol.confirm.channel
    router.deliver(channel, message({"correlation-id": "someone-else"}))
    assert outcome(d) is None
    router.deliver(channel, message({"correlation-id": "rid-1"}, b"[1]"))
    assert outcome(d).body == b"[1]"
    router.deliver(channel, message({"correlation-id": "rid-1"}, b"[2]"))
    assert router.pending_count == 0 and clock.getDelayedCalls() == []


def test_router_return_nack_and_fail_safe(wired):
    """basic.return → FunctionNotFound; nack → G04; no reply within the timeout → G06."""
    router, protocol, clock = wired
    returned = router.request("nope", b"{}", {}, None, "r1")
    router.returned(protocol.confirm.channel, message({"correlation-id": "r1"}))
    assert outcome(returned).check(FunctionNotFound)
    nacked = router.request("echo", b"{}", {}, None, "r2")
    protocol.confirm.published[-1][3].errback(Nacked())
    assert outcome(nacked).value.message == PUBLISH_NACKED
    slow = router.request("slow", b"{}", {}, None, "r3")
    clock.advance(4.9)
    assert outcome(slow) is None
    clock.advance(0.2)
    assert outcome(slow).value.message == (
        "No reply from function slow within 5 seconds; the function may have run."
    )


def test_router_event_waits_for_the_confirm(wired):
    """Event: ack → fires; a return before the ack → FunctionNotFound (the ack is then ignored)."""
    router, protocol, _ = wired
    ok = router.event("echo", b"{}", {}, None, "e1")
    assert outcome(ok) is None
    protocol.confirm.published[-1][3].callback(None)
    assert ok.called and outcome(ok) is None
    missing = router.event("nope", b"{}", {}, None, "e2")
    router.returned(protocol.confirm.channel, message({"correlation-id": "e2"}))
    protocol.confirm.published[-1][3].callback(None)
    assert outcome(missing).check(FunctionNotFound)


def test_router_connection_loss_answers_every_pending_call(wired):
    """Losing the connection fails each call in flight with G05; new calls get G03 at once."""
    router, protocol, clock = wired
    calls = [router.request("echo", b"{}", {}, None, f"r{i}") for i in range(3)]
    calls.append(router.event("echo", b"{}", {}, None, "e"))
    protocol.lost.callback(None)
    assert [outcome(d).value.message for d in calls] == [REPLY_LOST] * 4
    assert not router.connected and clock.getDelayedCalls() == []
    with pytest.raises(ServiceException, match=re.escape(BROKER_UNAVAILABLE)):
        router.request("echo", b"{}", {}, None, "late")


def test_router_cancel_and_closed_channel(wired):
    """A cancelled call leaves nothing behind; a publish on a closed channel is G03."""
    router, protocol, clock = wired
    d = router.request("echo", b"{}", {}, None, "r1")
    d.cancel()
    d.addErrback(lambda _: None)
    assert router.pending_count == 0 and clock.getDelayedCalls() == []
    protocol.confirm.refuse = True
    with pytest.raises(ServiceException, match=re.escape(BROKER_UNAVAILABLE)):
        router.request("echo", b"{}", {}, None, "r2")
    assert router.pending_count == 0


def test_router_channel_closed_by_the_broker_reconnects(wired):
    """The reply channel closed by the broker: calls get G05 and the connection is dropped."""
    router, protocol, _ = wired
    d = router.request("echo", b"{}", {}, None, "r1")
    from twisted.python.failure import Failure

    router.channel_failed(FakeChannel(), Failure(Closed("a DryRun channel")))
    assert outcome(d) is None
    router.channel_failed(protocol.confirm.channel, Failure(Closed("406")))
    assert outcome(d).value.message == REPLY_LOST
    assert protocol.lost.called and not router.connected


# --- the console script and the twistd plugin (subprocesses) -------------------------------------


def run_server(*args, env=None, timeout=60):
    environ = {"PATH": os.environ["PATH"], **(env or {})}
    return subprocess.run([str(SERVER), *args], env=environ, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_console_script_version_and_help():
    """--version and --help print and exit 0."""
    version = run_server("--version")
    assert version.returncode == 0 and version.stdout.startswith("lambdatx-server ")
    usage = run_server("--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: lambdatx-server")


def test_console_script_configuration_errors_exit_64():
    """A bad PORT (and every other problem, and any argument) is listed; exit 64."""
    result = run_server("extra", env={"PORT": "65536", "AMQP_PASSWORD": "hunter2"})
    assert result.returncode == 64
    assert result.stderr.splitlines() == [
        'lambdatx: configuration error: argument="extra": lambdatx-server takes no arguments '
        "(use the environment)",
        'lambdatx: configuration error: PORT="65536": must be a port number 0-65535',
        'lambdatx: configuration error: AMQP_PASSWORD="***": AMQP_USERNAME must be set too',
    ]


def test_console_script_port_in_use_exits_69():
    """A port that cannot be bound: one line on stderr and exit 69 (no broker needed)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server(env={"PORT": str(port), "INVOKE_API_HOST": "127.0.0.1",
                                 "AMQP_URI": "amqp://127.0.0.1:1/"})  # fmt: skip
    assert result.returncode == 69
    assert f"lambdatx: cannot listen on 127.0.0.1:{port}: address already in use\n" in result.stderr


def test_twistd_plugin(tmp_path):
    """`twistd lambdatx-server --help` lists the §5 options; a bad value exits 64."""
    result = subprocess.run([TWISTD, "lambdatx-server", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--amqp-uri" in result.stdout and "--timeout" in result.stdout
    assert "--amqp-password" not in result.stdout
    bad = subprocess.run([TWISTD, "-n", "--pidfile=", "lambdatx-server", "--port", "x"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 64
    assert 'lambdatx: configuration error: --port="x"' in bad.stderr


def test_shutdown_grace_is_short_enough_for_docker_stop():
    """The grace plus the close fits docker stop's 10 s."""
    assert gateway.SHUTDOWN_GRACE <= 8


# --- no broker at all (real reactor, real port) ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_without_a_broker_calls_get_500_and_attempts_end_with_69(log_events):
    """Unreachable broker: calls get 500 "Message broker unavailable." (the connection is kept),
    /_/ready is 503, and after connection_attempts failures the service finishes with 69."""
    uri = "amqp://127.0.0.1:1/?connection_attempts=3&retry_delay=0.1"
    config = GatewayConfig(invoke_api_host="127.0.0.1", port=0, amqp_uri=uri, enable_openfaas=True)
    service = make_gateway_service(config, reactor)
    finished = service.when_finished()
    service.startService()
    try:
        url = f"http://127.0.0.1:{(await service.when_ready()).port.getHost().port}"

        def calls():
            import http.client

            connection = http.client.HTTPConnection(url[7:], timeout=10)
            answers = []
            for path, method in [
                ("/2015-03-31/functions/echo/invocations", "POST"),
                ("/2015-03-31/functions/echo/invocations", "POST"),  # same connection
                ("/_/ready", "GET"),
                ("/_/health", "GET"),
            ]:
                connection.request(method, path, body=b"{}" if method == "POST" else None)
                response = connection.getresponse()
                answers.append(
                    (response.status, response.getheader("x-amzn-ErrorType"), response.read())
                )
            connection.close()
            return answers

        answers = await threads.deferToThread(calls)
        expected = json.dumps(
            {"Type": "Service", "Message": BROKER_UNAVAILABLE}, separators=(",", ":")
        )
        assert answers[0] == answers[1] == (500, "ServiceException", expected.encode())
        assert [a[0] for a in answers[2:]] == [503, 200]
        finished.addTimeout(20, reactor)
        assert await finished == 69
        unavailable = [e for e in log_events if "broker unavailable" in e.get("log_format", "")]
        assert len(unavailable) == 1  # once per outage, not per call
    finally:
        await service.stopService()
