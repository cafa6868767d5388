"""AMQP pieces without a broker: backoff and giving up on a fake clock, handshake tuning, field
tables, request parsing, the outcome → reply mapping, the reply cache, withdrawing queued work."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from io import BytesIO

import pika.data
import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from txamqp.codec import Codec

from lambdatx import amqp_client
from lambdatx.amqp_client import AmqpDelegate, amqp_spec
from lambdatx.amqp_connector import AmqpConnector, backoff_delay
from lambdatx.amqp_messages import (
    ReplyCache,
    parse_request,
    reply_message,
    request_headers,
    request_id_for,
)
from lambdatx.amqp_uri import parse_amqp_uri
from lambdatx.config import Config
from lambdatx.errors import (
    InvalidRequestContentException,
    RequestEntityTooLargeException,
    ResourceNotFoundException,
)
from lambdatx.invocation import Outcome, function_failure
from test_dispatcher import inv, make, results

CONFIG = Config(function_name="fn", amqp_uri="amqp://h")


# --- backoff and giving up ----------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_jitter():
    """Retry n waits retry_delay × 2^(n−1), capped at max(retry_delay, 30 s), ±20 %."""
    middle = lambda: 0.5  # noqa: E731
    assert [backoff_delay(2, n, middle) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert backoff_delay(2, 1, lambda: 0.0) == pytest.approx(1.6)
    assert backoff_delay(2, 1, lambda: 1.0) == pytest.approx(2.4)
    assert backoff_delay(60, 1, middle) == 60 and backoff_delay(60, 4, middle) == 60
    assert backoff_delay(0.5, 1000, middle) == 30


class RefusingEndpoint:
    def __init__(self, clock):
        self.clock = clock
        self.attempts = []

    def connect(self, factory):
        self.attempts.append(self.clock.seconds())
        return defer.fail(ConnectionRefusedError("no broker"))


def test_connector_retries_on_schedule_then_gives_up(log_events):
    """Failed attempts follow the backoff; after connection_attempts it gives up once."""
    clock = Clock()
    endpoint = RefusingEndpoint(clock)
    gave_up = []
    connector = AmqpConnector(
        parse_amqp_uri("amqp://h/?connection_attempts=4&retry_delay=1"),
        ("guest", "guest"),
        "lambdatx fn@test",
        clock,
        on_ready=None,
        on_lost=None,
        on_give_up=lambda: gave_up.append(clock.seconds()),
        endpoint=endpoint,
        jitter=lambda: 0.5,
    )
    connector.startService()
    for _ in range(20):
        clock.advance(0.5)
    assert endpoint.attempts == [0, 1, 3, 7]
    assert gave_up == [7] and connector.gave_up
    assert not clock.getDelayedCalls()
    critical = [e for e in log_events if "giving up" in (e.get("log_format") or "")]
    assert len(critical) == 1 and critical[0]["reason"].startswith("Connection was refused")


def test_connector_without_attempt_limit_retries_for_ever():
    """connection_attempts=0 never gives up; the delay stays at the cap."""
    clock = Clock()
    endpoint = RefusingEndpoint(clock)
    connector = AmqpConnector(
        parse_amqp_uri("amqp://h/?retry_delay=10"), ("g", "g"), "n", clock,
        None, None, lambda: pytest.fail("gave up"), endpoint=endpoint, jitter=lambda: 0.5,
    )  # fmt: skip
    connector.startService()
    for _ in range(100):
        clock.advance(10)
    gaps = [b - a for a, b in zip(endpoint.attempts, endpoint.attempts[1:])]
    assert gaps[:3] == [10, 20, 30] and set(gaps[3:]) == {30}
    defer.Deferred.fromCoroutine(connector.close())
    assert not clock.getDelayedCalls()


# --- handshake --------------------------------------------------------------------------------


class FakeTuneChannel:
    def connection_tune_ok(self, **kwargs):
        self.tune_ok = kwargs


class FakeClient:
    def __init__(self, wanted):
        self.heartbeat_wanted = wanted
        self.started = defer.Deferred()
        self.started.fire = lambda: None


class Tune:
    def __init__(self, heartbeat, frame_max=131072, channel_max=2047):
        self.heartbeat, self.frame_max, self.channel_max = heartbeat, frame_max, channel_max


@pytest.mark.parametrize(
    "wanted, proposed, agreed",
    [(60, 30, 30), (10, 60, 10), (60, 0, 60), (0, 60, 0), (0, 0, 0)],
)
def test_heartbeat_negotiation(wanted, proposed, agreed):
    """tune-ok carries our heartbeat, or the server's when smaller and non-zero; 0 disables."""
    delegate = AmqpDelegate()
    delegate.client = FakeClient(wanted)
    channel = FakeTuneChannel()
    delegate.connection_tune(channel, Tune(proposed))
    assert channel.tune_ok["heartbeat"] == agreed
    assert delegate.client.heartbeatInterval == agreed


