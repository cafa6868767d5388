"""
Invocations and their outcomes.

An :class:`Invocation` is one request to run the function, from any source (HTTP, AMQP,
gateway), already validated. An :class:`Outcome` is what its caller gets when the function was
invoked: a result or a function error (always HTTP 200). Refusals before the function runs are
:class:`lambdatx.errors.ServiceError` exceptions instead.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

JSON = "application/json"


def new_request_id() -> str:
    """A fresh request id: lowercase UUID v4."""
    return str(uuid.uuid4())


class Invocation:
    """One validated request to run the function."""

    __slots__ = (
        "request_id",
        "payload",
        "event",
        "qualifier",
        "client_context",
        "cognito_identity",
        "tenant_id",
        "trace_id",
        "tail",
        "source",
    )

    def __init__(
        self,
        request_id: str,
        payload: bytes,
        *,
        event: bool = False,
        qualifier: str | None = None,
        client_context: str | None = None,
        cognito_identity: str | None = None,
        tenant_id: str | None = None,
        trace_id: str | None = None,
        tail: bool = False,
        source: str = "http",
    ):
        self.request_id = request_id
        #: The event bytes exactly as the runtime receives them (``{}`` for an empty body).
        self.payload = payload
        #: ``X-Amz-Invocation-Type: Event``: answered 202 at once, outcome only logged.
        self.event = event
        #: The qualifier the caller named, appended to the invoked function ARN.
        self.qualifier = qualifier
        #: Decoded client context JSON text (synchronous invocations only).
        self.client_context = client_context
        self.cognito_identity = cognito_identity
        self.tenant_id = tenant_id
        #: ``X-Amzn-Trace-Id`` verbatim, or a generated one.
        self.trace_id = trace_id
        #: ``X-Amz-Log-Type: Tail``.
        self.tail = tail
        self.source = source

    def __repr__(self) -> str:
        return f"<Invocation {self.request_id} {len(self.payload)}B>"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the caller of an invocation that reached the function gets (HTTP 200)."""

    body: bytes
    content_type: str = JSON
    #: True for every failure inside or to the function (``X-Amz-Function-Error: Unhandled``).
    function_error: bool = False
    #: The error type, for logs and REPORT lines (``Sandbox.Timedout``, ``Runtime.ExitError``...).
    error_type: str | None = None
    #: Base64 log tail for ``X-Amz-Log-Type: Tail``.
    log_result: str | None = None

    def with_log_result(self, log_result: str) -> "Outcome":
        return Outcome(
            self.body, self.content_type, self.function_error, self.error_type, log_result
        )


def error_document(error_type: str, message: str) -> bytes:
    """The Lambda error JSON ``{"errorType":…,"errorMessage":…}``."""
    return json.dumps(
        {"errorType": error_type, "errorMessage": message}, separators=(",", ":")
    ).encode()


def function_failure(error_type: str, message: str) -> Outcome:
    """A platform-made function error (timeout, crash, oversize response...)."""
    return Outcome(error_document(error_type, message), JSON, True, error_type)


def timed_out(request_id: str, seconds: float) -> Outcome:
    return function_failure(
        "Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after {seconds:.2f} seconds"
    )


def exit_error(request_id: str, reason: str | None) -> Outcome:
    """``reason`` is ``exit status 7`` / ``signal: killed``; None for a clean exit (status 0)."""
    if reason is None:
        message = f"RequestId: {request_id} Error: Runtime exited without providing a reason"
    else:
        message = f"RequestId: {request_id} Error: Runtime exited with error: {reason}"
    return function_failure("Runtime.ExitError", message)
