"""lambdatx-server against the real broker: two in-process daemons (two functions) behind one
in-process gateway, called with boto3, curl and treq; the console script as a subprocess."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool

from amqp_helpers import (
    URI,
    amqp_daemon,
    declare,
    delete_queue,
    queue_counts,
    queue_name,
    rabbitmqctl,
    wait_until,
    within,
)
from conftest import require_rabbitmq
from daemon import curl, in_thread
from lambdatx import gateway
from lambdatx.gateway import make_gateway_service
from lambdatx.gateway_amqp import BROKER_UNAVAILABLE, REPLY_LOST
from lambdatx.gateway_config import GatewayConfig

pytestmark = pytest.mark.amqp

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"
GATEWAY_CONNECTION = f"lambdatx-server@{socket.gethostname()}"
SERVER = Path(sys.executable).parent / "lambdatx-server"


def gateway_connections() -> dict[int, str]:
    """The broker's connections named ``lambdatx-server@<host>``: {client port: broker pid}.

    The name is the same for every gateway on this host (amqp-rpc.md §1), so a test picks its
    own by the client's port: other test runs sharing the broker are never touched.
    """
    found = {}
    listing = rabbitmqctl("list_connections", "pid", "peer_port", "client_properties")
    for line in listing.splitlines():
        pid, _, rest = line.partition("\t")
        port, _, properties = rest.partition("\t")
        if f'"connection_name","{GATEWAY_CONNECTION}"' in properties.replace("longstr,", ""):
            found[int(port)] = pid.strip()
    return found


def client_port(router) -> int:
    """The local port of the router's current broker connection."""
    return router._session.protocol.transport.getHost().port


@pytest.fixture
def names(request):
    """Two function (queue) names of this test, deleted before and after it."""
    require_rabbitmq()
    base = queue_name(request.node.name[:40])  # with the pid: at most 48 characters
    pair = (base + "-a", base + "-b")
    for name in pair:
        delete_queue(name)
    yield pair
    for name in pair:
        delete_queue(name)


class Gateway:
    def __init__(self, service):
        self.service = service
        self.router = service.router
        self.url = f"http://127.0.0.1:{service.port.getHost().port}"

    def invoke_url(self, name: str) -> str:
        return f"{self.url}/2015-03-31/functions/{name}/invocations"

    async def stop(self) -> None:
        await self.service.stopService()


async def start_gateway(connected: bool = True, **overrides) -> Gateway:
    settings = {"invoke_api_host": "127.0.0.1", "port": 0, "amqp_uri": URI, **overrides}
    service = make_gateway_service(GatewayConfig(**settings), reactor)
    service.startService()
    await within(service.when_ready(), 10)
    if connected:
        await within(service.router.when_ready(), 20)
    return Gateway(service)


class Stack:
    """One gateway and a daemon per function name, stopped in reverse order."""

    def __init__(self):
        self.gateway: Gateway | None = None
        self.daemons: list = []

    async def start(self, names, gateway_settings=None, **daemon_settings):
        for name in names:
            self.daemons.append(await amqp_daemon(name, **daemon_settings.get(name, {})))
        self.gateway = await start_gateway(**(gateway_settings or {}))
        return self.gateway

    async def stop(self):
        if self.gateway is not None:
            await self.gateway.stop()
        for daemon in self.daemons:
            await daemon.stop()


@pytest.fixture
def stack():
    s = Stack()
    yield s
    # Stopped by each test in its finally (a coroutine fixture teardown cannot await here).
    assert s.gateway is None or not s.gateway.service.running


def lambda_client(url: str, read_timeout: int = 30):
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=BotoConfig(read_timeout=read_timeout, retries={"max_attempts": 0}),
    )


def boto3_invoke(url: str, **kwargs) -> tuple[dict, bytes]:
    answer = lambda_client(url).invoke(**kwargs)
    return answer, answer["Payload"].read()