def test_frame_max_zero_means_a_sane_default():
    """A server without a frame limit gets the default frame size (txAMQP would divide by it)."""
    delegate = AmqpDelegate()
    delegate.client = FakeClient(60)
    channel = FakeTuneChannel()
    delegate.connection_tune(channel, Tune(60, frame_max=0))
    assert channel.tune_ok["frame_max"] == delegate.client.MAX_LENGTH == 131072


def test_spec_has_rabbitmq_extensions():
    """The shipped spec has confirm.select and basic.nack (RabbitMQ's extended XML)."""
    spec = amqp_spec()
    assert spec.classes.byname["confirm"].methods.byname["select"].id == 10
    assert [f.name for f in spec.classes.byname["basic"].methods.byname["nack"].fields] == [
        "delivery-tag", "multiple", "requeue",
    ]  # fmt: skip


# --- field tables (a pinned txAMQP workaround) -------------------------------------------------


def test_codec_table_methods_are_replaced():
    """txAMQP's codec uses our field-table coder (it only knows S, I, F and t)."""
    assert Codec.decode_table is amqp_client._decode_table
    assert Codec.encode_table is amqp_client._encode_table


def test_field_tables_round_trip_every_type():
    """Strings (with non-ASCII text), bytes, booleans, integers, floats, tables, arrays, void."""
    table = {
        "s": "café", "x": b"\xff\x00", "t": True, "i": -5, "big": 2**40, "d": 1.5,
        "f": {"n": 1}, "a": [1, "two", None], "v": None,
    }  # fmt: skip
    stream = BytesIO()
    Codec(stream).encode_table(table)
    assert Codec(BytesIO(stream.getvalue())).decode_table() == table


def test_tables_written_by_pika_are_read():
    """Decimal, timestamp, long and byte-array values as pika sends them are understood."""
    from datetime import datetime, timezone

    pieces: list[bytes] = []
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    pika.data.encode_table(pieces, {"d": Decimal("1.25"), "ts": when, "l": 2**40, "b": b"raw"})
    decoded = Codec(BytesIO(b"".join(pieces))).decode_table()
    assert decoded["d"] == Decimal("1.25")
    assert decoded["ts"] == int(when.timestamp())
    assert decoded["l"] == 2**40 and decoded["b"] == b"raw"


# --- requests ---------------------------------------------------------------------------------


def test_request_headers_match_case_insensitively_and_decode_bytes():
    """Header names match in any case; byte strings are UTF-8 text; others are ignored."""
    found = request_headers(
        {
            "X-AMZ-LOG-TYPE": "Tail",
            "x-amzn-trace-id": b"Root=1",
            "Other": 5,
            b"x-amz-tenant-id": "t",
        }
    )
    assert found == {"log_type": "Tail", "trace_id": "Root=1", "tenant_id": "t"}


@pytest.mark.parametrize("value", [5, True, 1.5, ["a"], {"a": "b"}, None, b"\xff\xfe"])
def test_request_header_that_is_not_a_string_is_e11(value):
    """A listed header that is not an AMQP string is InvalidRequestContentException (E11)."""
    with pytest.raises(InvalidRequestContentException) as info:
        request_headers({"x-lambdatx-cognito-identity": value})
    assert info.value.message == "Header X-Lambdatx-Cognito-Identity must be a string."


def test_request_without_reply_to_is_an_event_with_the_event_size_limit():
    """No reply_to makes an Event, bounded by LAMBDATX_MAX_EVENT_BYTES (E13)."""
    invocation = parse_request(CONFIG, {}, b"", "rid")
    assert invocation.event and invocation.payload == b"{}" and invocation.source == "amqp"
    big = b'"' + b"x" * 1048576 + b'"'
    with pytest.raises(RequestEntityTooLargeException) as info:
        parse_request(CONFIG, {}, big, "rid")
    assert "for the Event invocation type" in info.value.message
    sync = parse_request(CONFIG, {"reply-to": "q"}, big, "rid")
    assert not sync.event


