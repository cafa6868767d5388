"""
The Invoke API (``2015-03-31``) served to callers: curl, awscli, boto3 and every AWS SDK.

Protocol (spec/invoke-api.md): ``POST /2015-03-31/functions/{FunctionName}/invocations
[?Qualifier=Q]`` with the event as body. ``X-Amz-Invocation-Type`` picks ``RequestResponse``
(200 with the function's result, or its error document and ``X-Amz-Function-Error``), ``Event``
(202 at once, outcome only logged) or ``DryRun`` (204, nothing runs). Refusals are service errors
in the AWS REST-JSON shape (``lambdatx.wire``). Every response carries ``x-amzn-RequestId``.
With ``ENABLE_OPENFAAS``: ``POST /`` (invoke, no qualifier), ``GET /_/health``, ``GET /_/ready``.

The routes only translate: validation is ``lambdatx.validate``, running is the dispatcher's
``submit``, the wire shape is ``lambdatx.wire``. A caller that disconnects cancels the route's
Deferred, which Klein propagates to the Deferred ``submit`` returned.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import BaseConverter

from lambdatx.config import Config
from lambdatx.errors import (
    InvalidRequestContentException,
    ServiceError,
    ShuttingDown,
    TooManyRequestsException,
    UnknownOperationException,
)
from lambdatx.invocation import Outcome, new_request_id
from lambdatx.validate import (
    COGNITO_IDENTITY_INVALID,
    DRY_RUN,
    EVENT,
    build_invocation,
    check_invocation_type,
    resolve_function,
    too_large,
)
from lambdatx.wire import REQUEST_ID, Headers, error_response, internal_error, outcome_headers

# Request header names, lowercase as twisted.web stores them.
INVOCATION_TYPE = b"x-amz-invocation-type"
LOG_TYPE = b"x-amz-log-type"
CLIENT_CONTEXT = b"x-amz-client-context"
TRACE_ID = b"x-amzn-trace-id"
TENANT_ID = b"x-amz-tenant-id"
COGNITO_IDENTITY = b"x-lambdatx-cognito-identity"
CONTENT_ENCODING = b"content-encoding"
CONTENT_LENGTH = b"content-length"
_RESPONSE_LENGTH = b"Content-Length"
_ZERO = [b"0"]

_EVENT = EVENT.encode("ascii")
_DRY_RUN = DRY_RUN.encode("ascii")
_TEXT_PLAIN = [b"text/plain; charset=utf-8"]
#: Request attribute holding the request id once one is assigned.
_REQUEST_ID_ATTR = "lambdatx_request_id"
_OPENFAAS_PATHS = frozenset((b"/", b"/_/health", b"/_/ready"))

INVOKE_ROUTE = "/2015-03-31/functions/<function_name:function_name>/invocations"


class FunctionNameConverter(BaseConverter):
    """
    ``{FunctionName}`` as twisted.web percent-decoded it (``%3A`` → ``:``, ``%24`` → ``$``).

    It matches any text, even empty or with ``/`` (from ``%2F``), so that every malformed name
    reaches :func:`lambdatx.validate.resolve_function` and gets its ``ValidationException``.
    """

    regex = ".*"
    part_isolating = False


def _last(values: Any) -> str | None:
    """The last value of a header as text (latin-1 keeps every byte), or None when absent."""
    return values[-1].decode("latin-1") if values else None


def _query_qualifier(request: Request) -> str | None:
    # Parsed from the URI rather than request.args: twisted.web also fills args from a
    # form-encoded body, and curl labels every -d body application/x-www-form-urlencoded.
    query = request.uri.partition(b"?")[2]
    if not query:
        return None
    values = parse_qs(query.decode("latin-1"), keep_blank_values=True).get("Qualifier")
    return values[0] if values else None


def _invocation_type(request: Request) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(INVOCATION_TYPE)
    return values[-1] if values else None


def invoke_body_limit(config: Config, request: Request) -> int | None:
    """
    The body size the Invoke API accepts for ``request``, or None when the body is discarded.

    ``Event`` bodies are bounded by ``max_event_bytes``, ``DryRun`` bodies are ignored, anything
    else (including an invalid type, refused later) by ``max_request_bytes``.
    """
    invocation_type = _invocation_type(request)
    if invocation_type == _EVENT:
        return config.max_event_bytes
    if invocation_type == _DRY_RUN:
        return None
    return config.max_request_bytes


def invoke_too_large_response(
    config: Config, request: Request, length: int
) -> tuple[int, Headers, bytes]:
    """The 413 (E12/E13) for a body of ``length`` bytes, with a fresh request id."""
    error = too_large(config, _invocation_type(request) == _EVENT, length)
    return error_response(error, getattr(request, _REQUEST_ID_ATTR, None) or new_request_id())


def _too_large_length(request: Request, limit: int) -> int:
    length = getattr(request, "body_length", None)
    if length is None:
        declared = request.requestHeaders.getRawHeaders(CONTENT_LENGTH)
        length = int(declared[-1]) if declared and declared[-1].isdigit() else limit + 1
    return length


class InvokeApi:
    """The Invoke API as a Klein app; ``InvokeApi(config, dispatcher).app.resource()``."""

    app = Klein()
    app.url_map.converters["function_name"] = FunctionNameConverter
    log = Logger()

    def __init__(self, config: Config, dispatcher: Any, log: Logger | None = None):
        self._config = config
        #: ``submit(invocation) -> Deferred[Outcome]``, ``shutting_down``, ``ready``.
        self._dispatcher = dispatcher
        if log is not None:
            self.log = log

    # --- routes -------------------------------------------------------------------------------

    @app.route(INVOKE_ROUTE, methods=["POST"], merge_slashes=False)
    async def invoke(self, request: Request, function_name: str) -> bytes:
        request_id = _assign_request_id(request)
        qualifier = resolve_function(self._config, function_name, _query_qualifier(request))
        return await self._invoke(request, request_id, qualifier)

    @app.route("/", methods=["POST"])
    async def openfaas_invoke(self, request: Request) -> bytes:
        self._require_openfaas(request)
        return await self._invoke(request, _assign_request_id(request), None)

    @app.route("/_/health", methods=["GET"])
    def health(self, request: Request) -> bytes:
        self._require_openfaas(request)
        return _plain(request, not self._dispatcher.shutting_down)

    @app.route("/_/ready", methods=["GET"])
    def ready(self, request: Request) -> bytes:
        self._require_openfaas(request)
        return _plain(request, self._dispatcher.ready)

    # --- invocation -------------------------------------------------------------------------

    async def _invoke(self, request: Request, request_id: str, qualifier: str | None) -> bytes:
        config = self._config
        get = request.requestHeaders.getRawHeaders
        invocation_type = check_invocation_type(_last(get(INVOCATION_TYPE)))
        dry_run = invocation_type == DRY_RUN
        event = invocation_type == EVENT
        if dry_run:
            payload = b""
        elif getattr(request, "body_too_large", False):
            limit = config.max_event_bytes if event else config.max_request_bytes
            raise too_large(config, event, _too_large_length(request, limit))
        else:
            content = request.content
            payload = content.read() if content is not None else b""
        cognito = get(COGNITO_IDENTITY)
        try:
            cognito_identity = cognito[-1].decode("utf-8") if cognito else None
        except UnicodeDecodeError:
            raise InvalidRequestContentException(COGNITO_IDENTITY_INVALID) from None
        invocation = build_invocation(
            config,
            payload=payload,
            event=event,
            qualifier=qualifier,
            client_context=_last(get(CLIENT_CONTEXT)),
            trace_id=_last(get(TRACE_ID)),
            tenant_id=_last(get(TENANT_ID)),
            cognito_identity=cognito_identity,
            log_type=_last(get(LOG_TYPE)),
            content_encoding=_last(get(CONTENT_ENCODING)),
            request_id=request_id,
        )
        if dry_run:
            return _empty(request, 204)
        submitted = self._dispatcher.submit(invocation)
        if event:
            submitted.addCallbacks(
                self._event_finished,
                self._event_failed,
                callbackArgs=(request_id,),
                errbackArgs=(request_id,),
            )
            return _empty(request, 202)
        outcome: Outcome = await submitted
        set_header = request.responseHeaders.setRawHeaders
        for name, value in outcome_headers(outcome, config):
            set_header(name, [value])
        body = outcome.body
        # A known length spares the caller chunked decoding (twisted.web chunks otherwise).
        set_header(_RESPONSE_LENGTH, [b"%d" % len(body)])
        return body

    def _event_finished(self, outcome: Outcome, request_id: str) -> None:
        if outcome.function_error:
            self.log.warn(
                "event invocation failed request_id={request_id} error_type={error_type}",
                request_id=request_id,
                error_type=outcome.error_type,
            )
        else:
            self.log.info(
                "event invocation succeeded request_id={request_id}", request_id=request_id
            )

    def _event_failed(self, failure: Failure, request_id: str) -> None:
        if failure.check(ServiceError):
            error = failure.value
            self.log.warn(
                "event invocation not run request_id={request_id} error={error}: {message}",
                request_id=request_id,
                error=error.error_type,
                message=error.message,
            )
        else:
            self.log.failure(
                "event invocation failed request_id={request_id}", failure, request_id=request_id
            )

    def _require_openfaas(self, request: Request) -> None:
        if not self._config.enable_openfaas:
            raise UnknownOperationException(_method(request), _path(request))

    # --- errors: the one table --------------------------------------------------------------

    @app.handle_errors(ServiceError)
    def _service_error(self, request: Request, failure: Failure) -> bytes:
        error = failure.value
        if isinstance(error, ShuttingDown):
            self.log.info("invoke rejected: shutting down")
        elif not isinstance(error, TooManyRequestsException):  # the dispatcher logged it
            self.log.info(
                "invoke rejected error={error} request_id={request_id}: {message}",
                error=error.error_type,
                request_id=getattr(request, _REQUEST_ID_ATTR, None),
                message=error.message,
            )
        return _error(request, error)

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: Request, failure: Failure) -> bytes:
        exception = failure.value
        if isinstance(exception, MethodNotAllowed) and (
            self._config.enable_openfaas or request.path not in _OPENFAAS_PATHS
        ):
            self.log.debug(
                "method not allowed {method} {path}", method=_method(request), path=_path(request)
            )
            error = UnknownOperationException(_method(request), _path(request), allowed=True)
            allow = ", ".join(exception.valid_methods or ("POST",)).encode("ascii")
            return _error(request, error, allow)
        # NotFound, and whatever else routing raises (a redirect would be a lie here).
        self.log.debug(
            "unknown route {method} {path}", method=_method(request), path=_path(request)
        )
        return _error(request, UnknownOperationException(_method(request), _path(request)))

    @app.handle_errors(Exception)
    def _unexpected(self, request: Request, failure: Failure) -> bytes:
        request_id = _assign_request_id(request)
        self.log.failure("internal error request_id={request_id}", failure, request_id=request_id)
        return _error(request, internal_error(request_id))


def _assign_request_id(request: Request) -> str:
    request_id: str | None = getattr(request, _REQUEST_ID_ATTR, None)
    if request_id is None:
        request_id = new_request_id()
        setattr(request, _REQUEST_ID_ATTR, request_id)
        request.responseHeaders.setRawHeaders(REQUEST_ID, [request_id.encode("ascii")])
    return request_id


def _error(request: Request, error: ServiceError, allow: bytes = b"POST") -> bytes:
    status, headers, body = error_response(error, _assign_request_id(request), allow)
    request.setResponseCode(status)
    set_header = request.responseHeaders.setRawHeaders
    for name, value in headers:
        set_header(name, [value])
    set_header(_RESPONSE_LENGTH, [b"%d" % len(body)])
    return body


def _empty(request: Request, status: int) -> bytes:
    request.setResponseCode(status)
    # No body, so no Content-Type (twisted.web would add text/html).
    request.defaultContentType = None
    if status != 204:
        request.responseHeaders.setRawHeaders(_RESPONSE_LENGTH, _ZERO)
    return b""


def _plain(request: Request, ok: bool) -> bytes:
    _assign_request_id(request)
    request.responseHeaders.setRawHeaders(b"content-type", _TEXT_PLAIN)
    body = b"OK" if ok else b"Service Unavailable"
    if not ok:
        request.setResponseCode(503)
    request.responseHeaders.setRawHeaders(_RESPONSE_LENGTH, [b"%d" % len(body)])
    return body


def _method(request: Request) -> str:
    return request.method.decode("latin-1")


def _path(request: Request) -> str:
    return request.path.decode("latin-1")