# --- routing by name ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_boto3_reaches_each_function_by_name_arn_and_qualifier(names, stack):
    """Each of two functions is reached by name, name:$LATEST, ?Qualifier=, partial and full ARN."""
    gateway_ = await stack.start(names)
    try:

        def forms(name):
            return [
                {"FunctionName": name},
                {"FunctionName": f"{name}:$LATEST"},
                {"FunctionName": name, "Qualifier": "$LATEST"},
                {"FunctionName": f"000000000000:function:{name}"},
                {"FunctionName": ARN + name},
                {"FunctionName": ARN + name + ":$LATEST"},
            ]

        def run_all():
            seen = []
            for name in names:
                for i, form in enumerate(forms(name)):
                    payload = json.dumps({"echo": [name, i]}).encode()
                    answer, body = boto3_invoke(gateway_.url, Payload=payload, **form)
                    assert answer["StatusCode"] == 200 and "FunctionError" not in answer
                    assert answer["ExecutedVersion"] == "$LATEST"
                    assert json.loads(body) == [name, i], form
                    seen.append(answer["ResponseMetadata"]["RequestId"])
            return seen

        request_ids = await in_thread(run_all)
        assert len(set(request_ids)) == 12
        assert all(len(rid) == 36 and rid[14] == "4" for rid in request_ids)
        served = [d.service.amqp.deliveries for d in stack.daemons]
        assert served == [6, 6]

        def unknown_qualifier():
            client = lambda_client(gateway_.url)
            with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
                client.invoke(FunctionName=names[0], Qualifier="7", Payload=b"{}")
            return caught.value.response["Error"]["Message"]

        # The qualifier is the daemon's business: its 404 comes back unchanged.
        assert await in_thread(unknown_qualifier) == f"Function not found: {ARN}{names[0]}:7"
        status, headers, body = await curl(
            "-XPOST",
            gateway_.invoke_url(f"arn:aws:lambda:eu-west-1:000000000000:function:{names[0]}"),
            "-d",
            "{}",
        )
        assert (status, headers["x-amzn-errortype"]) == (404, "ResourceNotFoundException")
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_errors_and_timeouts_keep_their_shape(names, stack, tmp_path):
    """Function errors, timeouts, the daemon's validation and the gateway's own keep their shape."""
    a, b = names
    gateway_ = await stack.start(names, **{b: {"timeout": 1.0, "validate_json": False}})
    try:

        def sdk_calls():
            failed, failed_body = boto3_invoke(
                gateway_.url, FunctionName=a, Payload=b'{"fail": "boom"}'
            )
            slow, slow_body = boto3_invoke(gateway_.url, FunctionName=b, Payload=b'{"sleep": 3}')
            context = base64.b64encode(b'{"custom": {"k": "v"}}').decode()
            tail, tail_body = boto3_invoke(
                gateway_.url, FunctionName=a, Payload=b'{"pid": true}', LogType="Tail",
                ClientContext=context,
            )  # fmt: skip
            return (failed, failed_body), (slow, slow_body), (tail, tail_body)

        (failed, failed_body), (slow, slow_body), (tail, tail_body) = await in_thread(sdk_calls)
        assert (failed["StatusCode"], failed["FunctionError"]) == (200, "Unhandled")
        assert json.loads(failed_body)["errorMessage"] == "boom"
        assert slow["FunctionError"] == "Unhandled"
        assert json.loads(slow_body)["errorType"] == "Sandbox.Timedout"
        assert json.loads(slow_body)["errorMessage"].endswith("Task timed out after 1.00 seconds")
        # The gateway's request id is the daemon's: the log tail's START line names it.
        rid = tail["ResponseMetadata"]["RequestId"]
        assert f"START RequestId: {rid}" in base64.b64decode(tail["LogResult"]).decode()
        seen = json.loads(tail_body)["headers"]
        assert json.loads(seen["lambda-runtime-client-context"]) == {"custom": {"k": "v"}}
        assert seen["lambda-runtime-aws-request-id"] == rid

        status, headers, body = await curl("-XPOST", gateway_.invoke_url(a), "-d", '{"fail": "x"}')
        assert (status, headers["x-amz-function-error"]) == (200, "Unhandled")
        # Not JSON: refused by daemon a (validation on), run by daemon b (validation off).
        status, headers, body = await curl("-XPOST", gateway_.invoke_url(a), "-d", "not json")
        assert (status, headers["x-amzn-errortype"]) == (400, "InvalidRequestContentException")
        assert json.loads(body)["message"].startswith("Could not parse request body into json")
        assert "x-amz-function-error" not in headers and "x-amz-executed-version" not in headers
        status, headers, body = await curl("-XPOST", gateway_.invoke_url(b), "-d", "not json")
        assert status == 200 and "x-amzn-errortype" not in headers
        # The largest synchronous body travels through the broker and back unchanged.
        big = tmp_path / "big.json"
        big.write_bytes(b'"' + b"x" * (6291456 - 2) + b'"')
        status, headers, body = await curl(
            "-XPOST", gateway_.invoke_url(a), "--data-binary", f"@{big}", "-H", "Expect:"
        )
        assert (status, len(body), body == big.read_bytes()) == (200, 6291456, True)
        # Refused by the gateway itself.
        status, headers, body = await curl(
            "-XPOST", gateway_.invoke_url(a), "-H", "X-Amz-Log-Type: Head", "-d", "{}"
        )
        assert (status, headers["x-amzn-errortype"]) == (400, "ValidationException")
        assert json.loads(body) == {
            "message": "1 validation error detected: Value 'Head' at 'logType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [None, Tail]"
        }
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_unknown_name_is_404_within_a_second_and_event_dry_run(names, stack, tmp_path):
    """No queue: 404 within 1 s (sync, Event, DryRun); an existing one: 202 (and it runs), 204."""
    a, _ = names
    gateway_ = await stack.start(names)
    missing = names[0][:-2] + "-nobody"  # never declared
    try:

        def unknown():
            client = lambda_client(gateway_.url)
            started = time.monotonic()
            with pytest.raises(client.exceptions.ResourceNotFoundException) as caught:
                client.invoke(FunctionName=missing, Payload=b"{}")
            return time.monotonic() - started, caught.value.response

        elapsed, response = await in_thread(unknown)
        assert elapsed < 1.0
        assert response["Error"]["Message"] == f"Function not found: {ARN}{missing}"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 404
        for kind in ("Event", "DryRun"):
            started = reactor.seconds()
            status, headers, _ = await curl(
                "-XPOST",
                gateway_.invoke_url(missing),
                "-H",
                f"X-Amz-Invocation-Type: {kind}",
                "-d",
                "{}",
            )
            assert (status, headers["x-amzn-errortype"]) == (404, "ResourceNotFoundException")
            assert reactor.seconds() - started < 1.0
        record = tmp_path / "record"
        event = json.dumps({"record": str(record)})
        status, headers, body = await curl(
            "-XPOST", gateway_.invoke_url(a), "-H", "X-Amz-Invocation-Type: Event", "-d", event
        )
        assert (status, body) == (202, b"")
        assert await wait_until(record.exists, 10)
        status, _, body = await curl(
            "-XPOST", gateway_.invoke_url(a), "-H", "X-Amz-Invocation-Type: DryRun"
        )
        assert (status, body) == (204, b"")
        # Many DryRuns each use (and close) a channel of their own: the broker's channel_max is
        # never reached, and a 404 closing its channel leaves the gateway's own one alone.
        for _ in range(20):
            status, _, _ = await curl(
                "-XPOST", gateway_.invoke_url(missing), "-H", "X-Amz-Invocation-Type: DryRun"
            )
            assert status == 404
        assert gateway_.router.connected and gateway_.router.sessions == 1
    finally:
        await stack.stop()
    await in_thread(delete_queue, missing)


