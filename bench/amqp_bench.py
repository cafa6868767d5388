#!/usr/bin/env python3
"""
AMQP-RPC benchmark, run by hand (not part of CI); prints a Markdown table on stdout.

    python bench/amqp_bench.py                 # about 40 s
    python bench/amqp_bench.py --quick         # smoke run: 300 sequential, 3 s loads
    python bench/amqp_bench.py --uri amqp://guest:guest@127.0.0.1:5672/%2F

For MAX_CONCURRENCY 1 and 4 it starts the daemon as a subprocess (``python -m lambdatx.cli``,
AMQP_URI set, the fast runtime ``bench/fast_runtime.py``, a queue of its own), then measures
with pika through direct reply-to:

* sequential: one request at a time, 200 warm-up then 2,000 timed; p50/p90/p99 from publish to
  reply, and requests per second;
* 16 in flight: a closed loop keeping 16 requests unanswered, 2 s warm-up then 10 s measured;
  replies per second and p50/p99.

Every reply must be status 200 and echo the 49-byte body, else it counts as an error. The
queue is deleted and the daemon (with its runtimes) stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pika

HERE = Path(__file__).resolve().parent
RUNTIME = HERE / "fast_runtime.py"
REPLY_TO = "amq.rabbitmq.reply-to"
BODY = b'{"bench": "amqp-rpc", "payload": "0123456789abc"}'
assert len(BODY) == 49


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Daemon:
    def __init__(self, uri: str, function: str, max_concurrency: int):
        self.function = function
        self.log = tempfile.NamedTemporaryFile(prefix="amqp-bench-", suffix=".log", delete=False)
        env = {
            **os.environ,
            "AMQP_URI": uri,
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "MAX_CONCURRENCY": str(max_concurrency),
            "INVOKE_API_HOST": "127.0.0.1",
            "PORT": "0",
            "RUNTIME_API_PORT": "0",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lambdatx.cli", sys.executable, str(RUNTIME)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )
        self.descendants: list = []

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"AMQP consumer ready" in Path(self.log.name).read_bytes():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit("the daemon did not become ready:\n" + Path(self.log.name).read_text())

    def remember_descendants(self) -> None:
        try:
            import psutil

            self.descendants = psutil.Process(self.process.pid).children(recursive=True)
        except Exception:
            self.descendants = []

    def stop(self) -> None:
        self.remember_descendants()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        for child in self.descendants:
            try:
                child.kill()
            except Exception:
                pass
        os.unlink(self.log.name)


class Client:
    """One pika connection, direct reply-to, replies matched by correlation id."""

    def __init__(self, uri: str, function: str):
        self.connection = pika.BlockingConnection(pika.URLParameters(uri))
        self.channel = self.connection.channel()
        self.function = function
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.errors = 0
        self.channel.basic_consume(REPLY_TO, self._reply, auto_ack=True)

    def _reply(self, _channel, _method, properties, body):
        started = self.sent.pop(properties.correlation_id, None)
        if started is None:
            return
        self.latencies.append(time.perf_counter() - started)
        status = (properties.headers or {}).get("X-Lambdatx-Status-Code")
        if status != 200 or body != BODY:
            self.errors += 1

    def send(self) -> None:
        correlation_id = str(uuid.uuid4())
        properties = pika.BasicProperties(reply_to=REPLY_TO, correlation_id=correlation_id)
        self.sent[correlation_id] = time.perf_counter()
        self.channel.basic_publish("", self.function, BODY, properties)

    def sequential(self, count: int) -> float:
        self.latencies.clear()
        started = time.perf_counter()
        for _ in range(count):
            self.send()
            while self.sent:
                self.connection.process_data_events(time_limit=None)
        return time.perf_counter() - started

    def closed_loop(self, in_flight: int, seconds: float) -> tuple[int, float]:
        self.latencies.clear()
        started = time.perf_counter()
        end = started + seconds
        while time.perf_counter() < end:
            while len(self.sent) < in_flight:
                self.send()
            self.connection.process_data_events(time_limit=None)
        elapsed = time.perf_counter() - started
        done = len(self.latencies)
        while self.sent:  # drain, not counted
            self.connection.process_data_events(time_limit=1)
        return done, elapsed

    def delete_queue(self) -> None:
        self.channel.queue_delete(self.function)

    def close(self) -> None:
        self.connection.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


def measure(uri: str, max_concurrency: int, quick: bool) -> dict[str, str]:
    function = f"bench-amqp-{os.getpid()}-{max_concurrency}"
    daemon = Daemon(uri, function, max_concurrency)
    client = None
    try:
        daemon.wait_ready()
        client = Client(uri, function)
        progress(f"MC={max_concurrency}: sequential")
        client.sequential(50 if quick else 200)
        client.errors = 0
        count = 300 if quick else 2000
        elapsed = client.sequential(count)
        row = {
            "seq p50": f"{percentile(client.latencies, 50):.2f}",
            "seq p90": f"{percentile(client.latencies, 90):.2f}",
            "seq p99": f"{percentile(client.latencies, 99):.2f}",
            "seq req/s": f"{count / elapsed:.0f}",
            "seq errors": str(client.errors),
        }
        progress(f"MC={max_concurrency}: 16 in flight")
        client.closed_loop(16, 1 if quick else 2)
        client.errors = 0
        done, elapsed = client.closed_loop(16, 3 if quick else 10)
        row.update(
            {
                "16 req/s": f"{done / elapsed:.0f}",
                "16 p50": f"{percentile(client.latencies, 50):.2f}",
                "16 p99": f"{percentile(client.latencies, 99):.2f}",
                "16 errors": str(client.errors),
            }
        )
        client.delete_queue()
        return row
    finally:
        if client is not None:
            client.close()
        daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="AMQP-RPC benchmark")
    parser.add_argument("--uri", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = {mc: measure(args.uri, mc, args.quick) for mc in (1, 4)}
    columns = list(rows[1])
    print(f"AMQP-RPC, {os.cpu_count()} CPUs, fast_runtime.py, pika client (direct reply-to)\n")
    print("| row | MAX_CONCURRENCY=1 | MAX_CONCURRENCY=4 |")
    print("| --- | ---: | ---: |")
    names = {
        "seq p50": "sequential p50, ms", "seq p90": "sequential p90, ms",
        "seq p99": "sequential p99, ms", "seq req/s": "sequential invocations/s",
        "seq errors": "sequential errors", "16 req/s": "16 in flight: invocations/s",
        "16 p50": "16 in flight: p50, ms", "16 p99": "16 in flight: p99, ms",
        "16 errors": "16 in flight: errors",
    }  # fmt: skip
    for column in columns:
        print(f"| {names[column]} | {rows[1][column]} | {rows[4][column]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
