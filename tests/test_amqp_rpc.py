"""AMQP-RPC against the real broker: in-process daemons with the test runtime, pika as the client."""

from __future__ import annotations

import base64
import json
import socket
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from amqp_helpers import (
    URI,
    Request,
    amqp_daemon,
    close_connection_from_port,
    close_connections,
    connection_pids,
    declare,
    delete_queue,
    publish_only,
    queue_counts,
    rabbitmqctl,
    rpc,
    collect,
    wait_until,
    within,
)
from daemon import config, curl, in_thread, start

pytestmark = pytest.mark.amqp


def body(reply) -> object:
    return json.loads(reply.body)


@pytest_twisted.ensureDeferred
async def test_echo_keeps_the_correlation_id(queue):
    """A request is answered once with its correlation id, the result and the mirrored headers."""
    daemon = await amqp_daemon(queue)
    try:
        cid = str(uuid.uuid4()).upper()
        replies = await in_thread(
            rpc, queue, [Request(b'{"echo": {"hello": "amqp"}}', correlation_id=cid)], linger=0.3
        )
        [reply] = replies[cid]
        assert body(reply) == {"hello": "amqp"}
        assert reply.properties.content_type == "application/json"
        assert reply.properties.delivery_mode == 1
        assert reply.headers["X-Lambdatx-Status-Code"] == 200
        assert reply.headers["X-Amz-Executed-Version"] == "$LATEST"
        # An uppercase UUID correlation id becomes the request id, lowercased.
        assert reply.headers["x-amzn-RequestId"] == cid.lower()
        assert "X-Amz-Function-Error" not in reply.headers
        assert "x-amzn-ErrorType" not in reply.headers
        assert queue_counts(queue) == (0, 1)
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_function_error_timeout_and_non_json_are_marked(queue):
    """A function error, a timeout and a non-JSON body each come back marked as such."""
    daemon = await amqp_daemon(queue, timeout=1.0)
    try:
        fail, slow, bad = (Request(b) for b in (b'{"fail": "boom"}', b'{"sleep": 3}', b"not json"))
        replies = await in_thread(rpc, queue, [fail, slow, bad], in_flight=3, timeout=30)
        [reply] = replies[fail.correlation_id]
        assert reply.headers["X-Amz-Function-Error"] == "Unhandled"
        assert reply.headers["X-Lambdatx-Status-Code"] == 200
        assert body(reply)["errorMessage"] == "boom"
        [reply] = replies[slow.correlation_id]
        assert reply.headers["X-Amz-Function-Error"] == "Unhandled"
        assert body(reply)["errorType"] == "Sandbox.Timedout"
        assert body(reply)["errorMessage"].endswith("Task timed out after 1.00 seconds")
        [reply] = replies[bad.correlation_id]
        assert reply.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
        assert reply.headers["X-Lambdatx-Status-Code"] == 400
        assert "X-Amz-Function-Error" not in reply.headers
        assert "X-Amz-Executed-Version" not in reply.headers
        assert body(reply)["message"].startswith("Could not parse request body into json")
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_malformed_deliveries_get_error_replies_and_the_consumer_survives(queue):
    """Wrong header types, oversize bodies, encodings and qualifiers are answered; work goes on."""
    daemon = await amqp_daemon(queue)
    try:
        cases = {
            "header": Request(b"{}", headers={"x-amz-log-type": 5}),
            "list": Request(b"{}", headers={"X-Amzn-Trace-Id": ["a"]}),
            "big": Request(b'"' + b"x" * 6291456 + b'"'),
            "encoding": Request(b"{}", content_encoding="gzip"),
            "qualifier": Request(b"{}", headers={"X-Lambdatx-Qualifier": "7"}),
            "enum": Request(b"{}", headers={"X-Amz-Log-Type": "Head"}),
            "after": Request(b'{"echo": 1}'),
        }
        replies = await in_thread(rpc, queue, list(cases.values()), in_flight=10, timeout=60)
        got = {name: replies[r.correlation_id][0] for name, r in cases.items()}
        expected = {
            "header": (400, "InvalidRequestContentException"),
            "list": (400, "InvalidRequestContentException"),
            "big": (413, "RequestEntityTooLargeException"),
            "encoding": (415, "UnsupportedMediaTypeException"),
            "qualifier": (404, "ResourceNotFoundException"),
            "enum": (400, "ValidationException"),
        }
        for name, (status, error_type) in expected.items():
            assert got[name].headers["X-Lambdatx-Status-Code"] == status, name
            assert got[name].headers["x-amzn-ErrorType"] == error_type, name
        assert body(got["header"])["message"] == "Header X-Amz-Log-Type must be a string."
        assert body(got["list"])["message"] == "Header X-Amzn-Trace-Id must be a string."
        assert body(got["big"])["message"] == (
            "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
        )
        assert body(got["qualifier"])["Message"] == (
            f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{queue}:7"
        )
        assert body(got["after"]) == 1
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_headers_reach_the_runtime_and_tail_returns_the_log(queue):
    """Client context, trace id (also as bytes) and qualifier reach the runtime; Tail adds the log."""
    daemon = await amqp_daemon(queue)
    try:
        context = base64.b64encode(b'{"custom": {"k": "v"}}').decode()
        request = Request(
            b'{"pid": true}',
            headers={
                "x-amz-client-context": context,
                "X-AMZN-TRACE-ID": b"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
                "X-Lambdatx-Qualifier": "$LATEST",
                "X-Amz-Log-Type": "Tail",
            },
        )
        [reply] = (await in_thread(rpc, queue, [request]))[request.correlation_id]
        seen = body(reply)["headers"]
        assert json.loads(seen["lambda-runtime-client-context"]) == {"custom": {"k": "v"}}
        assert seen["lambda-runtime-trace-id"].startswith("Root=1-5759e988-")
        assert "function:" + queue in seen["lambda-runtime-invoked-function-arn"]
        assert base64.b64decode(reply.headers["X-Amz-Log-Result"])
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_no_reply_to_runs_as_event_without_reply_and_is_acked(queue, tmp_path):
    """Without reply_to the handler runs (a visible side effect), nothing is sent back, it is acked."""
    daemon = await amqp_daemon(queue)
    record = tmp_path / "record"
    try:
        event = Request(json.dumps({"record": str(record)}).encode(), reply=False)
        invalid = Request(b"{not json", reply=False)
        check = Request(b'{"echo": "after"}')
        replies = await in_thread(rpc, queue, [event, invalid, check], linger=0.5)
        assert list(replies) == [check.correlation_id]
        assert record.read_text().split() == ["202"]
    finally:
        await daemon.stop()
    # Nothing came back to the queue when the consumer went away: both were settled.
    assert queue_counts(queue) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_requests_published_while_no_daemon_runs_are_answered_later(queue, tmp_path):
    """The queue is durable: requests wait for a daemon, which answers them once it starts."""
    await in_thread(declare, queue)
    replies_queue = queue + "-replies"
    await in_thread(declare, replies_queue)
    try:
        requests = [Request(json.dumps({"echo": i}).encode()) for i in range(5)]
        await in_thread(publish_only, queue, requests, replies_queue)
        assert queue_counts(queue) == (5, 0)
        daemon = await amqp_daemon(queue)
        try:
            replies = await in_thread(collect, replies_queue, 5, 30)
        finally:
            await daemon.stop()
        assert {r.correlation_id: body(replies[r.correlation_id][0]) for r in requests} == {
            r.correlation_id: i for i, r in enumerate(requests)
        }
    finally:
        await in_thread(delete_queue, replies_queue)