# --- load and faults --------------------------------------------------------------------------------


async def post(pool, url: str, body: bytes, timeout: float = 60):
    response = await treq.post(url, data=body, pool=pool, timeout=timeout)
    return response.code, response.headers, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_500_concurrent_calls_over_two_functions(names, stack):
    """500 calls at once, spread over both functions: every one answered with its own result."""
    settings = {"max_concurrency": 4}
    gateway_ = await stack.start(names, **{n: settings for n in names})
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        started = reactor.seconds()
        calls = [
            post(pool, gateway_.invoke_url(names[i % 2]), json.dumps({"echo": i}).encode())
            for i in range(500)
        ]
        results = await defer.gatherResults([defer.Deferred.fromCoroutine(c) for c in calls])
        elapsed = reactor.seconds() - started
        for i, (code, _headers, body) in enumerate(results):
            assert (code, json.loads(body)) == (200, i)
        served = [d.service.amqp.deliveries for d in stack.daemons]
        assert served == [250, 250]
        print(f"\n500 concurrent calls through the gateway: {elapsed:.2f} s, {500 / elapsed:.0f}/s")
    finally:
        await pool.closeCachedConnections()
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_fail_safe_timeout_and_expiration(names, stack):
    """No daemon consumes: after LAMBDATX_GATEWAY_TIMEOUT a 500 (G06); the request expires."""
    gateway_ = await start_gateway(timeout=1.0)
    stack.gateway = gateway_
    await in_thread(declare, names[0])
    try:
        started = reactor.seconds()
        status, headers, body = await curl("-XPOST", gateway_.invoke_url(names[0]), "-d", "{}")
        assert 0.9 < reactor.seconds() - started < 5
        assert (status, headers["x-amzn-errortype"]) == (500, "ServiceException")
        assert json.loads(body) == {
            "Type": "Service",
            "Message": f"No reply from function {names[0]} within 1 seconds; the function may have run.",
        }
        assert await wait_until(lambda: queue_counts(names[0])[0] == 0, 10, step=0.2)
    finally:
        await stack.stop()


