"""
AMQP-RPC messages (amqp-rpc.md §3-§4): a request message → an :class:`Invocation`, and the one
mapping of an outcome or a service error → a reply message.

Request: the body is the payload; ``content_encoding`` must be absent or ``identity``; the
headers of §3 are matched case-insensitively and must be strings (byte strings are decoded as
UTF-8); everything else goes through :func:`lambdatx.validate.build_invocation`, exactly as over
HTTP. Reply: the body, status and headers the same request would get over HTTP
(:mod:`lambdatx.wire`), the status as the AMQP integer header ``X-Lambdatx-Status-Code``.

Properties are keyed by the spec's hyphenated names (``correlation-id``, ``reply-to``); short
strings are given to txAMQP as bytes (``lambdatx.amqp_client``).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from typing import Any, Mapping, NamedTuple

from lambdatx.config import Config
from lambdatx.errors import InvalidRequestContentException, ServiceError
from lambdatx.invocation import Invocation, Outcome, new_request_id
from lambdatx.validate import build_invocation, check_qualifier
from lambdatx.wire import (
    APPLICATION_JSON,
    CONTENT_TYPE,
    ERROR_TYPE,
    EXECUTED_VERSION,
    FUNCTION_ERROR,
    LOG_RESULT,
    error_response,
    outcome_headers,
)

STATUS_CODE = "X-Lambdatx-Status-Code"
REQUEST_ID = "x-amzn-RequestId"
#: Request headers (lowercase) → (name in messages, build_invocation argument).
REQUEST_HEADERS = {
    "x-amz-client-context": ("X-Amz-Client-Context", "client_context"),
    "x-amzn-trace-id": ("X-Amzn-Trace-Id", "trace_id"),
    "x-amz-log-type": ("X-Amz-Log-Type", "log_type"),
    "x-amz-tenant-id": ("X-Amz-Tenant-Id", "tenant_id"),
    "x-lambdatx-qualifier": ("X-Lambdatx-Qualifier", "qualifier"),
    "x-lambdatx-cognito-identity": ("X-Lambdatx-Cognito-Identity", "cognito_identity"),
}
#: Outcome/error headers copied from the HTTP answer onto the reply (besides Content-Type).
_COPIED = {ERROR_TYPE, EXECUTED_VERSION, FUNCTION_ERROR, LOG_RESULT}
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Kept replies answer redelivered copies for this long (amqp-rpc.md §6)…
CACHE_SECONDS = 60.0
#: …and at most this many.
CACHE_ENTRIES = 1000


def text(value: Any) -> str | None:
    """A txAMQP short string (str, or bytes when it was not UTF-8) as text; None stays None."""
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "replace")


def raw(value: Any) -> bytes | None:
    """A short string as the bytes it was sent as (txAMQP decoded UTF-8 ones to str)."""
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def request_id_for(correlation_id: str | None, in_flight: set[str]) -> str:
    """The correlation id, lowercased, if it is a UUID not in flight here; else a new UUID v4."""
    if correlation_id and _UUID.fullmatch(correlation_id):
        candidate = correlation_id.lower()
        if candidate not in in_flight:
            return candidate
    return new_request_id()


def request_headers(table: Mapping | None) -> dict[str, str]:
    """The §3 headers present, as build_invocation arguments; E11 for a non-string value."""
    found: dict[str, str] = {}
    for name, value in (table or {}).items():
        known = REQUEST_HEADERS.get((text(name) or "").lower())
        if known is None:
            continue
        shown, argument = known
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise _not_a_string(shown) from None
        elif not isinstance(value, str):
            raise _not_a_string(shown)
        found[argument] = value
    return found


def _not_a_string(name: str) -> InvalidRequestContentException:
    return InvalidRequestContentException(f"Header {name} must be a string.")


def parse_request(
    config: Config, properties: Mapping[str, Any], body: bytes, request_id: str
) -> Invocation:
    """
    Validate a request message and build its invocation (raises the E03-E14 ServiceErrors).

    No ``reply_to`` makes it an ``Event`` invocation (amqp-rpc.md §3).
    """
    headers = request_headers(properties.get("headers"))
    qualifier = check_qualifier(config, headers.pop("qualifier", None))
    return build_invocation(
        config,
        payload=body,
        event=not properties.get("reply-to"),
        qualifier=qualifier,
        client_context=headers.get("client_context"),
        trace_id=headers.get("trace_id"),
        tenant_id=headers.get("tenant_id"),
        cognito_identity=headers.get("cognito_identity"),
        log_type=headers.get("log_type"),
        content_encoding=text(properties.get("content-encoding")),
        request_id=request_id,
        source="amqp",
    )


class Reply(NamedTuple):
    """A reply message: txAMQP properties, body, and the HTTP status it mirrors."""

    properties: dict[str, Any]
    body: bytes
    status: int


def reply_message(
    config: Config, result: Outcome | ServiceError, request_id: str, correlation_id: bytes | None
) -> Reply:
    """The one mapping of an outcome or a service error to a reply (amqp-rpc.md §4)."""
    if isinstance(result, ServiceError):
        status, pairs, body = error_response(result, request_id)
    else:
        status, pairs, body = 200, outcome_headers(result, config), result.body
    headers: dict[str, Any] = {REQUEST_ID: request_id, STATUS_CODE: status}
    content_type = APPLICATION_JSON
    for name, value in pairs:
        if name == CONTENT_TYPE:
            content_type = value
        elif name in _COPIED:
            headers[name.decode("ascii")] = value.decode("utf-8")
    properties: dict[str, Any] = {
        "content-type": content_type,
        "delivery-mode": 1,
        "headers": headers,
    }
    if correlation_id is not None:
        properties["correlation-id"] = correlation_id
    return Reply(properties, body, status)


class ReplyCache:
    """Replies of completed invocations by (reply_to, correlation_id): 60 s, 1000 entries."""

    def __init__(self, clock=None, seconds: float = CACHE_SECONDS, entries: int = CACHE_ENTRIES):
        self._now = clock.seconds if clock is not None else time.monotonic
        self._seconds = seconds
        self._entries = entries
        self._items: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()

    def put(self, key: tuple, value: Any) -> None:
        self._items[key] = (self._now() + self._seconds, value)
        self._items.move_to_end(key)
        while len(self._items) > self._entries:
            self._items.popitem(last=False)

    def get(self, key: tuple) -> Any:
        found = self._items.get(key)
        if found is None:
            return None
        expires, value = found
        if self._now() >= expires:
            del self._items[key]
            return None
        return value

    def __len__(self) -> int:
        return len(self._items)
