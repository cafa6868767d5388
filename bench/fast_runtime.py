#!/usr/bin/env python3
"""
The benchmark's fixed fast runtime: the smallest Runtime API client that is still correct.

One keep-alive ``http.client`` connection to ``$AWS_LAMBDA_RUNTIME_API``; a loop of
``GET /2018-06-01/runtime/invocation/next`` then ``POST .../<request id>/response`` with the
event body echoed back unchanged. No JSON decoding, no logging, no context object: whatever
time an invoke takes beyond this loop belongs to the daemon.

(The reference figures were taken with a Go echo runtime; there is no Go toolchain on this
machine, so this Python one stands in. It costs roughly 60-100 us per invoke of CPU.)
"""

import http.client
import os
import sys

PREFIX = "/2018-06-01/runtime/invocation/"


def main() -> int:
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rpartition(":")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port))
    conn.connect()
    # Small request/response pairs on one connection: Nagle would add 40 ms stalls.
    import socket

    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = conn.request
    getresponse = conn.getresponse
    headers = {"Content-Type": "application/json"}
    while True:
        request("GET", PREFIX + "next")
        answer = getresponse()
        event = answer.read()
        if answer.status != 200:
            # 4xx/5xx on /next means the daemon is going away or refused us: stop quietly.
            return 0
        request_id = answer.getheader("Lambda-Runtime-Aws-Request-Id")
        request("POST", PREFIX + request_id + "/response", event, headers)
        getresponse().read()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConnectionError, http.client.HTTPException, KeyboardInterrupt):
        sys.exit(0)
