"""
The gateway's AMQP side (amqp-rpc.md §9): publish Invoke calls to the queue named after the
function and match the replies.

Protocol, per connection (``lambdatx-server@<hostname>``, kept up by
:class:`lambdatx.amqp_connector.AmqpConnector` with its backoff):

* One channel in publisher-confirm mode that consumes ``amq.rabbitmq.reply-to`` (``no_ack``)
  before its first publish; direct reply-to needs both on the same channel, and no reply queue.
* ``RequestResponse``: the pending call is registered under its correlation id (= the request id,
  a UUID v4) **before** publishing to the default exchange with ``mandatory``, ``reply_to`` =
  direct reply-to, ``expiration`` = the fail-safe in ms, ``delivery_mode`` 1. It ends with the
  first of: the reply (matched with one dict lookup), ``basic.return`` (no queue: 404),
  ``basic.nack`` (G04), the loss of the connection or channel (G05), the fail-safe (G06), or the
  caller going away (the entry is dropped; a late reply is ignored at DEBUG).
* ``Event``: no ``reply_to``, ``delivery_mode`` 2; ends with the confirm (ack → 202, nack → G04),
  or a ``basic.return``, which RabbitMQ sends before the ack (404).
* ``DryRun``: ``queue.declare(passive)`` on a fresh short-lived channel (a 404 closes it).

Nothing is published while disconnected: such calls fail at once with G03 (safe to retry).
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from .amqp_client import Closed, Handlers, Nacked
from .amqp_connector import AmqpConnector, connection_name
from .amqp_uri import parse_amqp_uri
from .errors import ServiceException
from .lifecycle import Waiters
from .wire import (
    APPLICATION_JSON,
    CONTENT_TYPE,
    ERROR_TYPE,
    EXECUTED_VERSION,
    FUNCTION_ERROR,
    LOG_RESULT,
    REQUEST_ID,
    Headers,
)

DIRECT_REPLY_TO = b"amq.rabbitmq.reply-to"
#: The reply header carrying the HTTP status (amqp-rpc.md §4).
STATUS_CODE = "x-lambdatx-status-code"
#: Reply headers copied to the HTTP answer, by lowercase name.
_COPIED: dict[str, bytes] = {
    name.decode("ascii").lower(): name
    for name in (FUNCTION_ERROR, EXECUTED_VERSION, LOG_RESULT, ERROR_TYPE)
}
_MAX_SHORTSTR = 255

BROKER_UNAVAILABLE = "Message broker unavailable."
PUBLISH_NACKED = "Message broker refused the request."
REPLY_LOST = (
    "Connection to the message broker was lost before the reply arrived; "
    "the function may have run."
)


def no_reply(function: str, seconds: float) -> ServiceException:
    """G06."""
    return ServiceException(
        f"No reply from function {function} within {seconds:g} seconds; the function may have run."
    )


class FunctionNotFound(Exception):
    """``basic.return`` or a passive declare's 404: no queue is named after the function."""


# --- reply → HTTP (G07) ----------------------------------------------------------------------


def reply_response(
    properties: Mapping[str, Any], body: bytes, request_id: str
) -> tuple[int, Headers, bytes]:
    """
    The HTTP answer for a reply: status from ``X-Lambdatx-Status-Code`` (200 when absent or not
    an HTTP status, e.g. a Go daemon replied), the outcome headers copied, ``Content-Type`` from
    the reply (``application/json`` when absent), the body verbatim.
    """
    status = 200
    content_type = properties.get("content-type")
    headers: Headers = [
        (CONTENT_TYPE, _as_bytes(content_type) if content_type else APPLICATION_JSON),
        (REQUEST_ID, request_id.encode("ascii")),
    ]
    for name, value in (properties.get("headers") or {}).items():
        lower = _as_text(name).lower()
        if lower == STATUS_CODE:
            status = _status(value)
            continue
        canonical = _COPIED.get(lower)
        if canonical is not None and value is not None:
            headers.append((canonical, _as_bytes(value)))
    return status, headers, body


def _status(value: Any) -> int:
    if isinstance(value, (bytes, str)) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 200 <= value <= 599:
        return value
    return 200


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _as_bytes(value: Any) -> bytes:
    return bytes(value) if isinstance(value, (bytes, bytearray)) else str(value).encode("utf-8")


# --- the router ------------------------------------------------------------------------------


class _Session:
    """One connection: its channel, and the calls published on it, by correlation id."""

    __slots__ = ("protocol", "publisher", "channel", "pending", "alive")

    def __init__(self, protocol, publisher):
        self.protocol = protocol
        self.publisher = publisher
        self.channel = publisher.channel
        self.pending: dict[str, _Call] = {}
        self.alive = True