@pytest_twisted.ensureDeferred
async def test_broker_connection_closed_mid_load(names, stack):
    """The gateway's connection is closed by the broker mid-load: callers in flight get an answer
    (their result or 500 G05), nobody hangs, and the gateway serves again within 15 s."""
    settings = {"max_concurrency": 4}
    gateway_ = await stack.start(names, **{n: settings for n in names})
    router = gateway_.router
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16
    outcomes: list[tuple[int, int, object]] = []
    after_reconnect: list[int] = []
    running = [True]

    async def caller(worker: int):
        # Calls back to back (each bounded by its timeout) until told to stop.
        i = worker
        while running[0]:
            event = json.dumps({"echo": i, "sleep": 0.02}).encode()
            code, _headers, body = await post(pool, gateway_.invoke_url(names[i % 2]), event, 30)
            outcomes.append((i, code, json.loads(body)))
            if code == 200 and router.sessions >= 2:
                after_reconnect.append(i)
            i += 16

    try:
        load = defer.gatherResults([defer.Deferred.fromCoroutine(caller(w)) for w in range(16)])
        assert await wait_until(lambda: len(outcomes) >= 100, 30)
        first_port = client_port(router)
        pid = (await in_thread(gateway_connections))[first_port]
        await in_thread(rabbitmqctl, "close_connection", pid, "closed by test")
        closed_at = reactor.seconds()
        assert await wait_until(lambda: router.sessions >= 2, 15)
        reconnected_after = reactor.seconds() - closed_at
        assert await wait_until(lambda: len(after_reconnect) >= 100, 30)
        running[0] = False
        await within(load, 40)
        lost = unavailable = 0
        for i, code, document in outcomes:
            if code == 200:
                assert document == i
                continue
            assert code == 500 and document["Type"] == "Service", document
            assert document["Message"] in (REPLY_LOST, BROKER_UNAVAILABLE)
            lost += document["Message"] == REPLY_LOST
            unavailable += document["Message"] == BROKER_UNAVAILABLE
        assert 1 <= lost <= 16
        print(f"\n{len(outcomes)} calls; reconnected after {reconnected_after:.2f} s; "
              f"{lost} G05, {unavailable} G03")  # fmt: skip
        second_port = client_port(router)
        ours = set(await in_thread(gateway_connections)) & {first_port, second_port}
        assert ours == {second_port}
    finally:
        running[0] = False
        await pool.closeCachedConnections()
        await stack.stop()
    assert second_port not in await in_thread(gateway_connections)


@pytest_twisted.ensureDeferred
async def test_shutdown_lets_pending_calls_finish_then_answers_g05(names, stack, monkeypatch):
    """Stopping: a call finishing within the grace gets its result; one still running after it,
    500 G05; the gateway's connection is closed."""
    gateway_ = await stack.start(names, **{names[1]: {"timeout": 30.0}})
    monkeypatch.setattr(gateway, "SHUTDOWN_GRACE", 1.5)
    try:
        quick = defer.Deferred.fromCoroutine(
            curl("-XPOST", gateway_.invoke_url(names[0]), "-d", '{"sleep": 0.5, "echo": "done"}')
        )
        slow = defer.Deferred.fromCoroutine(
            curl("-XPOST", gateway_.invoke_url(names[1]), "-d", '{"sleep": 5}')
        )
        assert await wait_until(lambda: gateway_.router.pending_count == 2, 10)
        port = client_port(gateway_.router)
        assert port in await in_thread(gateway_connections)
        started = reactor.seconds()
        await gateway_.stop()
        assert reactor.seconds() - started < 4
        status, _, body = await within(quick, 10)
        assert (status, json.loads(body)) == (200, "done")
        status, headers, body = await within(slow, 10)
        assert (status, json.loads(body)["Message"]) == (500, REPLY_LOST)
        assert port not in await in_thread(gateway_connections)
    finally:
        await stack.stop()


# --- the console script -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_console_script_serves_a_call_and_stops_on_sigterm(names, stack, tmp_path):
    """`lambdatx-server` from the environment: serves a call by name, exits 0 on SIGTERM."""
    stack.daemons.append(await amqp_daemon(names[0]))
    port = free_port()
    log = tmp_path / "gateway.log"
    env = {"PATH": os.environ["PATH"], "AMQP_URI": URI, "PORT": str(port),
           "INVOKE_API_HOST": "127.0.0.1", "AWS_LAMBDA_FUNCTION_TIMEOUT": "60"}  # fmt: skip
    with open(log, "wb") as err:
        process = subprocess.Popen([str(SERVER)], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert await wait_until(lambda: "AMQP gateway ready" in log.read_text(), 20)
        text = log.read_text()
        assert "[WARNING]" in text and "LAMBDATX_GATEWAY_TIMEOUT" in text
        assert "timeout=60.0" in text
        status, headers, body = await curl(
            "-XPOST", f"http://127.0.0.1:{port}/2015-03-31/functions/{names[0]}/invocations",
            "-d", '{"echo": "via the console script"}',
        )  # fmt: skip
        assert (status, json.loads(body)) == (200, "via the console script")
        process.send_signal(signal.SIGTERM)
        assert await wait_until(lambda: process.poll() is not None, 15)
        assert process.returncode == 0
        assert "AMQP connection closed" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        await stack.stop()
