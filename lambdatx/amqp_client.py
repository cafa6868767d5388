"""
The AMQP 0-9-1 client layer over txAMQP, shared by the daemon's consumer (``lambdatx.amqp_rpc``)
and the gateway; ``lambdatx.amqp_connector`` keeps it connected. Nothing else imports txAMQP.

Protocol notes (AMQP 0-9-1 as RabbitMQ speaks it; ``../shared/NOTES.md`` lists txAMQP 0.8.2's
sharp edges, each handled here):

* The spec XML is RabbitMQ's extended one, shipped as package data (``amqp0-9-1.xml``): it alone
  has ``confirm.select`` and ``basic.nack``.
* Handshake: ``connection.start`` → ``start-ok`` (PLAIN, with ``client_properties``: the
  ``connection_name`` operators and tests look for, and the capabilities that make RabbitMQ send
  ``basic.cancel`` and publisher ``basic.ack``/``basic.nack``) → ``tune`` → ``tune-ok`` (heartbeat
  = ours, or the server's proposal when smaller and non-zero; 0 disables) → ``open``.
* :class:`AmqpDelegate` handles the server-sent ``basic.ack``/``basic.nack`` (confirms),
  ``basic.cancel`` and ``basic.return``, which the stock delegate lacks; a handler that raised
  would end txAMQP's dispatch loop and wedge the connection, so none may raise.
* Every channel gets a fresh id (txAMQP caches channels for ever, closed ones included).
* Field tables: txAMQP only knows the ``S``, ``I``, ``F`` and ``t`` field types and would drop
  the connection on any other; :func:`_decode_table`/:func:`_encode_table` replace its codec's
  table methods with the full RabbitMQ set (pinned by ``tests/test_amqp_client.py``). txAMQP
  sizes a ``str`` by characters, not bytes, so short strings are always passed as bytes.
"""

from __future__ import annotations

import platform
import struct
from collections import OrderedDict
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from io import BytesIO
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp import spec as txamqp_spec
from txamqp.client import Closed, TwistedDelegate
from txamqp.codec import Codec
from txamqp.content import Content
from txamqp.protocol import AMQClient

__all__ = ["AmqpProtocol", "ConfirmChannel", "Closed", "Content", "Handlers", "Nacked", "bounded"]

#: Frame size used when the server imposes none (frame_max 0).
DEFAULT_FRAME_MAX = 131072
#: How long a clean close waits for ``connection.close-ok``.
CLOSE_TIMEOUT = 2.0


@lru_cache(maxsize=1)
def amqp_spec():
    """RabbitMQ's extended AMQP 0-9-1 spec, loaded once from the package data."""
    with resources.as_file(resources.files("lambdatx") / "amqp0-9-1.xml") as path:
        return txamqp_spec.load(str(path))


# --- field tables (RabbitMQ's types: https://www.rabbitmq.com/amqp-0-9-1-errata.html) -----

_FIXED = {b"b": "!b", b"B": "!B", b"s": "!h", b"u": "!H", b"I": "!i", b"i": "!I",
          b"l": "!q", b"L": "!Q", b"f": "!f", b"d": "!d", b"T": "!Q"}  # fmt: skip


def _decode_value(codec: Codec) -> Any:
    kind = codec.read(1)
    if kind in _FIXED:
        return codec.unpack(_FIXED[kind])
    if kind == b"S":
        return codec.dec_str("!L")
    if kind == b"x":
        return codec.dec_bytes("!L")
    if kind == b"t":
        return codec.decode_octet() != 0
    if kind == b"F":
        return _decode_table(codec)
    if kind == b"A":
        end = codec.decode_long() + codec.nread
        values = []
        while codec.nread < end:
            values.append(_decode_value(codec))
        return values
    if kind == b"D":
        scale, raw = codec.unpack("!Bi")
        return Decimal(raw).scaleb(-scale)
    if kind == b"V":
        return None
    raise ValueError(f"unknown field type {kind!r}")


def _decode_table(codec: Codec) -> dict:
    end = codec.decode_long() + codec.nread
    table = {}
    while codec.nread < end:
        key = codec.decode_shortstr()
        table[key] = _decode_value(codec)
    return table


def _encode_value(codec: Codec, value: Any) -> None:
    if isinstance(value, str):
        value = value.encode("utf-8")
        codec.write(b"S" + struct.pack("!L", len(value)) + value)
    elif isinstance(value, bytes):
        codec.write(b"x" + struct.pack("!L", len(value)) + value)
    elif isinstance(value, bool):
        codec.write(b"t" + struct.pack("!B", value))
    elif isinstance(value, int):
        fits = -(2**31) <= value < 2**31
        codec.write(b"I" + struct.pack("!i", value) if fits else b"l" + struct.pack("!q", value))
    elif isinstance(value, float):
        codec.write(b"d" + struct.pack("!d", value))
    elif isinstance(value, dict):
        codec.write(b"F")
        _encode_table(codec, value)
    elif isinstance(value, (list, tuple)):
        inner = Codec(BytesIO())
        for item in value:
            _encode_value(inner, item)
        data = inner.stream.getvalue()
        codec.write(b"A" + struct.pack("!L", len(data)) + data)
    elif value is None:
        codec.write(b"V")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in a field table")


