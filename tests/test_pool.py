"""The runtime pool: MAX_CONCURRENCY instances, exact attribution, reaping, reports."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest_twisted
from twisted.internet import defer

from daemon import alive, config, in_thread, invoke_json, python_echo, start, wait_for


def _post(port: int, payload: bytes, timeout: float = 60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/2015-03-31/functions/function/invocations", body=payload)
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def burst(port: int, payloads: list[bytes], workers: int):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda p: _post(port, p), payloads))


@pytest_twisted.ensureDeferred
async def test_n_concurrent_sleeps_run_on_n_pids_at_once():
    """N concurrent sleeping invocations finish in about one sleep, each on its own pid."""
    n = 4
    daemon = await start(config(max_concurrency=n, timeout=10))
    try:
        events = [json.dumps({"sleep": 1.0, "pid": True}).encode() for _ in range(n)]
        began = time.monotonic()
        results = await in_thread(burst, daemon.port, events, n)
        elapsed = time.monotonic() - began
        assert all(status == 200 for status, _, _ in results)
        pids = {json.loads(body)["pid"] for _, _, body in results}
        assert len(pids) == n
        assert elapsed < 1.0 * 1.9, elapsed
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_two_hundred_callers_get_their_own_payloads():
    """200 concurrent unique payloads through MAX_CONCURRENCY 2 and 4: no cross-talk, no failure."""
    for n in (2, 4):
        daemon = await start(config(max_concurrency=n, timeout=10))
        try:
            payloads = [json.dumps({"echo": f"caller-{n}-{i}"}).encode() for i in range(200)]
            results = await in_thread(burst, daemon.port, payloads, 50)
            for payload, (status, headers, body) in zip(payloads, results):
                assert status == 200 and "x-amz-function-error" not in headers
                assert json.loads(body) == json.loads(payload)["echo"]
            assert len(daemon.service.dispatcher.instances) <= n
        finally:
            await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_timeout_kills_only_the_sleeping_runtime(tmp_path):
    """With N=3 a timeout kills the sleeping runtime and its grandchild; the others keep serving."""
    daemon = await start(config(max_concurrency=3, timeout=1.5))
    pidfile = tmp_path / "gc.pid"
    try:
        warm = await in_thread(burst, daemon.port, [b'{"sleep": 0.3, "pid": true}'] * 3, 3)
        pids = {json.loads(body)["pid"] for _, _, body in warm}
        assert len(pids) == 3
        sleeper = defer.Deferred.fromCoroutine(invoke_json(daemon, {"grandchild": str(pidfile)}))
        assert await in_thread(wait_for, pidfile.exists)
        grandchild = int(pidfile.read_text())
        victim = psutil.Process(grandchild).ppid()
        survivors = pids - {victim}
        for _ in range(4):
            _, _, doc = await invoke_json(daemon, {"pid": True})
            assert doc["pid"] in survivors
        _, headers, doc = await sleeper
        assert doc["errorType"] == "Sandbox.Timedout"
        assert await in_thread(wait_for, lambda: not alive(victim) and not alive(grandchild))
        assert all(alive(pid) for pid in survivors)
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_idle_runtime_is_reaped_and_next_invoke_spawns():
    """An instance idle past AWS_LAMBDA_FUNCTION_IDLETIMEOUT is stopped; the next invoke spawns."""
    daemon = await start(config(idle_timeout=2))
    try:
        _, _, first = await invoke_json(daemon, {"pid": True})
        assert await in_thread(wait_for, lambda: not alive(first["pid"]), 5)
        assert not daemon.service.dispatcher.instances
        _, _, second = await invoke_json(daemon, {"pid": True})
        assert second["pid"] != first["pid"]
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_sigkill_from_outside_fails_only_its_invocation(tmp_path):
    """SIGKILL of a runtime holding an invocation answers Runtime.ExitError with signal: killed."""
    daemon = await start(config(timeout=10))
    pidfile = tmp_path / "gc.pid"
    try:
        call = defer.Deferred.fromCoroutine(invoke_json(daemon, {"grandchild": str(pidfile)}))
        assert await in_thread(wait_for, pidfile.exists)
        runtime = psutil.Process(int(pidfile.read_text())).ppid()
        os.kill(runtime, signal.SIGKILL)
        _, headers, doc = await call
        assert headers["x-amz-function-error"] == "Unhandled"
        assert doc["errorType"] == "Runtime.ExitError"
        assert doc["errorMessage"].endswith("Runtime exited with error: signal: killed")
        _, _, doc = await invoke_json(daemon, {"echo": "next"})
        assert doc == "next"
    finally:
        await daemon.stop()


REPORT = re.compile(
    r"^REPORT RequestId: (?P<id>[0-9a-f-]{36})\tDuration: (?P<d>\d+\.\d\d) ms\t"
    r"Billed Duration: (?P<b>\d+) ms\tMemory Size: (?P<m>\d+) MB\tMax Memory Used: (?P<u>\d+) MB\t"
    r"(Init Duration: (?P<i>\d+\.\d\d) ms\t)?(Status: (?P<s>timeout|error)(\tError Type: (?P<e>\S+))?)?$"
)


class Lines:
    def __init__(self):
        self.data = bytearray()

    def write(self, data, producer=None):
        self.data += data

    @property
    def at_line_boundary(self):
        return not self.data or self.data.endswith(b"\n")

    def flushed(self):
        return defer.succeed(None)

    def forget(self, producer):
        pass

    def reports(self):
        return [m for m in (REPORT.match(line) for line in self.data.decode().splitlines()) if m]


@pytest_twisted.ensureDeferred
async def test_report_lines_parse_and_measure_memory():
    """REPORT lines parse; Max Memory Used grows by ~100 MB when a handler allocates 100 MB."""
    out = Lines()
    daemon = await start(config(print_reports=True, memory_size=512), stdout=out, stderr=Lines())
    try:
        status, headers, _ = await invoke_json(daemon, {"echo": 1})
        await invoke_json(daemon, {"allocate_mb": 100})
        await invoke_json(daemon, {"echo": 2})
        # The last REPORT comes when the runtime polls again, just after its answer.
        assert await in_thread(wait_for, lambda: len(out.reports()) == 3)
        first, big, after = out.reports()
        assert first["id"] == headers["x-amzn-requestid"]
        assert first["i"] is not None and big["i"] is None
        assert first["m"] == "512"
        assert int(first["b"]) >= float(first["d"]) + float(first["i"])
        assert int(big["u"]) >= int(first["u"]) + 95
        assert int(after["u"]) >= int(big["u"])
        assert "START RequestId: " + first["id"] + " Version: $LATEST" in out.data.decode()
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_awslambdaric_multi_concurrent_workers():
    """With AWS_LAMBDA_MAX_CONCURRENCY=3 one awslambdaric instance runs three invocations at once."""
    daemon = await start(
        python_echo(
            runtime_max_concurrency=3,
            timeout=10,
            environ=dict(os.environ, AWS_LAMBDA_MAX_CONCURRENCY="3"),
        )
    )
    try:
        events = [json.dumps({"sleep": 1.0, "n": i}).encode() for i in range(3)]
        await in_thread(burst, daemon.port, [b'{"warm": 1}'], 1)
        began = time.monotonic()
        results = await in_thread(burst, daemon.port, events, 3)
        elapsed = time.monotonic() - began
        assert [json.loads(body)["n"] for _, _, body in results] == [0, 1, 2]
        assert elapsed < 1.9, elapsed
        assert len(daemon.service.dispatcher.instances) == 1
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_structured_logging_wraps_runtime_output():
    """With USE_STRUCTURED_LOGGING each runtime output line becomes one JSON event."""
    out, err = Lines(), Lines()
    from lambdatx.service import make_service
    from twisted.internet import reactor
    from daemon import bash_echo, Daemon

    service = make_service(bash_echo(structured_logging=True), reactor, stdout=out, stderr=err)
    service.startService()
    await service.when_ready()
    daemon = Daemon(service)
    try:
        _, headers, _ = await invoke_json(daemon, {"fail": True})
        assert headers["x-amz-function-error"] == "Unhandled"
        assert await in_thread(wait_for, lambda: b"\n" in bytes(err.data))
        events = [json.loads(line) for line in err.data.decode().splitlines()]
        assert events and all(e["stream"] == "stderr" and e["instance"] == 0 for e in events)
        assert any("handler failed" in e["message"] for e in events)
    finally:
        await daemon.stop()