@pytest.mark.allow_logged_errors
@pytest_twisted.ensureDeferred
async def test_existing_queue_with_other_properties_is_consumed_as_is(queue, log_events):
    """A queue declared non-durable elsewhere gives 406: the daemon consumes it passively."""

    def declare_transient(name):
        from amqp_helpers import connect

        with connect() as connection:
            connection.channel().queue_declare(name, durable=False)

    await in_thread(declare_transient, queue)
    daemon = await amqp_daemon(queue)
    try:
        request = Request(b'{"echo": "ok"}')
        replies = await in_thread(rpc, queue, [request])
        assert body(replies[request.correlation_id][0]) == "ok"
        assert any(
            "queue exists with different properties" in (e.get("log_format") or "")
            for e in log_events
        )
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_http_keeps_serving_while_the_broker_is_unreachable(queue):
    """With the broker unreachable (retrying for ever), the Invoke API still answers."""
    daemon = await start(
        config(function_name=queue, amqp_uri="amqp://127.0.0.1:1/?retry_delay=0.2")
    )
    try:
        connector = daemon.service.amqp._connector
        deadline = reactor.seconds() + 10
        while connector.failures < 2 and reactor.seconds() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
        assert connector.failures >= 2
        status, headers, reply = await curl("-XPOST", daemon.invoke_url(), "-d", '{"echo": 5}')
        assert status == 200 and json.loads(reply) == 5
    finally:
        await daemon.stop()


def assert_each_answered(requests, replies, exactly_once=True):
    for i, request in enumerate(requests):
        got = replies.get(request.correlation_id)
        assert got, f"request {i} was not answered"
        if exactly_once:
            assert len(got) == 1, f"request {i} was answered {len(got)} times"
        assert all(json.loads(r.body) == i for r in got), f"request {i} got a wrong answer"
    assert set(replies) <= {r.correlation_id for r in requests}


