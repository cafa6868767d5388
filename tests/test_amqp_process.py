"""AMQP-RPC with the daemon as a real process (``python -m lambdatx.cli``): crashes and exits."""

from __future__ import annotations

import json
import time

import psutil
import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from amqp_helpers import DaemonProcess, Request, queue_counts, rpc
from conftest import AMQP_URI
from daemon import config, in_thread, start

pytestmark = pytest.mark.amqp


@pytest.fixture
def processes():
    """Daemon processes started by the test; killed with their runtimes in teardown."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        kill_with_runtimes(daemon)


def kill_with_runtimes(daemon: DaemonProcess) -> None:
    try:
        children = psutil.Process(daemon.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    daemon.kill()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)


async def wait_for(predicate, seconds: float) -> bool:
    deadline = reactor.seconds() + seconds
    while not await in_thread(predicate):
        if reactor.seconds() >= deadline:
            return False
        await task.deferLater(reactor, 0.05, lambda: None)
    return True


@pytest_twisted.ensureDeferred
async def test_sigkill_with_unacked_requests_another_daemon_answers_them(
    queue, tmp_path, processes
):
    """A daemon SIGKILLed while holding unacked requests: a second daemon answers all of them."""
    first = DaemonProcess(queue, tmp_path / "first.log", MAX_CONCURRENCY="2")
    processes.append(first)
    assert await in_thread(first.wait_for_log, "AMQP consumer ready", 30), first.log()
    requests = [Request(json.dumps({"echo": i, "sleep": 1.0}).encode()) for i in range(6)]
    load = threads.deferToThread(rpc, queue, requests, in_flight=6, timeout=60)
    # The first daemon holds two unacked deliveries (prefetch 2); four wait in the queue.
    assert await wait_for(lambda: queue_counts(queue) == (4, 1), 20)
    await in_thread(kill_with_runtimes, first)
    second = await start(config(function_name=queue, amqp_uri=AMQP_URI, max_concurrency=3))
    try:
        replies = await load
    finally:
        await second.stop()
    for i, request in enumerate(requests):
        got = replies.get(request.correlation_id)
        assert got and all(json.loads(r.body) == i for r in got), i
    assert second.service.amqp.deliveries == 6
    assert queue_counts(queue) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_wrong_password_gives_up_after_the_attempts_with_exit_69(queue, tmp_path, processes):
    """Wrong credentials: a clear error after connection_attempts, exit 69, password never shown."""
    uri = "amqp://guest:s3cr3t-pw@127.0.0.1:5672/%2F?connection_attempts=3&retry_delay=0.2"
    daemon = DaemonProcess(queue, tmp_path / "daemon.log", amqp_uri=uri)
    processes.append(daemon)
    assert await in_thread(daemon.wait, 30) == 69
    log = daemon.log()
    assert "AMQP unavailable, giving up" in log
    assert "ACCESS_REFUSED" in log
    assert log.count("AMQP connection attempt") == 3
    assert "s3cr3t-pw" not in log


@pytest_twisted.ensureDeferred
async def test_unreachable_broker_gives_up_with_exit_69(queue, tmp_path, processes):
    """An unreachable broker: the attempts are logged, then CRITICAL and exit 69."""
    uri = "amqp://127.0.0.1:1/?connection_attempts=2&retry_delay=0.2"
    daemon = DaemonProcess(queue, tmp_path / "daemon.log", amqp_uri=uri)
    processes.append(daemon)
    assert await in_thread(daemon.wait, 30) == 69
    log = daemon.log()
    assert "[CRITICAL]" in log and "AMQP unavailable, giving up" in log
    assert "Connection refused" in log


@pytest_twisted.ensureDeferred
async def test_sigterm_requeues_waiting_deliveries_and_exits_0(queue, tmp_path, processes):
    """SIGTERM: consuming stops, deliveries queued locally go back to the broker at once, the
    running one is answered and acked, the connection closes and the daemon exits 0."""
    # Capacity 2 (prefetch 2) but a runtime that takes one invocation at a time: one delivery
    # runs, the other waits in the daemon's own queue.
    daemon = DaemonProcess(
        queue, tmp_path / "daemon.log", MAX_CONCURRENCY="1", AWS_LAMBDA_MAX_CONCURRENCY="2"
    )
    processes.append(daemon)
    assert await in_thread(daemon.wait_for_log, "AMQP consumer ready", 30), daemon.log()
    requests = [Request(json.dumps({"echo": i, "sleep": 1.5}).encode()) for i in range(3)]
    load = threads.deferToThread(rpc, queue, requests, in_flight=3, timeout=60)
    assert await wait_for(lambda: queue_counts(queue) == (1, 1), 20)
    daemon.process.terminate()
    assert await in_thread(daemon.wait, 20) == 0, daemon.log()
    log = daemon.log()
    assert "returned 1 queued deliveries to the queue" in log
    assert "Traceback" not in log and "[ERROR]" not in log and "[CRITICAL]" not in log
    # The running one was answered before the exit; the other two are back in the queue.
    assert queue_counts(queue) == (2, 0)
    second = await start(config(function_name=queue, amqp_uri=AMQP_URI))
    try:
        replies = await load
    finally:
        await second.stop()
    assert sorted(json.loads(v[0].body) for v in replies.values()) == [0, 1, 2]
    assert second.service.amqp.deliveries == 2


@pytest_twisted.ensureDeferred
async def test_invocation_killed_at_the_end_of_the_grace_is_answered(queue, tmp_path, processes):
    """SIGTERM with a run longer than the grace: its reply is the Runtime.ExitError document,
    published and acked before the daemon exits 0."""
    daemon = DaemonProcess(queue, tmp_path / "daemon.log", LAMBDATX_SHUTDOWN_GRACE="0.5")
    processes.append(daemon)
    assert await in_thread(daemon.wait_for_log, "AMQP consumer ready", 30), daemon.log()
    request = Request(b'{"sleep": 30}')
    load = threads.deferToThread(rpc, queue, [request], timeout=30)

    def running() -> bool:
        # The runtime is spawned for the delivery; give it a moment to take the event.
        children = psutil.Process(daemon.process.pid).children()
        return bool(children) and time.time() - children[0].create_time() > 0.5

    assert await wait_for(running, 20)
    daemon.process.terminate()
    assert await in_thread(daemon.wait, 20) == 0, daemon.log()
    [reply] = (await load)[request.correlation_id]
    assert reply.headers["X-Amz-Function-Error"] == "Unhandled"
    document = json.loads(reply.body)
    assert document["errorType"] == "Runtime.ExitError"
    assert (
        "signal: terminated" in document["errorMessage"]
        or "signal: killed" in document["errorMessage"]
    )
    assert queue_counts(queue) == (0, 0)
