"""In-memory HTTP for the Invoke API tests (the daemon's routes and the gateway's): one request
through ``StubTreq``, response headers, and the checks every service error passes."""

from __future__ import annotations

import json
import re

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def call(treq, method, url, body=b"", headers=None):
    """Make a request through StubTreq; return (response, body bytes)."""
    results = []
    d = treq.request(method, url, data=body, headers=headers or {})
    d.addCallback(
        lambda response: response.content().addCallback(
            lambda content: results.append((response, content))
        )
    )
    treq.flush()
    assert results, "no response"
    return results[0]


def header(response, name):
    values = response.headers.getRawHeaders(name.encode())
    return values[-1].decode() if values else None


def service_error(response, content, status, error_type):
    """Check the status and headers of a service error; return its JSON document."""
    assert response.code == status
    assert header(response, "x-amzn-ErrorType") == error_type
    assert header(response, "Content-Type") == "application/json"
    assert UUID4.fullmatch(header(response, "x-amzn-RequestId"))
    return json.loads(content)