def _encode_table(codec: Codec, table: dict) -> None:
    inner = Codec(BytesIO())
    for key, value in table.items():
        key = key.encode("utf-8") if isinstance(key, str) else key
        inner.write(struct.pack("!B", len(key)) + key)
        _encode_value(inner, value)
    data = inner.stream.getvalue()
    codec.write(struct.pack("!L", len(data)) + data)


Codec.decode_table = _decode_table
Codec.encode_table = _encode_table


# --- the protocol ---------------------------------------------------------------------------


class AmqpDelegate(TwistedDelegate):
    """Handles the methods the server sends on its own; every handler logs instead of raising."""

    log = Logger()

    def dispatch(self, channel, message):
        try:
            return super().dispatch(channel, message)
        except Exception:
            self.log.failure(
                "error handling {method}",
                method=f"{message.method.klass.name}.{message.method.name}",
            )

    def connection_start(self, ch, msg):
        client = self.client
        ch.connection_start_ok(
            client_properties=client.client_properties,
            mechanism=b"PLAIN",
            response=client.plain_response,
            locale=b"en_US",
        )

    def connection_tune(self, ch, msg):
        client = self.client
        wanted = client.heartbeat_wanted
        heartbeat = 0 if wanted == 0 else min(wanted, msg.heartbeat) if msg.heartbeat else wanted
        client.heartbeatInterval = heartbeat
        frame_max = msg.frame_max or DEFAULT_FRAME_MAX
        client.MAX_LENGTH = frame_max
        client.channel_max = msg.channel_max or 65535
        ch.connection_tune_ok(
            channel_max=msg.channel_max, frame_max=frame_max, heartbeat=heartbeat
        )
        client.started.fire()

    def connection_close(self, ch, msg):
        self.client.close_reason = f"{msg.reply_code} {msg.reply_text}"
        super().connection_close(ch, msg)

    def connection_blocked(self, ch, msg):
        self.log.warn("AMQP connection blocked by the broker reason={reason}", reason=msg.reason)

    def connection_unblocked(self, ch, msg):
        self.log.info("AMQP connection unblocked")

    def basic_deliver(self, ch, msg):
        self.client.handlers.deliver(ch, msg)

    def basic_return_(self, ch, msg):
        self.client.handlers.returned(ch, msg)

    def basic_cancel(self, ch, msg):
        self.client.handlers.cancelled(ch, msg)

    def basic_ack(self, ch, msg):
        self.client.confirmed(ch, msg.delivery_tag, msg.multiple, True)

    def basic_nack(self, ch, msg):
        self.client.confirmed(ch, msg.delivery_tag, msg.multiple, False)


class Handlers:
    """What a connection's owner is told; the defaults ignore everything."""

    def deliver(self, channel, message) -> None:
        pass

    def returned(self, channel, message) -> None:
        pass

    def cancelled(self, channel, message) -> None:
        pass

    def channel_failed(self, channel, reason: Failure) -> None:
        pass