class _Call:
    __slots__ = ("key", "function", "deferred", "timer")

    def __init__(self, key: str, function: str):
        self.key = key
        self.function = function
        self.deferred: defer.Deferred = None  # type: ignore[assignment]
        self.timer: Any = None


class AmqpRouter(Handlers):
    """The gateway's broker connection and its calls in flight."""

    log = Logger()

    def __init__(self, config, reactor, on_give_up, *, connector=None):
        self.config = config
        self.reactor = reactor
        uri = parse_amqp_uri(config.amqp_uri)
        self._connector = connector or AmqpConnector(
            uri,
            uri.credentials(config.amqp_username, config.amqp_password),
            connection_name("lambdatx-server"),
            reactor,
            self._ready,
            lambda reason: None,  # _session_lost hears it first, from the protocol itself
            on_give_up,
        )
        self._expiration = b"%d" % max(1, round(config.timeout * 1000))
        self._session: _Session | None = None
        self._ready_waiters = Waiters()
        self._closing = False
        #: Whether G03 was logged since the connection went away (once per outage).
        self._unavailable_logged = False
        #: Counters for tests and operators.
        self.sessions = 0

    # --- connection -----------------------------------------------------------------------

    def start(self) -> None:
        self._connector.startService()

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and session.alive

    @property
    def pending_count(self) -> int:
        session = self._session
        return len(session.pending) if session is not None else 0

    def when_ready(self) -> defer.Deferred:
        """Fires when the router is (or next becomes) connected."""
        if self.connected:
            return defer.succeed(None)
        return self._ready_waiters.wait()

    async def _ready(self, protocol) -> None:
        protocol.handlers = self
        publisher = await protocol.confirm_channel()
        # Direct reply-to: consume before the first publish, on the publishing channel.
        await publisher.channel.basic_consume(
            queue=DIRECT_REPLY_TO,
            consumer_tag=f"lambdatx-server-{uuid.uuid4()}".encode(),
            no_ack=True,
        )
        if self._closing:
            raise Closed("closing")
        session = self._session = _Session(protocol, publisher)
        protocol.when_lost().addCallback(lambda _: self._session_lost(session))
        self.sessions += 1
        self._unavailable_logged = False
        self.log.info("AMQP gateway ready uri={uri}", uri=self._connector.uri.display())
        self._ready_waiters.fire(None)

    def _session_lost(self, session: _Session, why: str | None = None) -> None:
        """Every call published on a lost connection or channel gets G05 (it may have run)."""
        if not session.alive:
            return
        session.alive = False
        if self._session is session:
            self._session = None
        pending, session.pending = session.pending, {}
        if self._closing:
            self.log.info("AMQP connection closed")
        else:
            if why is None:
                lost = session.protocol.lost_reason
                why = session.protocol.close_reason or (str(lost.value) if lost else "unknown")
            self.log.warn("AMQP connection lost reason={reason}", reason=why)
        if pending:
            self.log.warn("reply lost for {count} calls in flight", count=len(pending))
        for call in pending.values():
            self._fire(call, Failure(ServiceException(REPLY_LOST)))

    async def close(self) -> None:
        """Stop reconnecting and close the connection (reply 200); what is pending gets G05."""
        self._closing = True
        await self._connector.close()
        session = self._session
        if session is not None:
            self._session_lost(session)

    # --- calls ----------------------------------------------------------------------------

    def _usable(self) -> _Session:
        session = self._session
        if session is None or not session.alive:
            if not self._unavailable_logged:
                self._unavailable_logged = True
                self.log.warn("broker unavailable: answering 500 until reconnected")
            raise ServiceException(BROKER_UNAVAILABLE)
        return session

    def request(self, function: str, body: bytes, headers: dict, content_type: bytes | None,
                request_id: str) -> defer.Deferred:  # fmt: skip
        """
        Publish a ``RequestResponse`` call; the Deferred fires with the reply's ``Content``, or
        fails with :class:`FunctionNotFound` or a ``ServiceException`` (G03-G06). Raises G03
        at once when nothing was published.
        """
        properties = {
            "reply-to": DIRECT_REPLY_TO,
            "correlation-id": request_id.encode("ascii"),
            "content-type": _content_type(content_type),
            "delivery-mode": 1,
            "expiration": self._expiration,
            "headers": headers,
        }
        return self._call(function, body, properties, request_id, event=False)

    def event(self, function: str, body: bytes, headers: dict, content_type: bytes | None,
              request_id: str) -> defer.Deferred:  # fmt: skip
        """Publish an ``Event`` call; the Deferred fires (None) when the broker has it."""
        properties = {
            "correlation-id": request_id.encode("ascii"),
            "content-type": _content_type(content_type),
            "delivery-mode": 2,
            "expiration": self._expiration,
            "headers": headers,
        }
        return self._call(function, body, properties, request_id, event=True)

    def _call(self, function: str, body: bytes, properties: dict, key: str, event: bool):
        session = self._usable()
        call = _Call(key, function)
        call.deferred = defer.Deferred(lambda _: self._forget(session, call))
        session.pending[key] = call
        try:
            confirmed = session.publisher.publish(function.encode("utf-8"), body, properties)
        except Closed:
            self._forget(session, call)
            raise ServiceException(BROKER_UNAVAILABLE) from None
        call.timer = self.reactor.callLater(self.config.timeout, self._fail_safe, session, call)
        confirmed.addCallbacks(
            self._confirmed, self._refused, (session, call, event), None, (session, call)
        )
        return call.deferred

    async def exists(self, function: str) -> bool:
        """``DryRun``: does a queue named after the function exist? (passive declare)"""
        session = self._usable()
        try:
            channel = await session.protocol.new_channel()
        except Closed:
            raise ServiceException(BROKER_UNAVAILABLE) from None
        try:
            await channel.queue_declare(queue=function.encode("utf-8"), passive=True)
        except Closed as error:
            reason = error.args[0] if error.args else None
            if getattr(reason, "reply_code", None) == 404:
                return False
            raise ServiceException(BROKER_UNAVAILABLE) from None
        closing = channel.channel_close(reply_code=200, reply_text=b"", class_id=0, method_id=0)
        # Marked closed once the broker agrees, so that its id may be used again.
        closing.addBoth(lambda _: channel.close(None))
        return True

    # --- outcomes ---------------------------------------------------------------------------

    def _take(self, session: _Session, key: Any) -> _Call | None:
        call = session.pending.pop(key, None)
        if call is not None and call.timer is not None and call.timer.active():
            call.timer.cancel()
        return call

    def _forget(self, session: _Session, call: _Call) -> None:
        if session.pending.get(call.key) is call:
            self._take(session, call.key)

    def _fire(self, call: _Call, result: Any) -> None:
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        if not call.deferred.called:
            if isinstance(result, Failure):
                call.deferred.errback(result)
            else:
                call.deferred.callback(result)

    def _confirmed(self, _ignored, session: _Session, call: _Call, event: bool) -> None:
        if event and self._take(session, call.key) is call:
            self._fire(call, None)

    def _refused(self, failure: Failure, session: _Session, call: _Call) -> None:
        if failure.check(Nacked):
            if self._take(session, call.key) is call:
                self.log.warn("publish nacked function={function}", function=call.function)
                self._fire(call, Failure(ServiceException(PUBLISH_NACKED)))
        # Closed: the session is lost, and _session_lost answers every call on it.

    def _fail_safe(self, session: _Session, call: _Call) -> None:
        if session.pending.get(call.key) is call:
            del session.pending[call.key]
            self.log.warn(
                "fail-safe timeout function={function} request_id={request_id}",
                function=call.function,
                request_id=call.key,
            )
            self._fire(call, Failure(no_reply(call.function, self.config.timeout)))

    # --- broker notifications (Handlers) ----------------------------------------------------

    def deliver(self, channel, message) -> None:
        session = self._session
        if session is None or channel is not session.channel:
            return
        content = message.content
        key = content.properties.get("correlation-id")
        call = self._take(session, key)
        if call is None:
            self.log.debug("unmatched reply dropped correlation_id={cid}", cid=key)
            return
        self._fire(call, content)

    def returned(self, channel, message) -> None:
        session = self._session
        if session is None or channel is not session.channel:
            return
        key = message.content.properties.get("correlation-id")
        call = self._take(session, key)
        if call is not None:
            self._fire(call, Failure(FunctionNotFound(call.function)))

    def channel_failed(self, channel, reason: Failure) -> None:
        session = self._session
        if session is None or channel is not session.channel:
            return  # a DryRun channel closed by its 404
        self._session_lost(session, f"channel closed by the broker: {reason.value}")
        session.protocol.transport.loseConnection()

    def cancelled(self, channel, message) -> None:
        session = self._session
        if session is not None and channel is session.channel:
            self._session_lost(session, "reply consumer cancelled by the broker")
            session.protocol.transport.loseConnection()


def _content_type(value: bytes | None) -> bytes:
    """The caller's Content-Type, when it fits a short string; else ``application/json``."""
    if value and len(value) <= _MAX_SHORTSTR:
        return value
    return APPLICATION_JSON
