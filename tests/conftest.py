"""Fixtures shared by every test level.

* Every test fails if it logged an unexpected ``Failure`` through ``twisted.logger`` (what trial
  does for free). Opt out with ``@pytest.mark.allow_logged_errors`` (any failure) or
  ``@pytest.mark.allow_logged_errors(types=[SomeError, ...])`` (only those); the ``log_events``
  fixture holds the events for inspection either way.
* Tests marked ``amqp`` (or using the ``rabbitmq`` or ``queue`` fixture) need RabbitMQ on
  127.0.0.1:5672: they skip without it, but fail when ``LAMBDATX_REQUIRE_AMQP`` is set, as in CI
  (``.ci/run``).
"""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

import pytest
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

AMQP_HOST = "127.0.0.1"
AMQP_PORT = 5672
AMQP_URI = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/%2F"

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(autouse=True)
def log_events(request):
    """Collect this test's log events; fail it if one carries an unexpected Failure."""
    events = EventLoggingObserver()
    globalLogPublisher.addObserver(events)
    try:
        yield events
        # "Unhandled error in Deferred" is logged when the Deferred is collected: do it now,
        # so it is blamed on the test that caused it.
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(events)
    marker = request.node.get_closest_marker("allow_logged_errors")
    allowed = (*marker.args, *marker.kwargs.get("types", ())) if marker else ()
    unexpected = []
    for event in events:
        failure = logged_failure(event)
        if failure is None or (marker and (not allowed or failure.check(*allowed))):
            continue
        where = event.get("log_namespace", "?")
        unexpected.append(f"{where}: {formatEvent(event)}\n{failure.getTraceback()}")
    if unexpected:
        pytest.fail("logged unexpected Failure(s):\n" + "\n".join(unexpected), pytrace=False)


def logged_failure(event):
    """The Failure an event carries (``log_failure``, or ``failure`` from legacy ``log.err``)."""
    if event.get("log_failure") is not None:
        return event["log_failure"]
    if event.get("isError") and event.get("failure") is not None:
        return event["failure"]
    return None


def amqp_available(host: str = AMQP_HOST, port: int = AMQP_PORT, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on the broker's address."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def amqp_required() -> bool:
    """CI sets LAMBDATX_REQUIRE_AMQP: there a missing broker is a failure, not a skip."""
    return os.environ.get("LAMBDATX_REQUIRE_AMQP", "").lower() not in ("", "0", "false", "no")


def require_rabbitmq() -> None:
    """Skip (locally) or fail (in CI) the current test when RabbitMQ is not reachable."""
    if amqp_available():
        return
    reason = f"RabbitMQ not reachable at {AMQP_HOST}:{AMQP_PORT}"
    if amqp_required():
        pytest.fail(f"{reason} (LAMBDATX_REQUIRE_AMQP is set)", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item):
    if item.get_closest_marker("amqp") is not None:
        require_rabbitmq()


@pytest.fixture
def rabbitmq() -> str:
    """The broker's AMQP URI, once it is known to answer."""
    require_rabbitmq()
    return AMQP_URI


@pytest.fixture
def queue(request):
    """A queue (and function) named after the test, deleted before and after it."""
    require_rabbitmq()
    # Imported here: amqp_helpers imports this module (and pika).
    from amqp_helpers import delete_queue, queue_name

    name = queue_name(request.node.name)
    delete_queue(name)
    yield name
    delete_queue(name)


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The repository's examples/ directory (echo functions and clients)."""
    return EXAMPLES
