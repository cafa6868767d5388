"""
The Runtime API 2018-06-01, as served to one instance (runtime-api.md).

Wire summary: ``GET /2018-06-01/runtime/invocation/next`` long-polls for an event (200, event
bytes, ``Lambda-Runtime-*`` headers); ``POST …/invocation/{id}/response`` and ``…/error`` and
``POST …/init/error`` answer 202 ``{"status":"OK"}``; misuse gets the exact bodies of §7 from
:func:`_error_answer`, the one error mapping of this wire. Every request on a listener belongs
to that listener's target (an :class:`lambdatx.instance.Instance`), whatever TCP connection it
uses.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Optional

from klein import Klein
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from .errors import (
    InvalidFunctionResponseMode,
    InvalidRequestID,
    InvalidStateTransition,
    InvokeTimeout,
    PayloadTooLarge,
    RuntimeApiError,
)
from .httpserver import LambdaSite, raw_response

PREFIX = "/2018-06-01"
H_REQUEST_ID = b"Lambda-Runtime-Aws-Request-Id"
H_DEADLINE = b"Lambda-Runtime-Deadline-Ms"
H_ARN = b"Lambda-Runtime-Invoked-Function-Arn"
H_TRACE = b"Lambda-Runtime-Trace-Id"
H_CLIENT_CONTEXT = b"Lambda-Runtime-Client-Context"
H_COGNITO = b"Lambda-Runtime-Cognito-Identity"
H_TENANT = b"Lambda-Runtime-Aws-Tenant-Id"
H_ERROR_TYPE = b"lambda-runtime-function-error-type"
H_ERROR_BODY = b"lambda-runtime-function-error-body"
H_RESPONSE_MODE = b"lambda-runtime-function-response-mode"
ERROR_CAUSE_TYPE = b"application/vnd.aws.lambda.error.cause+json"
FORM_TYPE = b"application/x-www-form-urlencoded"
ACCEPTED = b'{"status":"OK"}'
JSON_TYPE = b"application/json"

_POST_PATH = re.compile(r"^/2018-06-01/runtime/invocation/([^/]+)/(response|error)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

log = Logger()


_COMPACT = (",", ":")


def _dumps(doc) -> bytes:
    return json.dumps(doc, separators=_COMPACT).encode()


def _doc(message: str, error_type: str) -> bytes:
    return _dumps({"errorMessage": message, "errorType": error_type})


def _header_bytes(value: str) -> bytes:
    """HTTP header values arrive latin-1 decoded; AMQP ones may hold any text."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _error_answer(exc: Exception) -> tuple[int, bytes]:
    """The one mapping of runtime-side errors to (status, body)."""
    if isinstance(exc, InvalidRequestID):
        return 400, _doc("Invalid request ID", "InvalidRequestID")
    if isinstance(exc, InvalidStateTransition):
        return 403, _doc(
            f"State transition from {exc.from_state} to {exc.to_state} failed for runtime. "
            "Error: State transition is not allowed",
            "InvalidStateTransition",
        )
    if isinstance(exc, PayloadTooLarge):
        return 413, _doc(
            f"Exceeded maximum allowed payload size ({exc.limit} bytes).", "RequestEntityTooLarge"
        )
    if isinstance(exc, InvalidFunctionResponseMode):
        return 400, _doc("Invalid function response mode", "InvalidFunctionResponseMode")
    if isinstance(exc, InvokeTimeout):
        return 410, _doc("Invoke timeout", "InvokeTimeout")
    if isinstance(exc, NotFound):
        return 404, _doc("Unknown Runtime API route", "NotFound")
    if isinstance(exc, MethodNotAllowed):
        return 405, _doc("Method not allowed", "MethodNotAllowed")
    return 500, _doc("Internal Server Error", "InternalServerError")


def error_type_for_log(header: Optional[bytes], body: bytes) -> str:
    """Header value, else the body's errorType, else Runtime.Unknown; cleaned, ≤ 128 chars."""
    value = None
    if header:
        value = header.decode("utf-8", "replace")
    else:
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and isinstance(doc.get("errorType"), str):
                value = doc["errorType"]
        except (ValueError, RecursionError):
            pass
    if not value:
        value = "Runtime.Unknown"
    return _CONTROL.sub("", value)[:128]


def error_body(request, header: Optional[bytes]) -> bytes:
    """The document the caller gets for /error and /init/error (runtime-api.md §6)."""
    body = request.content.getvalue()
    if not body:
        error_type = (header or b"Runtime.Unknown").decode("utf-8", "replace")
        return _dumps({"errorType": error_type, "errorMessage": ""})
    ctype = request.requestHeaders.getRawHeaders(b"content-type")
    if ctype and ctype[0].split(b";")[0].strip().lower() == ERROR_CAUSE_TYPE:
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return body
        if isinstance(doc, dict) and "errorCause" in doc:
            del doc["errorCause"]
            return _dumps(doc)
    return body


def _trailer_error(trailers: dict[bytes, bytes]) -> Optional[bytes]:
    error_type = trailers.get(H_ERROR_TYPE)
    if not error_type:
        return None
    encoded = trailers.get(H_ERROR_BODY)
    if encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True)
            json.loads(decoded)
            return decoded
        except (binascii.Error, ValueError, RecursionError):
            pass
    return _dumps({"errorType": error_type.decode("utf-8", "replace"), "errorMessage": ""})


