"""
The daemon's AMQP-RPC endpoint (amqp-rpc.md §2-§8): consume the durable queue named after the
function, run each delivery through the dispatcher exactly like an HTTP invocation, and publish
the reply to its ``reply_to`` with its ``correlation_id``.

Ack policy (amqp-rpc.md §5-§6), the one place it is decided:

* A delivery with ``reply_to`` is acked only after the broker has **confirmed** its reply
  (publisher confirms, ``mandatory=true``). A reply the broker returns (requester gone) is logged
  and the delivery is acked all the same: the function did run. A reply the broker nacks makes
  the delivery ``nack(requeue=true)``; its redelivered copy is answered from the kept reply.
* An ``Event`` delivery (no ``reply_to``) is acked when its invocation has completed, whatever
  the outcome; an invalid one is ``reject(requeue=false)`` (dead-lettered if the queue says so).
* Nothing is acked earlier. If the daemon or its connection dies first, RabbitMQ redelivers:
  at-least-once. Redelivered copies (``redelivered=true``) whose (``reply_to``,
  ``correlation_id``) is running here are attached to that run; those completed less than 60 s
  ago are answered from the kept reply without running again.
* After a connection loss the old delivery tags are dead: running invocations finish and their
  replies are kept and published once reconnected (without ack); invocations still queued here
  are withdrawn from the dispatcher (the broker has requeued them).
* Shutdown: ``basic.cancel``, then ``basic.nack(requeue=true)`` for deliveries still queued here;
  running ones finish, are answered and acked; then the connection is closed (reply 200).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from .amqp_client import Closed, Handlers, Nacked
from .amqp_connector import AmqpConnector, connection_name
from .amqp_messages import (
    Reply,
    ReplyCache,
    parse_request,
    raw,
    reply_message,
    request_id_for,
    text,
)
from .amqp_session import Delivery, Session
from .amqp_uri import parse_amqp_uri
from .errors import ServiceError, ShuttingDown
from .invocation import new_request_id
from .lifecycle import Waiters
from .wire import internal_error

#: How long closing waits for the last replies to be confirmed and acked.
CLOSE_WAIT = 2.0
#: What the cache holds for a completed Event (nothing to send; ack the copy).
_EVENT_DONE = "event done"


class _Run:
    """One invocation, and the deliveries waiting for it (the first, plus attached copies)."""

    __slots__ = ("key", "request_id", "invocation", "deliveries")

    def __init__(self, key, request_id, invocation, delivery):
        self.key = key
        self.request_id = request_id
        self.invocation = invocation
        self.deliveries = [delivery]


class AmqpRpc(Service, Handlers):
    """The AMQP-RPC consumer service of one daemon (a child of ``LambdaTxService``)."""

    log = Logger()

    def __init__(self, config, reactor, dispatcher, on_give_up, *, connector=None):
        self.config = config
        self.reactor = reactor
        self.dispatcher = dispatcher
        self.queue = config.function_name.encode("utf-8")
        uri = parse_amqp_uri(config.amqp_uri)
        self._connector = connector or AmqpConnector(
            uri,
            uri.credentials(config.amqp_username, config.amqp_password),
            connection_name(f"lambdatx {config.function_name}"),
            reactor,
            self._ready,
            self._lost,
            on_give_up,
        )
        self._session: Session | None = None
        self._active: dict[object, _Run] = {}
        self._runs: dict[tuple, _Run] = {}
        self._request_ids: set[str] = set()
        self._cache = ReplyCache(reactor)
        #: Replies finished while disconnected, by (reply_to, correlation_id): sent on reconnect.
        self._kept: OrderedDict[tuple, tuple[Any, Reply]] = OrderedDict()
        self._unconfirmed = 0
        self._ready_waiters = Waiters()
        self._stopping = False
        #: Counters for tests and operators: deliveries received, consumer (re)starts.
        self.deliveries = 0
        self.sessions = 0

    # --- lifecycle --------------------------------------------------------------------------

    def startService(self):
        super().startService()
        self._connector.startService()

    @property
    def connection(self):
        """The broker connection the consumer is on, None while there is none."""
        session = self._session
        return session.protocol if session is not None and session.alive else None

    def when_ready(self) -> defer.Deferred:
        """Fires when the consumer is (or next becomes) ready."""
        if self._session is not None and self._session.alive:
            return defer.succeed(None)
        return self._ready_waiters.wait()

    async def _ready(self, protocol) -> None:
        protocol.handlers = self
        session = await Session.open(protocol, self.queue, self.config.capacity)
        if self._stopping:
            raise ShuttingDown()
        self._session = session
        self.sessions += 1
        await session.consume(self.queue)
        self._send_kept(session)
        self.log.info(
            "AMQP consumer ready queue={queue} prefetch={prefetch}",
            queue=self.config.function_name,
            prefetch=self.config.capacity,
        )
        self._ready_waiters.fire(None)

    def _lost(self, reason: Failure) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.alive = False
        self.log.warn("AMQP connection lost reason={reason}", reason=self._connector.last_error)
        withdrawn = self.dispatcher.withdraw_queued(lambda invocation: invocation in self._active)
        if withdrawn:
            self.log.info(
                "withdrew {count} queued AMQP invocations: the broker redelivers them",
                count=len(withdrawn),
            )

    async def stop_intake(self) -> None:
        """Shutdown step 2: ``basic.cancel``, then requeue what is only queued here."""
        self._stopping = True
        if self._session is not None:
            await self._session.cancel(CLOSE_WAIT, self.reactor)
        runs = dict(self._active)
        withdrawn = self.dispatcher.withdraw_queued(lambda invocation: invocation in runs)
        for invocation in withdrawn:
            for delivery in runs[invocation].deliveries:
                delivery.settle("nack")
        if withdrawn:
            self.log.info("returned {count} queued deliveries to the queue", count=len(withdrawn))

    async def close(self) -> None:
        """Shutdown step 6: wait (bounded) for the last confirms and acks, then close."""
        self._stopping = True
        deadline = self.reactor.seconds() + CLOSE_WAIT
        while (self._unconfirmed or self._active) and self.reactor.seconds() < deadline:
            await task.deferLater(self.reactor, 0.02, lambda: None)
        if self._active or self._unconfirmed:
            self.log.warn(
                "closing the AMQP connection with {running} invocations running and {unconfirmed} "
                "replies unconfirmed: RabbitMQ redelivers their requests",
                running=len(self._active),
                unconfirmed=self._unconfirmed,
            )
        await self._connector.close()

    def stopService(self):
        super().stopService()
        return defer.Deferred.fromCoroutine(self.close())

    # --- deliveries -------------------------------------------------------------------------

    def deliver(self, channel, message) -> None:
        session = self._session
        if session is None or channel is not session.consumer:
            return  # a channel already given up: the broker redelivers
        self.deliveries += 1
        content = message.content
        properties = content.properties
        body = content.body if isinstance(content.body, bytes) else content.body.encode()
        delivery = Delivery(
            session,
            message.delivery_tag,
            message.redelivered,
            raw(properties.get("reply-to")) or None,
            raw(properties.get("correlation-id")),
        )
        try:
            self._delivered(delivery, properties, body)
        except Exception:
            # E18: a bug, never a reason to take the consumer down.
            request_id = new_request_id()
            self.log.failure("unexpected error handling a delivery request_id={request_id}",
                             request_id=request_id)  # fmt: skip
            if delivery.reply_to is None:
                delivery.settle("reject")
            else:
                error = internal_error(request_id)
                self._send(
                    delivery,
                    reply_message(self.config, error, request_id, delivery.correlation_id),
                )

    def _delivered(self, delivery: Delivery, properties: dict, body: bytes) -> None:
        if self._stopping:
            delivery.settle("nack")
            return
        key = None
        if delivery.correlation_id is not None:
            key = (delivery.reply_to or b"", delivery.correlation_id)
            if delivery.redelivered and self._duplicate(key, delivery):
                return
        request_id = request_id_for(text(delivery.correlation_id), self._request_ids)
        if delivery.reply_to is not None and delivery.correlation_id is None:
            self.log.warn(
                "request has no correlation_id request_id={request_id}", request_id=request_id
            )
        try:
            invocation = parse_request(self.config, properties, body, request_id)
            outcome = self.dispatcher.submit(invocation)
        except ShuttingDown:
            delivery.settle("nack")
            return
        except ServiceError as error:
            self._rejected(delivery, error, request_id)
            return
        run = _Run(key, request_id, invocation, delivery)
        self._active[invocation] = run
        self._request_ids.add(request_id)
        if key is not None and key not in self._runs:
            self._runs[key] = run
        outcome.addCallbacks(self._finished, self._failed, (run,), None, (run,))

    def _duplicate(self, key: tuple, delivery: Delivery) -> bool:
        """§6: attach a redelivered copy to its run, or answer it from the kept reply."""
        run = self._runs.get(key)
        if run is not None:
            run.deliveries.append(delivery)
            self.log.info(
                "duplicate delivery attached request_id={request_id}", request_id=run.request_id
            )
            return True
        kept = self._cache.get(key)
        if kept is None:
            return False
        self.log.info("duplicate delivery answered from the kept reply correlation_id={cid}",
                      cid=text(delivery.correlation_id))  # fmt: skip
        if kept is _EVENT_DONE or delivery.reply_to is None:
            delivery.settle("ack")
        else:
            self._send(delivery, kept)
        return True

    def _rejected(self, delivery: Delivery, error: ServiceError, request_id: str) -> None:
        if delivery.reply_to is None:
            self.log.error(
                "event rejected reason={reason} request_id={request_id}: {message}",
                reason=error.error_type,
                request_id=request_id,
                message=error.message,
            )
            delivery.settle("reject")
            return
        self.log.info(
            "invoke rejected error={error} request_id={request_id}",
            error=error.error_type,
            request_id=request_id,
        )
        self._send(
            delivery, reply_message(self.config, error, request_id, delivery.correlation_id)
        )

    # --- outcomes ---------------------------------------------------------------------------

    def _forget(self, run: _Run) -> None:
        self._active.pop(run.invocation, None)
        self._request_ids.discard(run.request_id)
        if run.key is not None and self._runs.get(run.key) is run:
            del self._runs[run.key]

    def _finished(self, outcome, run: _Run) -> None:
        self._forget(run)
        first = run.deliveries[0]
        if run.invocation.event:
            if outcome.function_error:
                self.log.warn(
                    "event invocation failed request_id={request_id} error_type={error_type}",
                    request_id=run.request_id,
                    error_type=outcome.error_type,
                )
            else:
                self.log.info(
                    "event invocation succeeded request_id={request_id}", request_id=run.request_id
                )
            result: Reply | str = _EVENT_DONE
            for delivery in run.deliveries:
                delivery.settle("ack")
        else:
            reply = reply_message(self.config, outcome, run.request_id, first.correlation_id)
            self._answer(run, reply)
            result = reply
        if run.key is not None:
            self._cache.put(run.key, result)

    def _failed(self, failure: Failure, run: _Run) -> None:
        self._forget(run)
        if failure.check(defer.CancelledError):
            return  # withdrawn from the dispatcher queue: whoever withdrew it settles it
        if failure.check(ShuttingDown):
            for delivery in run.deliveries:
                delivery.settle("nack")
            return
        self.log.failure(
            "invocation failed request_id={request_id}", failure, request_id=run.request_id
        )
        if run.invocation.event:
            for delivery in run.deliveries:
                delivery.settle("reject")
            return
        error = internal_error(run.request_id)
        self._answer(
            run,
            reply_message(self.config, error, run.request_id, run.deliveries[0].correlation_id),
        )

    def _answer(self, run: _Run, reply: Reply) -> None:
        alive = [d for d in run.deliveries if d.alive]
        for delivery in alive:
            self._send(delivery, reply)
        if not alive:
            self._keep(run.deliveries[0], reply)

    # --- publishing and settling --------------------------------------------------------------

    def _send(self, delivery: Delivery, reply: Reply) -> None:
        """Publish the reply; ack the delivery once the broker confirms it."""
        if not delivery.alive:
            self._keep(delivery, reply)
            return
        try:
            confirmed = delivery.session.publish(delivery.reply_to, reply)
        except Closed:
            self._keep(delivery, reply)
            return
        self._unconfirmed += 1
        confirmed.addBoth(self._confirmed, delivery, reply)

    def _confirmed(self, result, delivery: Delivery, reply: Reply) -> None:
        self._unconfirmed -= 1
        if not isinstance(result, Failure):
            delivery.settle("ack")
        elif result.check(Nacked):
            self.log.warn("reply refused by the broker (basic.nack); request requeued")
            delivery.settle("nack")
        else:
            self._keep(delivery, reply)

    def _keep(self, delivery: Delivery, reply: Reply) -> None:
        """
        A reply whose delivery tag is dead: publish it on the current connection (no ack is
        possible), or hold it until the connection is back (at most ``capacity`` of them).
        """
        key = (delivery.reply_to, delivery.correlation_id or id(reply))
        self._kept[key] = (delivery.reply_to, reply)
        session = self._session
        if session is not None and session.alive:
            self._send_kept(session)
            return
        while len(self._kept) > self.config.capacity:
            self._kept.popitem(last=False)
            self.log.warn("too many replies waiting for the broker: the oldest is dropped")

    def _send_kept(self, session: Session) -> None:
        kept, self._kept = self._kept, OrderedDict()
        for key, (routing_key, reply) in kept.items():
            try:
                confirmed = session.publish(routing_key, reply)
            except Closed:
                self._kept[key] = (routing_key, reply)  # and the rest: wait for the next session
                continue
            confirmed.addErrback(
                lambda failure: self.log.info(
                    "kept reply not confirmed: {why}", why=str(failure.value)
                )
            )
        if kept:
            self.log.info("published {count} replies kept over the outage", count=len(kept))

    # --- broker notifications (Handlers) ----------------------------------------------------

    def returned(self, channel, message) -> None:
        self.log.warn(
            "reply unroutable reply_to={reply_to} correlation_id={correlation_id} code={code}",
            reply_to=text(message.routing_key),
            correlation_id=text(message.content.properties.get("correlation-id")),
            code=message.reply_code,
        )

    def cancelled(self, channel, message) -> None:
        self._reset(channel, "AMQP consumer cancelled by the broker (queue deleted?)")

    def channel_failed(self, channel, reason: Failure) -> None:
        self._reset(channel, f"AMQP channel closed by the broker: {reason.value}")

    def _reset(self, channel, why: str) -> None:
        """A channel of the session is gone: start over on a new connection (§7)."""
        session = self._session
        if session is None or not session.owns(channel):
            return
        if self._stopping and channel is session.consumer:
            return
        session.drop(why)
