"""
The Invoke API's HTTP side, shared by the daemon's routes (``lambdatx.invoke_api``) and the
gateway's (``lambdatx.gateway``): request header names, reading a request, writing an answer.

Protocol (spec/invoke-api.md): every answer carries ``x-amzn-RequestId``, assigned once per
request by :func:`assign_request_id`. A service error is answered in the wire shape of
``lambdatx.wire`` (:func:`error_answer`), with an explicit ``Content-Length``; a route that does
not exist is ``UnknownOperationException`` (404, or 405 with ``Allow`` for a known route's wrong
method); an unexpected exception is E18 (500, logged with its traceback). Bodiless answers (202,
204) carry no ``Content-Type``; the OpenFaaS probes answer ``text/plain``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from lambdatx.errors import (
    InvalidRequestContentException,
    ServiceError,
    UnknownOperationException,
)
from lambdatx.invocation import new_request_id
from lambdatx.validate import COGNITO_IDENTITY_INVALID
from lambdatx.wire import REQUEST_ID, Headers, error_response, internal_error

# Request header names, lowercase as twisted.web stores them.
INVOCATION_TYPE = b"x-amz-invocation-type"
LOG_TYPE = b"x-amz-log-type"
CLIENT_CONTEXT = b"x-amz-client-context"
TRACE_ID = b"x-amzn-trace-id"
TENANT_ID = b"x-amz-tenant-id"
COGNITO_IDENTITY = b"x-lambdatx-cognito-identity"
CONTENT_ENCODING = b"content-encoding"
CONTENT_LENGTH = b"content-length"
CONTENT_TYPE = b"content-type"
#: Response header names.
RESPONSE_LENGTH = b"Content-Length"

#: Request attribute holding the request id once one is assigned.
REQUEST_ID_ATTR = "lambdatx_request_id"
_ZERO = [b"0"]
_TEXT_PLAIN = b"text/plain; charset=utf-8"


# --- reading a request --------------------------------------------------------------------


def last_text(values: Any) -> str | None:
    """The last value of a header as text (latin-1 keeps every byte), or None when absent."""
    return values[-1].decode("latin-1") if values else None


def cognito_identity(values: Any) -> str | None:
    """The last ``X-Lambdatx-Cognito-Identity`` value, which must be UTF-8 (E03), or None."""
    try:
        return values[-1].decode("utf-8") if values else None
    except UnicodeDecodeError:
        raise InvalidRequestContentException(COGNITO_IDENTITY_INVALID) from None


def query_qualifier(request: Request) -> str | None:
    """The ``Qualifier`` query parameter, or None."""
    # Parsed from the URI rather than request.args: twisted.web also fills args from a
    # form-encoded body, and curl labels every -d body application/x-www-form-urlencoded.
    query = request.uri.partition(b"?")[2]
    if not query:
        return None
    values = parse_qs(query.decode("latin-1"), keep_blank_values=True).get("Qualifier")
    return values[0] if values else None


def request_method(request: Request) -> str:
    return request.method.decode("latin-1")


def request_path(request: Request) -> str:
    return request.path.decode("latin-1")


def assign_request_id(request: Request) -> str:
    """The request's id, assigned (and set as ``x-amzn-RequestId``) on first use."""
    request_id: str | None = getattr(request, REQUEST_ID_ATTR, None)
    if request_id is None:
        request_id = new_request_id()
        setattr(request, REQUEST_ID_ATTR, request_id)
        request.responseHeaders.setRawHeaders(REQUEST_ID, [request_id.encode("ascii")])
    return request_id


# --- answers --------------------------------------------------------------------------------


#: Reason phrases twisted.web does not know ("429 Unknown Status" otherwise).
_PHRASES = {429: b"Too Many Requests"}


def answer(request: Request, status: int, headers: Headers, body: bytes) -> bytes:
    """Status, headers and ``body``, with its ``Content-Length``."""
    request.setResponseCode(status, _PHRASES.get(status))
    set_header = request.responseHeaders.setRawHeaders
    for name, value in headers:
        set_header(name, [value])
    # A known length spares the caller chunked decoding (twisted.web chunks otherwise).
    set_header(RESPONSE_LENGTH, [b"%d" % len(body)])
    return body


def error_answer(request: Request, error: ServiceError, allow: bytes = b"POST") -> bytes:
    """Answer ``error`` (errors.md E01-E18); ``allow`` is the ``Allow`` value of a 405."""
    status, headers, body = error_response(error, assign_request_id(request), allow)
    return answer(request, status, headers, body)


def empty_answer(request: Request, status: int) -> bytes:
    """A bodiless answer (202 for ``Event``, 204 for ``DryRun``)."""
    request.setResponseCode(status)
    # No body, so no Content-Type (twisted.web would add text/html).
    request.defaultContentType = None
    if status != 204:
        request.responseHeaders.setRawHeaders(RESPONSE_LENGTH, _ZERO)
    return b""


def plain_answer(request: Request, ok: bool) -> bytes:
    """An OpenFaaS probe's answer: 200 ``OK`` or 503 ``Service Unavailable``."""
    assign_request_id(request)
    if ok:
        return answer(request, 200, [(CONTENT_TYPE, _TEXT_PLAIN)], b"OK")
    return answer(request, 503, [(CONTENT_TYPE, _TEXT_PLAIN)], b"Service Unavailable")


def routing_error_answer(
    request: Request, exception: HTTPException, log: Logger, hide_405: bool = False
) -> bytes:
    """
    ``UnknownOperationException`` for a request no route takes: 405 with ``Allow`` when only
    the method is wrong (unless ``hide_405``: the route is off), else 404.
    """
    method, path = request_method(request), request_path(request)
    if isinstance(exception, MethodNotAllowed) and not hide_405:
        log.debug("method not allowed {method} {path}", method=method, path=path)
        allow = ", ".join(exception.valid_methods or ("POST",)).encode("ascii")
        return error_answer(request, UnknownOperationException(method, path, allowed=True), allow)
    # NotFound, and whatever else routing raises (a redirect would be a lie here).
    log.debug("unknown route {method} {path}", method=method, path=path)
    return error_answer(request, UnknownOperationException(method, path))


def unexpected_error_answer(request: Request, failure: Failure, log: Logger) -> bytes:
    """E18 for an exception that is a bug, logged with its traceback."""
    request_id = assign_request_id(request)
    log.failure("internal error request_id={request_id}", failure, request_id=request_id)
    return error_answer(request, internal_error(request_id))