class AmqpProtocol(AMQClient):
    """A txAMQP client with fresh channel ids, confirm routing and a clean close."""

    def __init__(self, *, vhost: str, username: str, password: str, heartbeat: int,
                 connection_name: str, clock):  # fmt: skip
        super().__init__(
            AmqpDelegate(), vhost.encode("utf-8"), amqp_spec(), heartbeat=heartbeat, clock=clock
        )
        self.heartbeat_wanted = heartbeat
        self.plain_response = b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")
        self.client_properties = {
            "connection_name": connection_name,
            "product": "lambdatx",
            "platform": f"Python {platform.python_version()}",
            "capabilities": {
                "publisher_confirms": True,
                "consumer_cancel_notify": True,
                "basic.nack": True,
                "authentication_failure_close": True,
            },
        }
        self.handlers = Handlers()
        self.channel_max = 65535
        self.close_reason: str | None = None
        self._next_channel = 0
        self._confirms: dict[int, ConfirmChannel] = {}
        self._lost_waiters: list[defer.Deferred] = []
        self.lost_reason: Failure | None = None

    def connectionMade(self):
        # Small frames in both directions (publish, confirm, ack): Nagle's algorithm against
        # the broker's delayed ACKs would add 40 ms stalls.
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        super().connectionMade()

    def channel(self, id):
        # txAMQP looks a channel up for every frame through a DeferredLock and inlineCallbacks;
        # the lock only guards creation, so known channels are returned at once.
        known = self.channels.get(id)
        if known is not None:
            return defer.succeed(known)
        return super().channel(id)

    async def open(self) -> None:
        """Handshake up to ``connection.open-ok``."""
        await self.start(self.plain_response, mechanism="PLAIN")

    async def new_channel(self):
        """An open channel with an id never used before on this connection (or long free)."""
        for _ in range(self.channel_max):
            self._next_channel = self._next_channel % self.channel_max + 1
            existing = self.channels.get(self._next_channel)
            if existing is None or existing.closed:
                break
        self.channels.pop(self._next_channel, None)
        channel = await self.channel(self._next_channel)
        await channel.channel_open()
        return channel

    async def confirm_channel(self) -> "ConfirmChannel":
        channel = await self.new_channel()
        confirm = ConfirmChannel(channel)
        self._confirms[channel.id] = confirm
        await channel.confirm_select()
        return confirm

    def confirmed(self, channel, tag: int, multiple: bool, ok: bool) -> None:
        confirm = self._confirms.get(channel.id)
        if confirm is not None and confirm.channel is channel:
            confirm.confirmed(tag, multiple, ok)

    def channel_failed(self, channel, reason):
        confirm = self._confirms.pop(channel.id, None)
        if confirm is not None and confirm.channel is channel:
            confirm.fail_all(reason)
        self.handlers.channel_failed(channel, reason)

    def when_lost(self) -> defer.Deferred:
        """Fires (with None; see ``lost_reason``) when the transport is gone."""
        d: defer.Deferred = defer.Deferred()
        if self.lost_reason is not None:
            d.callback(None)
        else:
            self._lost_waiters.append(d)
        return d

    def connectionLost(self, reason):
        self.lost_reason = reason
        for confirm in list(self._confirms.values()):
            confirm.fail_all(reason)
        self._confirms.clear()
        super().connectionLost(reason)
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            d.callback(None)

    async def close_cleanly(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """``connection.close`` (200), wait for close-ok (bounded), then drop the transport."""
        if self.lost_reason is not None:
            return
        lost = self.when_lost()
        if not self.closed:
            channel0 = await self.channel(0)
            closing = channel0.connection_close(
                reply_code=200, reply_text=b"Normal shutdown", class_id=0, method_id=0
            )
            closing.addErrback(lambda _: None)
            await bounded(closing, timeout, self.clock)
            self.closed = True
        self.transport.loseConnection()
        await bounded(lost, timeout, self.clock)


class ConfirmChannel:
    """A channel in publisher-confirm mode: each publish returns a Deferred fired by its confirm."""

    def __init__(self, channel):
        self.channel = channel
        self._sequence = 0
        self._pending: OrderedDict[int, defer.Deferred] = OrderedDict()

    @property
    def closed(self) -> bool:
        return self.channel.closed

    def publish(self, routing_key: bytes, body: bytes, properties: dict, *, mandatory: bool = True,
                exchange: bytes = b"") -> defer.Deferred:  # fmt: skip
        """
        Publish; the Deferred fires when the broker acks, fails with :class:`Nacked` on a nack
        and with ``Closed`` when the channel goes away first. Raises ``Closed`` at once if closed.
        """
        if self.channel.closed:
            raise Closed(self.channel.reason)
        self.channel.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            mandatory=mandatory,
            content=Content(body, properties=properties),
        )
        self._sequence += 1
        confirmed: defer.Deferred = defer.Deferred()
        self._pending[self._sequence] = confirmed
        return confirmed

    def confirmed(self, tag: int, multiple: bool, ok: bool) -> None:
        if multiple:
            tags = [t for t in self._pending if t <= tag]
        else:
            tags = [tag] if tag in self._pending else []
        for t in tags:
            d = self._pending.pop(t)
            if ok:
                d.callback(None)
            else:
                d.errback(Nacked())

    def fail_all(self, reason) -> None:
        pending, self._pending = self._pending, OrderedDict()
        for d in pending.values():
            d.errback(Closed(reason))


class Nacked(Exception):
    """The broker refused a published message (``basic.nack`` on a confirm channel)."""


async def bounded(d: defer.Deferred, timeout: float, clock) -> None:
    """Wait for ``d`` at most ``timeout`` seconds, whatever its outcome (which is consumed)."""
    waiter: defer.Deferred = defer.Deferred()

    def done(_: object = None) -> None:
        if not waiter.called:
            waiter.callback(None)

    timer = clock.callLater(timeout, done)
    d.addBoth(done)
    await waiter
    if timer.active():
        timer.cancel()