@pytest_twisted.ensureDeferred
async def test_two_daemons_share_1000_requests_each_answered_once(queue):
    """1,000 requests with 32 in flight over two daemons on one queue: each answered once, right."""
    first = await amqp_daemon(queue, max_concurrency=4)
    second = await amqp_daemon(queue, max_concurrency=4)
    try:
        requests = [Request(json.dumps({"echo": i}).encode()) for i in range(1000)]
        replies = await in_thread(rpc, queue, requests, in_flight=32, timeout=120, linger=0.5)
        assert_each_answered(requests, replies)
        counts = (first.service.amqp.deliveries, second.service.amqp.deliveries)
        assert sum(counts) == 1000 and min(counts) > 0, counts
    finally:
        await first.stop()
        await second.stop()
    assert queue_counts(queue) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_broker_closing_the_connection_mid_load_loses_nothing(queue):
    """The broker closes the daemon's connection mid-load: it consumes again within 15 s and
    every request is answered; the client's own connection is untouched."""
    daemon = await amqp_daemon(queue, max_concurrency=4)
    amqp = daemon.service.amqp
    try:
        requests = [Request(json.dumps({"echo": i, "sleep": 0.01}).encode()) for i in range(300)]
        load = threads.deferToThread(rpc, queue, requests, in_flight=16, timeout=120)
        assert await wait_until(lambda: amqp.deliveries >= 60, 30)
        name = f"lambdatx {queue}@{socket.gethostname()}"
        closed_at = reactor.seconds()
        assert await in_thread(close_connections, name) == 1
        assert await wait_until(lambda: amqp.sessions >= 2, 15)
        assert reactor.seconds() - closed_at < 15
        replies = await load
        assert_each_answered(requests, replies, exactly_once=False)
        assert len(await in_thread(connection_pids, name)) == 1
    finally:
        await daemon.stop()
    assert queue_counts(queue) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_redelivered_copy_of_a_running_invocation_is_attached(queue, tmp_path, log_events):
    """The connection drops while a request runs; its redelivered copy is attached to the run:
    the function runs once and the requester gets one answer."""
    daemon = await amqp_daemon(queue, timeout=10.0)
    amqp = daemon.service.amqp
    record = tmp_path / "record"
    try:
        request = Request(json.dumps({"sleep": 3, "record": str(record), "echo": "once"}).encode())
        load = threads.deferToThread(rpc, queue, [request], timeout=30, linger=1.0)
        assert await wait_until(lambda: amqp.deliveries == 1, 10)
        assert await in_thread(close_connections, f"lambdatx {queue}@{socket.gethostname()}") == 1
        assert await wait_until(lambda: amqp.deliveries == 2, 10)
        replies = await load
    finally:
        await daemon.stop()
    [reply] = replies[request.correlation_id]
    assert json.loads(reply.body) == "once"
    assert record.read_text().split() == ["202"]
    assert any("duplicate delivery attached" in (e.get("log_format") or "") for e in log_events)


@pytest_twisted.ensureDeferred
async def test_unroutable_reply_is_logged_and_the_request_acked(queue, log_events):
    """A reply to a queue that does not exist comes back (basic.return): WARNING, acked anyway."""
    daemon = await amqp_daemon(queue)
    try:
        request = Request(b'{"echo": 1}')
        await in_thread(publish_only, queue, [request], queue + "-gone")
        assert await wait_until(
            lambda: any("reply unroutable" in (e.get("log_format") or "") for e in log_events), 10
        )
        [event] = [e for e in log_events if "reply unroutable" in (e.get("log_format") or "")]
        assert event["reply_to"] == queue + "-gone"
        assert event["correlation_id"] == request.correlation_id
    finally:
        await daemon.stop()
    assert queue_counts(queue) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_reply_of_a_run_that_outlives_its_connection_is_still_published(queue, tmp_path):
    """The connection drops mid-run and the requeued copy runs on another daemon: both runs
    answer (at-least-once), the first over its new connection."""
    first = await amqp_daemon(queue, timeout=10.0)
    record = tmp_path / "record"
    request = Request(json.dumps({"sleep": 2, "record": str(record), "echo": "x"}).encode())
    second = None
    try:
        load = threads.deferToThread(rpc, queue, [request], timeout=30, linger=4.0)
        assert await wait_until(lambda: first.service.amqp.deliveries == 1, 10)
        second = await amqp_daemon(queue, timeout=10.0)
        # Only the first daemon's connection: the requeued copy goes to the second one.
        port = first.service.amqp.connection.transport.getHost().port
        assert await in_thread(close_connection_from_port, port) == 1
        replies = await load
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    assert [json.loads(r.body) for r in replies[request.correlation_id]] == ["x", "x"]
    assert record.read_text().split() == ["202", "202"]


@pytest_twisted.ensureDeferred
async def test_heartbeat_is_negotiated_and_keeps_an_idle_connection(queue):
    """heartbeat=1 reaches the broker in tune-ok and an idle connection survives several."""
    daemon = await start(config(function_name=queue, amqp_uri=URI + "&heartbeat=1"))
    try:
        await within(daemon.service.amqp.when_ready(), 20)
        port = daemon.service.amqp.connection.transport.getHost().port
        rows = (await in_thread(rabbitmqctl, "list_connections", "peer_port", "timeout")).split(
            "\n"
        )
        assert f"{port}\t1" in rows
        await task.deferLater(reactor, 4.0, lambda: None)
        assert daemon.service.amqp.sessions == 1
        request = Request(b'{"echo": "still here"}')
        assert (
            body((await in_thread(rpc, queue, [request]))[request.correlation_id][0])
            == "still here"
        )
    finally:
        await daemon.stop()