def test_request_qualifier_header():
    """X-Lambdatx-Qualifier accepts $LATEST and the version; anything else is E06."""
    config = replace(CONFIG, function_version="3")
    for qualifier in ("$LATEST", "3"):
        headers = {"headers": {"X-Lambdatx-Qualifier": qualifier}, "reply-to": "q"}
        assert parse_request(config, headers, b"{}", "r").qualifier == qualifier
    with pytest.raises(ResourceNotFoundException):
        parse_request(config, {"headers": {"X-Lambdatx-Qualifier": "4"}}, b"{}", "r")


def test_request_id_from_correlation_id():
    """A UUID correlation id (any case) not in flight is the request id, lowercased."""
    upper = "6F1C4E3A-0D5B-4B59-9C8E-6A1F0D2E3B4C"
    assert request_id_for(upper, set()) == upper.lower()
    assert request_id_for(upper, {upper.lower()}) != upper.lower()
    assert len(request_id_for("42", set())) == 36
    assert len(request_id_for(None, set())) == 36


# --- replies ----------------------------------------------------------------------------------


def test_reply_for_a_result_mirrors_http():
    """A result: the runtime's content type and body, status 200, version, request id."""
    reply = reply_message(CONFIG, Outcome(b"hi", "text/plain"), "rid", b"cid")
    assert reply.body == b"hi" and reply.status == 200
    assert reply.properties == {
        "content-type": b"text/plain",
        "delivery-mode": 1,
        "correlation-id": b"cid",
        "headers": {
            "x-amzn-RequestId": "rid",
            "X-Lambdatx-Status-Code": 200,
            "X-Amz-Executed-Version": "$LATEST",
        },
    }


def test_reply_for_a_function_error_with_tail():
    """A function error: Unhandled, JSON, and the log tail when asked for."""
    outcome = function_failure("Sandbox.Timedout", "late").with_log_result("bG9n")
    reply = reply_message(CONFIG, outcome, "rid", None)
    headers = reply.properties["headers"]
    assert headers["X-Amz-Function-Error"] == "Unhandled"
    assert headers["X-Amz-Log-Result"] == "bG9n"
    assert reply.properties["content-type"] == b"application/json"
    assert "correlation-id" not in reply.properties
    assert json.loads(reply.body)["errorType"] == "Sandbox.Timedout"


def test_reply_for_a_service_error():
    """A service error: its status, x-amzn-ErrorType and body; no version, no function error."""
    reply = reply_message(CONFIG, RequestEntityTooLargeException("too big"), "rid", b"c")
    assert reply.status == 413
    assert reply.properties["headers"] == {
        "x-amzn-RequestId": "rid",
        "X-Lambdatx-Status-Code": 413,
        "x-amzn-ErrorType": "RequestEntityTooLargeException",
    }
    assert json.loads(reply.body) == {"Type": "User", "message": "too big"}


def test_reply_cache_expires_and_is_bounded():
    """Kept replies answer for 60 s, and only the newest 1000 are kept."""
    clock = Clock()
    cache = ReplyCache(clock, entries=3)
    cache.put(("q", b"1"), "one")
    clock.advance(59.9)
    assert cache.get(("q", b"1")) == "one"
    clock.advance(0.2)
    assert cache.get(("q", b"1")) is None
    for i in range(5):
        cache.put(("q", i), i)
    assert len(cache) == 3 and cache.get(("q", 0)) is None and cache.get(("q", 4)) == 4


# --- the dispatcher ---------------------------------------------------------------------------


def test_withdraw_queued_takes_back_only_queued_matches():
    """withdraw_queued removes the selected queued invocations; running ones are untouched."""
    dispatcher, clock, launcher = make()
    running = results(dispatcher.submit(inv(b"1", source="amqp")))
    keep = inv(b"2", source="http")
    take = inv(b"3", source="amqp")
    kept, taken = results(dispatcher.submit(keep)), results(dispatcher.submit(take))
    withdrawn = dispatcher.withdraw_queued(lambda i: i.source == "amqp")
    assert withdrawn == [take]
    assert taken[0].check(defer.CancelledError)
    assert [job.invocation for job in dispatcher.queue] == [keep]
    assert running == [] and kept == []
    assert dispatcher.withdraw_queued(lambda i: True) == [keep]
    assert not dispatcher.queue
