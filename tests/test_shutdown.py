"""Graceful shutdown of the `lambdatx` console script, run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
LAMBDATX = Path(sys.executable).parent / "lambdatx"
RT = HERE / "bootstraps" / "rt.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def invoke(port: int, event, timeout: float = 30):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations",
        data=json.dumps(event).encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


class Daemon:
    def __init__(self, **env):
        self.port = free_port()
        self.env = dict(
            os.environ,
            PORT=str(self.port),
            INVOKE_API_HOST="127.0.0.1",
            RUNTIME_API_PORT=str(free_port()),
            AWS_LAMBDA_FUNCTION_NAME="shutdown",
            **env,
        )
        self.proc = subprocess.Popen(
            [str(LAMBDATX), sys.executable, str(RT)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(HERE),
        )
        self.stderr = b""
        assert wait_until(self.answers), "daemon did not start"

    def answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def descendants(self):
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def finish(self, timeout=20) -> int:
        code = self.proc.wait(timeout)
        self.stderr = self.proc.stderr.read()
        return code

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stderr.close()


@pytest.fixture
def daemon_factory():
    made = []

    def make(**env):
        d = Daemon(**env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


def test_sigterm_lets_the_in_flight_invocation_finish(daemon_factory, tmp_path):
    """SIGTERM mid-invocation: the caller gets its answer, the daemon exits 0, no child survives."""
    daemon = daemon_factory(AWS_LAMBDA_FUNCTION_TIMEOUT="10", LAMBDATX_SHUTDOWN_GRACE="5")
    assert invoke(daemon.port, {"echo": "warm"})[2] == "warm"
    pids = [p.pid for p in daemon.descendants()]
    assert pids
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(r=invoke(daemon.port, {"sleep": 1.0, "echo": "done"})))
    caller.start()
    time.sleep(0.3)
    daemon.proc.send_signal(signal.SIGTERM)
    caller.join(15)
    assert answer["r"][0] == 200 and answer["r"][2] == "done"
    assert daemon.finish() == 0
    assert b"shutting down" in daemon.stderr
    assert wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids), 5)


def test_grace_expiry_kills_and_answers(daemon_factory):
    """An invocation still running when the grace ends gets Runtime.ExitError; exit is 0."""
    daemon = daemon_factory(AWS_LAMBDA_FUNCTION_TIMEOUT="30", LAMBDATX_SHUTDOWN_GRACE="0.5")
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(r=invoke(daemon.port, {"sleep": 20})))
    caller.start()
    assert wait_until(lambda: len(daemon.descendants()) >= 1)
    time.sleep(0.5)
    began = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    caller.join(15)
    status, headers, doc = answer["r"]
    assert status == 200 and doc["errorType"] == "Runtime.ExitError"
    assert "signal: terminated" in doc["errorMessage"] or "signal: killed" in doc["errorMessage"]
    assert daemon.finish() == 0
    assert time.monotonic() - began < 5


def test_requests_after_sigterm_are_refused(daemon_factory):
    """A request arriving during the grace on an open connection gets 500 ServiceException."""
    daemon = daemon_factory(AWS_LAMBDA_FUNCTION_TIMEOUT="10", LAMBDATX_SHUTDOWN_GRACE="3")
    conn = __import__("http.client").client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("POST", "/2015-03-31/functions/function/invocations", body=b'{"echo": 1}')
    r = conn.getresponse()
    assert r.status == 200
    r.read()
    holder = threading.Thread(target=lambda: invoke(daemon.port, {"sleep": 1.5}))
    holder.start()
    time.sleep(0.3)
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    conn.request("POST", "/2015-03-31/functions/function/invocations", body=b'{"echo": 2}')
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 500 and r.getheader("x-amzn-ErrorType") == "ServiceException"
    assert body == {"Type": "Service", "Message": "Service is shutting down."}
    holder.join(10)
    assert daemon.finish() == 0


def test_second_signal_skips_the_grace(daemon_factory):
    """A second SIGTERM ends the grace at once."""
    daemon = daemon_factory(AWS_LAMBDA_FUNCTION_TIMEOUT="30", LAMBDATX_SHUTDOWN_GRACE="20")
    caller = threading.Thread(target=lambda: invoke(daemon.port, {"sleep": 20}))
    caller.start()
    assert wait_until(lambda: len(daemon.descendants()) >= 1)
    time.sleep(0.5)
    began = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.finish() == 0
    assert time.monotonic() - began < 6
    caller.join(10)


def test_port_in_use_is_one_line_and_exit_69(daemon_factory):
    """A taken port gives one clear line on stderr and exit status 69."""
    daemon = daemon_factory()
    proc = subprocess.run(
        [str(LAMBDATX), sys.executable, str(RT)],
        env=dict(daemon.env, RUNTIME_API_PORT=str(free_port())),
        capture_output=True,
        timeout=30,
        cwd=str(HERE),
    )
    assert proc.returncode == 69
    assert f"lambdatx: cannot listen on 127.0.0.1:{daemon.port}: address already in use".encode() in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_dry_run_and_invalid_requests_after_sigterm_get_500(daemon_factory):
    """Once shutdown began, DryRun and invalid requests get 500 ServiceException too."""
    daemon = daemon_factory(AWS_LAMBDA_FUNCTION_TIMEOUT="10", LAMBDATX_SHUTDOWN_GRACE="3")
    conn = __import__("http.client").client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("POST", "/2015-03-31/functions/function/invocations", body=b'{"echo": 1}')
    r = conn.getresponse()
    r.read()
    holder = threading.Thread(target=lambda: invoke(daemon.port, {"sleep": 1.5}))
    holder.start()
    time.sleep(0.3)
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    for headers, body in (({"X-Amz-Invocation-Type": "DryRun"}, b"{}"), ({}, b"not json")):
        conn.request("POST", "/2015-03-31/functions/function/invocations", body=body, headers=headers)
        r = conn.getresponse()
        assert r.status == 500 and json.loads(r.read())["Message"] == "Service is shutting down."
    holder.join(10)
    assert daemon.finish() == 0
