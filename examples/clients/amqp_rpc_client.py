#!/usr/bin/env python3
"""
Invoke a lambdatx function over AMQP-RPC with pika: N requests, K in flight, then a summary.

    python amqp_rpc_client.py echo                       # 1 request, prints the reply
    python amqp_rpc_client.py echo -n 10000 -k 32        # load: invocations per second
    python amqp_rpc_client.py echo --payload '{"a": 1}' --uri amqp://user:pw@rabbit:5672/%2F

The recipe (docs/amqp.md): one connection and channel; consume the direct reply-to pseudo-queue
``amq.rabbitmq.reply-to`` (no_ack) before publishing; publish each request to the default
exchange with routing key = function name, ``reply_to=amq.rabbitmq.reply-to``, a fresh UUID as
``correlation_id`` (it becomes the request id) and ``mandatory=True`` (a ``basic.return`` means no
queue: no such function); match replies by ``correlation_id`` and read the outcome from the
headers: ``X-Amz-Function-Error`` (the function failed), ``x-amzn-ErrorType`` (refused, did not
run), ``X-Lambdatx-Status-Code`` (the HTTP status the same request would get).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import pika

REPLY_TO = "amq.rabbitmq.reply-to"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("function", help="function name = queue name")
    parser.add_argument("-n", "--requests", type=int, default=1, help="requests to send (1)")
    parser.add_argument("-k", "--in-flight", type=int, default=1, help="unanswered at most (1)")
    parser.add_argument("--payload", default='{"hello": "amqp"}', help="request body (JSON)")
    parser.add_argument("--uri", default="amqp://guest:guest@localhost:5672/%2F")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait overall")
    args = parser.parse_args(argv)

    connection = pika.BlockingConnection(pika.URLParameters(args.uri))
    channel = connection.channel()
    pending: dict[str, float] = {}
    stats = {"ok": 0, "function_error": 0, "service_error": 0, "returned": 0}
    last: list[tuple[dict, bytes]] = []

    def on_reply(_channel, _method, properties, body):
        if pending.pop(properties.correlation_id, None) is None:
            return  # a duplicate (at-least-once delivery): already answered
        headers = properties.headers or {}
        if "x-amzn-ErrorType" in headers:
            stats["service_error"] += 1
        elif "X-Amz-Function-Error" in headers:
            stats["function_error"] += 1
        else:
            stats["ok"] += 1
        last[:] = [(headers, body)]

    def on_return(_channel, _method, properties, _body):
        if pending.pop(properties.correlation_id, None) is not None:
            stats["returned"] += 1

    channel.basic_consume(REPLY_TO, on_reply, auto_ack=True)
    channel.add_on_return_callback(on_return)

    body = args.payload.encode()
    sent = 0
    started = time.monotonic()
    deadline = started + args.timeout
    while (sent < args.requests or pending) and time.monotonic() < deadline:
        while sent < args.requests and len(pending) < args.in_flight:
            correlation_id = str(uuid.uuid4())
            pending[correlation_id] = time.monotonic()
            properties = pika.BasicProperties(
                reply_to=REPLY_TO, correlation_id=correlation_id, content_type="application/json"
            )
            channel.basic_publish("", args.function, body, properties, mandatory=True)
            sent += 1
        connection.process_data_events(time_limit=0.01)
    elapsed = time.monotonic() - started
    connection.close()

    answered = stats["ok"] + stats["function_error"] + stats["service_error"]
    if args.requests == 1 and last:
        headers, reply = last[0]
        print(f"status {headers.get('X-Lambdatx-Status-Code')} {headers}")
        print(reply.decode("utf-8", "replace"))
    print(
        f"{answered} answered of {args.requests} in {elapsed:.2f} s with {args.in_flight} in "
        f"flight: {answered / elapsed:.0f} invocations/s"
    )
    print(
        f"errors: {stats['function_error']} function, {stats['service_error']} service, "
        f"{stats['returned']} returned (no such function), {len(pending)} unanswered"
    )
    return 0 if answered == args.requests and answered == stats["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
