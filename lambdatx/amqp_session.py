"""
One broker connection as the daemon's consumer uses it (amqp-rpc.md §2, §4-§5): the queue
declared (with the 406 fallback), QoS, a consumer channel whose deliveries are acked, nacked or
rejected there, and a publisher-confirm channel for the replies.

A :class:`Delivery` remembers its :class:`Session`; once the session is dead (connection lost),
its tag is dead too and settling it is a no-op: the broker has requeued it.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from .amqp_client import Closed, bounded
from .amqp_messages import Reply, text

_MAX_PREFETCH = 65535
_DIRECT_REPLY_TO = b"amq.rabbitmq.reply-to."


class Delivery:
    """A received request: where its tag lives, and where its reply goes."""

    __slots__ = ("session", "tag", "redelivered", "reply_to", "correlation_id")

    def __init__(self, session: "Session", tag: int, redelivered: bool,
                 reply_to: bytes | None, correlation_id: bytes | None):  # fmt: skip
        self.session = session
        self.tag = tag
        self.redelivered = redelivered
        #: Routing key of the reply, None for an Event.
        self.reply_to = reply_to
        self.correlation_id = correlation_id

    @property
    def alive(self) -> bool:
        return self.session.alive

    def settle(self, action: str) -> None:
        """``ack``, ``nack`` (requeue) or ``reject`` (no requeue); a no-op once the tag is dead."""
        self.session.settle(self, action)


class Session:
    """The consumer and publisher channels of one connection."""

    log = Logger()

    def __init__(self, protocol, consumer, publisher):
        self.protocol = protocol
        self.consumer = consumer
        self.publisher = publisher
        self.consumer_tag = f"lambdatx-{uuid.uuid4()}".encode("ascii")
        self.alive = True

    @classmethod
    async def open(cls, protocol, queue: bytes, prefetch: int) -> "Session":
        """Declare ``queue``, set QoS and open the confirm channel; consuming starts later."""
        consumer = await cls._declare(protocol, queue)
        await consumer.basic_qos(
            prefetch_size=0, prefetch_count=min(prefetch, _MAX_PREFETCH), global_=False
        )
        return cls(protocol, consumer, await protocol.confirm_channel())

    @classmethod
    async def _declare(cls, protocol, queue: bytes):
        """Durable, not auto-delete; on 406 the existing queue is consumed as it is."""
        channel = await protocol.new_channel()
        try:
            await channel.queue_declare(queue=queue, durable=True, auto_delete=False)
            return channel
        except Closed as error:
            reason = error.args[0] if error.args else None
            if getattr(reason, "reply_code", None) != 406:
                raise
        cls.log.warn(
            "queue exists with different properties; using it as is queue={queue} reason={reason}",
            queue=text(queue),
            reason=text(getattr(reason, "reply_text", None)),
        )
        channel = await protocol.new_channel()
        await channel.queue_declare(queue=queue, passive=True)
        return channel

    async def consume(self, queue: bytes) -> None:
        await self.consumer.basic_consume(
            queue=queue, consumer_tag=self.consumer_tag, no_ack=False
        )

    async def cancel(self, timeout: float, clock) -> None:
        """``basic.cancel``, waiting for cancel-ok at most ``timeout`` seconds."""
        if self.alive:
            await bounded(
                self.consumer.basic_cancel(consumer_tag=self.consumer_tag), timeout, clock
            )

    def owns(self, channel) -> bool:
        return channel is self.consumer or channel is self.publisher.channel

    def publish(self, routing_key: Any, reply: Reply) -> defer.Deferred:
        """Publish a reply; the Deferred fires on the broker's confirm. Raises Closed."""
        return self.publisher.publish(
            routing_key, reply.body, reply.properties, mandatory=_mandatory(routing_key)
        )

    def settle(self, delivery: Delivery, action: str) -> None:
        """``ack``, ``nack`` (requeue) or ``reject`` (no requeue) a delivery of this session."""
        if not self.alive:
            return  # a dead tag: the broker has requeued the delivery already
        channel = self.consumer
        if action == "ack":
            sent = channel.basic_ack(delivery_tag=delivery.tag, multiple=False)
        elif action == "nack":
            sent = channel.basic_nack(delivery_tag=delivery.tag, multiple=False, requeue=True)
        else:
            sent = channel.basic_reject(delivery_tag=delivery.tag, requeue=False)
        sent.addErrback(
            lambda failure: self.log.debug(
                "{action} not sent: {why}", action=action, why=str(failure.value)
            )
        )

    def drop(self, why: str) -> None:
        """Give the connection up (a channel failed): the connector reconnects."""
        self.log.warn("{why}; reconnecting", why=why)
        self.protocol.transport.loseConnection()


def _mandatory(reply_to: bytes) -> bool:
    """
    Replies are published ``mandatory`` so that a vanished reply queue is noticed (A02), except
    to direct reply-to names: RabbitMQ (3.10 at least) returns every mandatory message sent to
    one, delivered or not, so there a return would say nothing and cost three frames per reply.
    """
    return not reply_to.startswith(_DIRECT_REPLY_TO)