class RuntimeApi:
    """Klein routes of one Runtime API listener, bound to its target instance."""

    app = Klein()

    def __init__(self, target, config):
        self.target = target
        self.function_arn = config.function_arn

    def _answer(self, request, status: int, body: bytes):
        request.setResponseCode(status)
        request.responseHeaders.setRawHeaders(b"content-type", [JSON_TYPE])
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
        return body

    @app.handle_errors(RuntimeApiError, NotFound, MethodNotAllowed)
    def _errors(self, request, failure):
        status, body = _error_answer(failure.value)
        if status == 405:
            allowed = getattr(failure.value, "valid_methods", None) or []
            request.setHeader(b"allow", ", ".join(allowed).encode())
        if status in (403,):
            log.warn("runtime api: invalid state transition {detail}", detail=body.decode())
        return self._answer(request, status, body)

    @app.handle_errors(Exception)
    def _internal(self, request, failure):
        """A bug must not reach the runtime as an HTML page: log it, answer R07."""
        log.failure("runtime api: internal error", failure)
        status, body = _error_answer(failure.value)
        return self._answer(request, status, body)

    @app.route(PREFIX + "/runtime/invocation/next", methods=["GET"], merge_slashes=False)
    async def next_invocation(self, request):
        if request.method != b"GET":
            # werkzeug adds HEAD to GET routes; a HEAD must never take an invocation.
            raise MethodNotAllowed(valid_methods=["GET"])
        job = await self.target.next_invocation(lambda: request.channel is not None)
        inv = job.invocation
        headers = request.responseHeaders
        set_header = headers.setRawHeaders
        set_header(H_REQUEST_ID, [inv.request_id.encode()])
        set_header(H_DEADLINE, [b"%d" % job.deadline_ms])
        arn = self.function_arn
        if inv.qualifier:
            arn = f"{arn}:{inv.qualifier}"
        set_header(H_ARN, [arn.encode()])
        set_header(H_TRACE, [_header_bytes(inv.trace_id)])
        if inv.client_context is not None:
            set_header(H_CLIENT_CONTEXT, [inv.client_context.encode()])
        if inv.cognito_identity is not None:
            set_header(H_COGNITO, [inv.cognito_identity.encode()])
        if inv.tenant_id is not None:
            set_header(H_TENANT, [_header_bytes(inv.tenant_id)])
        set_header(b"content-type", [JSON_TYPE])
        payload = inv.payload
        set_header(b"content-length", [b"%d" % len(payload)])
        return payload

    @app.route(PREFIX + "/runtime/invocation/<request_id>/response", methods=["POST"], merge_slashes=False)
    def invocation_response(self, request, request_id):
        if request.body_too_large:
            raise PayloadTooLarge(self.target.config.max_response_bytes)
        mode = request.requestHeaders.getRawHeaders(H_RESPONSE_MODE)
        if mode and mode[0] not in (b"buffered", b"streaming"):
            self.target.invalid_response_mode(request_id, mode[0])
            raise InvalidFunctionResponseMode()
        trailers = request.trailers
        if trailers:
            doc = _trailer_error(trailers)
            if doc is not None:
                error_type = trailers[H_ERROR_TYPE].decode("utf-8", "replace")
                self.target.invocation_error(request_id, doc, _CONTROL.sub("", error_type)[:128])
                return self._answer(request, 202, ACCEPTED)
        ctype = request.requestHeaders.getRawHeaders(b"content-type")
        content_type = "application/json"
        if ctype and ctype[0].split(b";", 1)[0].strip().lower() != FORM_TYPE:
            content_type = ctype[0].decode("latin-1")
        self.target.invocation_response(request_id, request.content.getvalue(), content_type)
        return self._answer(request, 202, ACCEPTED)

    @app.route(PREFIX + "/runtime/invocation/<request_id>/error", methods=["POST"], merge_slashes=False)
    def invocation_error(self, request, request_id):
        if request.body_too_large:
            raise PayloadTooLarge(self.target.config.max_response_bytes)
        header = request.requestHeaders.getRawHeaders(H_ERROR_TYPE)
        header = header[0] if header else None
        body = error_body(request, header)
        self.target.invocation_error(request_id, body, error_type_for_log(header, body))
        return self._answer(request, 202, ACCEPTED)

    @app.route(PREFIX + "/runtime/init/error", methods=["POST"], merge_slashes=False)
    def init_error(self, request):
        if request.body_too_large:
            raise PayloadTooLarge(self.target.config.max_response_bytes)
        header = request.requestHeaders.getRawHeaders(H_ERROR_TYPE)
        header = header[0] if header else None
        body = error_body(request, header)
        self.target.init_error(body, error_type_for_log(header, body))
        return self._answer(request, 202, ACCEPTED)

    @app.route(PREFIX + "/ping", methods=["GET"], merge_slashes=False)
    def ping(self, request):
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"content-length", b"4")
        return b"pong"


def runtime_site(target, config) -> LambdaSite:
    """A quiet Site for ``target``'s listener, with the response limit and early 413."""
    limit = config.max_response_bytes

    def body_limit(request):
        return limit

    def on_too_large(request, length):
        match = _POST_PATH.match(request.raw_path.decode("latin-1"))
        if match is not None:
            target.response_too_large(match.group(1))
        status, body = _error_answer(PayloadTooLarge(limit))
        return raw_response(
            status, b"Request Entity Too Large", [(b"Content-Type", JSON_TYPE)], body
        )

    return LambdaSite(
        RuntimeApi(target, config).app.resource(),
        body_limit=body_limit,
        on_too_large=on_too_large,
        timeout=None,
    )
