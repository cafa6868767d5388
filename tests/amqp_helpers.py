"""pika clients for the AMQP-RPC tests (run in threads; every wait is bounded), in-process
daemons on the broker, and bounded waits on the reactor."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pika
from twisted.internet import reactor, task

from conftest import AMQP_URI
from daemon import config, start

HERE = Path(__file__).resolve().parent
RT = HERE / "bootstraps" / "rt.py"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: Fast reconnects for the tests.
URI = AMQP_URI + "?retry_delay=0.5"


def queue_name(test_name: str) -> str:
    """
    The test's own queue (and function) name, [a-zA-Z0-9-_]{1,64}: the test's name plus the pid,
    so that test runs sharing a broker never touch each other's queues or connections.
    """
    return re.sub(r"[^a-zA-Z0-9_-]", "_", test_name)[:56] + f"-{os.getpid()}"


def connect() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(AMQP_URI))


def delete_queue(name: str) -> None:
    with connect() as connection:
        connection.channel().queue_delete(name)


def queue_counts(name: str) -> tuple[int, int]:
    """(ready messages, consumers) of an existing queue."""
    with connect() as connection:
        ok = connection.channel().queue_declare(name, passive=True).method
        return ok.message_count, ok.consumer_count


@dataclass
class Request:
    body: bytes
    correlation_id: str | None = field(default_factory=lambda: str(uuid.uuid4()))
    headers: dict | None = None
    reply: bool = True
    content_encoding: str | None = None


@dataclass
class Reply:
    properties: pika.BasicProperties
    body: bytes

    @property
    def headers(self) -> dict:
        return self.properties.headers or {}


def rpc(queue: str, requests: list[Request], in_flight: int = 1, timeout: float = 60.0,
        linger: float = 0.0) -> dict[str | None, list[Reply]]:  # fmt: skip
    """
    Publish ``requests`` with at most ``in_flight`` unanswered, through direct reply-to; return
    the replies by correlation id. ``linger`` keeps listening after the last expected reply (to
    catch duplicates). Fire-and-forget requests (``reply=False``) are published first.
    """
    replies: dict[str | None, list[Reply]] = {}
    expected = sum(1 for r in requests if r.reply)
    with connect() as connection:
        channel = connection.channel()
        channel.confirm_delivery()

        def on_reply(_ch, _method, properties, body):
            replies.setdefault(properties.correlation_id, []).append(Reply(properties, body))

        channel.basic_consume(DIRECT_REPLY_TO, on_reply, auto_ack=True)
        pending = sorted(requests, key=lambda r: r.reply)
        sent_expecting = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answered = len(replies)  # distinct correlation ids: duplicates do not count
            while pending and (not pending[0].reply or sent_expecting - answered < in_flight):
                request = pending.pop(0)
                publish(channel, queue, request)
                sent_expecting += request.reply
            if not pending and answered >= expected:
                break
            connection.process_data_events(time_limit=0.02)
        end = time.monotonic() + linger
        while time.monotonic() < end:
            connection.process_data_events(time_limit=0.05)
    return replies


def publish(channel, queue: str, request: Request) -> None:
    properties = pika.BasicProperties(
        reply_to=DIRECT_REPLY_TO if request.reply else None,
        correlation_id=request.correlation_id,
        content_type="application/json",
        headers=request.headers,
        content_encoding=request.content_encoding,
    )
    channel.basic_publish("", queue, request.body, properties, mandatory=True)


def publish_only(queue: str, requests: list[Request], reply_queue: str | None = None) -> None:
    """Publish with confirms and return; replies (if any) go to ``reply_queue``."""
    with connect() as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        for request in requests:
            properties = pika.BasicProperties(
                reply_to=reply_queue if request.reply else None,
                correlation_id=request.correlation_id,
                headers=request.headers,
            )
            channel.basic_publish("", queue, request.body, properties, mandatory=False)


def collect(reply_queue: str, count: int, timeout: float) -> dict[str | None, list[Reply]]:
    """Read ``count`` replies from a plain queue (bounded)."""
    replies: dict[str | None, list[Reply]] = {}
    deadline = time.monotonic() + timeout
    with connect() as connection:
        channel = connection.channel()
        while sum(len(v) for v in replies.values()) < count and time.monotonic() < deadline:
            method, properties, body = channel.basic_get(reply_queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            replies.setdefault(properties.correlation_id, []).append(Reply(properties, body))
    return replies


def declare(name: str, **arguments) -> None:
    with connect() as connection:
        connection.channel().queue_declare(name, durable=True, **arguments)


# --- the broker's view ------------------------------------------------------------------------


def rabbitmqctl(*args: str, timeout: float = 30.0) -> str:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return out.stdout


def connection_pids(name: str) -> list[str]:
    """Broker pids of the connections whose connection_name is ``name``."""
    pids = []
    for line in rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        pid, _, properties = line.partition("\t")
        # RabbitMQ 3.10 prints {"connection_name","<name>"}; older ones add the type, longstr.
        if re.search(r'"connection_name",(longstr,)?"' + re.escape(name) + '"', properties):
            pids.append(pid.strip())
    return pids


def close_connection_from_port(port: int) -> int:
    """Close the broker's connection whose client side uses local ``port``."""
    closed = 0
    for line in rabbitmqctl("list_connections", "pid", "peer_port").splitlines():
        pid, _, peer_port = line.partition("\t")
        if peer_port.strip() == str(port):
            rabbitmqctl("close_connection", pid.strip(), "closed by test")
            closed += 1
    return closed


def close_connections(name: str) -> int:
    pids = connection_pids(name)
    for pid in pids:
        rabbitmqctl("close_connection", pid, "closed by test")
    return len(pids)


# --- in-process daemons, on the reactor ---------------------------------------------------------


async def within(d, seconds: float):
    d.addTimeout(seconds, reactor)
    return await d


async def wait_until(predicate, seconds: float, step: float = 0.05) -> bool:
    deadline = reactor.seconds() + seconds
    while not predicate():
        if reactor.seconds() >= deadline:
            return False
        await task.deferLater(reactor, step, lambda: None)
    return True


async def amqp_daemon(name: str, **overrides):
    """An in-process daemon for function (and queue) ``name``, once its consumer is ready."""
    daemon = await start(config(function_name=name, amqp_uri=URI, **overrides))
    await within(daemon.service.amqp.when_ready(), 20)
    return daemon


# --- the daemon as a real process ---------------------------------------------------------------


class DaemonProcess:
    """``python -m lambdatx.cli`` with the test runtime; stderr (the log) goes to a file."""

    def __init__(self, queue: str, log_path: Path, amqp_uri: str = AMQP_URI, **env: str):
        self.log_path = log_path
        environ = {
            **os.environ,
            "AMQP_URI": amqp_uri,
            "AWS_LAMBDA_FUNCTION_NAME": queue,
            "INVOKE_API_HOST": "127.0.0.1",
            "PORT": "0",
            "RUNTIME_API_PORT": "0",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "30",
            **env,
        }
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lambdatx.cli", sys.executable, str(RT)],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=str(HERE),
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.process.poll() is not None:
                return text in self.log()
            time.sleep(0.05)
        return False

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self.kill()
        self._log.close()
        return code
