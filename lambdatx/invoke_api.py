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

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from lambdatx.config import Config
from lambdatx.errors import (
    ServiceError,
    ShuttingDown,
    TooManyRequestsException,
    UnknownOperationException,
)
from lambdatx.http_answers import (
    CLIENT_CONTEXT,
    COGNITO_IDENTITY,
    CONTENT_ENCODING,
    CONTENT_LENGTH,
    INVOCATION_TYPE,
    LOG_TYPE,
    REQUEST_ID_ATTR,
    TENANT_ID,
    TRACE_ID,
    answer,
    assign_request_id,
    cognito_identity,
    empty_answer,
    error_answer,
    last_text,
    plain_answer,
    query_qualifier,
    request_method,
    request_path,
    routing_error_answer,
    unexpected_error_answer,
)
from lambdatx.httpserver import LambdaSite, raw_response
from lambdatx.invocation import Outcome, new_request_id
from lambdatx.validate import (
    DRY_RUN,
    EVENT,
    build_invocation,
    check_invocation_type,
    resolve_function,
    too_large,
)
from lambdatx.wire import Headers, error_response, outcome_headers

_EVENT = EVENT.encode("ascii")
_DRY_RUN = DRY_RUN.encode("ascii")
_OPENFAAS_PATHS = frozenset((b"/", b"/_/health", b"/_/ready"))
_PHRASES = {413: b"Request Entity Too Large"}

INVOKE_ROUTE = "/2015-03-31/functions/<function_name:function_name>/invocations"


class FunctionNameConverter(BaseConverter):
    """
    ``{FunctionName}`` as twisted.web percent-decoded it (``%3A`` → ``:``, ``%24`` → ``$``).

    It matches any text, even empty or with ``/`` (from ``%2F``), so that every malformed name
    reaches :func:`lambdatx.validate.resolve_function` and gets its ``ValidationException``.
    """

    regex = ".*"
    part_isolating = False


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
    return error_response(error, getattr(request, REQUEST_ID_ATTR, None) or new_request_id())


def invoke_site(resource: Any, config: Config) -> LambdaSite:
    """
    The site serving an Invoke API ``resource``: bodies bounded by :func:`invoke_body_limit`,
    an oversized ``Content-Length`` answered 413 before the upload.
    """

    def on_too_large(request: Request, length: int) -> bytes:
        status, headers, body = invoke_too_large_response(config, request, length)
        return raw_response(status, _PHRASES.get(status, b"Error"), headers, body)

    return LambdaSite(
        resource,
        body_limit=lambda request: invoke_body_limit(config, request),
        on_too_large=on_too_large,
    )


def invoke_payload(request: Request, config: Config, invocation_type: str) -> bytes:
    """The event: empty for ``DryRun``, E12/E13 (413) when the body crossed its limit."""
    if invocation_type == DRY_RUN:
        return b""
    event = invocation_type == EVENT
    if getattr(request, "body_too_large", False):
        limit = config.max_event_bytes if event else config.max_request_bytes
        raise too_large(config, event, _too_large_length(request, limit))
    content = request.content
    return content.read() if content is not None else b""


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
        request_id = assign_request_id(request)
        if self._dispatcher.shutting_down:
            # E16 for every request, DryRun and invalid ones included: nothing is looked at.
            raise ShuttingDown()
        qualifier = resolve_function(self._config, function_name, query_qualifier(request))
        return await self._invoke(request, request_id, qualifier)

    @app.route("/", methods=["POST"])
    async def openfaas_invoke(self, request: Request) -> bytes:
        self._require_openfaas(request)
        if self._dispatcher.shutting_down:
            raise ShuttingDown()
        return await self._invoke(request, assign_request_id(request), None)

    @app.route("/_/health", methods=["GET"])
    def health(self, request: Request) -> bytes:
        self._require_openfaas(request)
        return plain_answer(request, not self._dispatcher.shutting_down)

    @app.route("/_/ready", methods=["GET"])
    def ready(self, request: Request) -> bytes:
        self._require_openfaas(request)
        return plain_answer(request, self._dispatcher.ready)

    # --- invocation -------------------------------------------------------------------------

    async def _invoke(self, request: Request, request_id: str, qualifier: str | None) -> bytes:
        config = self._config
        get = request.requestHeaders.getRawHeaders
        invocation_type = check_invocation_type(last_text(get(INVOCATION_TYPE)))
        dry_run = invocation_type == DRY_RUN
        event = invocation_type == EVENT
        payload = invoke_payload(request, config, invocation_type)
        identity = cognito_identity(get(COGNITO_IDENTITY))
        invocation = build_invocation(
            config,
            payload=payload,
            event=event,
            qualifier=qualifier,
            client_context=last_text(get(CLIENT_CONTEXT)),
            trace_id=last_text(get(TRACE_ID)),
            tenant_id=last_text(get(TENANT_ID)),
            cognito_identity=identity,
            log_type=last_text(get(LOG_TYPE)),
            content_encoding=last_text(get(CONTENT_ENCODING)),
            request_id=request_id,
        )
        if dry_run:
            return empty_answer(request, 204)
        submitted = self._dispatcher.submit(invocation)
        if event:
            submitted.addCallbacks(
                self._event_finished,
                self._event_failed,
                callbackArgs=(request_id,),
                errbackArgs=(request_id,),
            )
            return empty_answer(request, 202)
        outcome: Outcome = await submitted
        return answer(request, 200, outcome_headers(outcome, config), outcome.body)

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
            raise UnknownOperationException(request_method(request), request_path(request))

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
                request_id=getattr(request, REQUEST_ID_ATTR, None),
                message=error.message,
            )
        return error_answer(request, error)

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: Request, failure: Failure) -> bytes:
        # The OpenFaaS routes are unknown (404, not 405) while ENABLE_OPENFAAS is off.
        hide_405 = not self._config.enable_openfaas and request.path in _OPENFAAS_PATHS
        return routing_error_answer(request, failure.value, self.log, hide_405)

    @app.handle_errors(Exception)
    def _unexpected(self, request: Request, failure: Failure) -> bytes:
        return unexpected_error_answer(request, failure, self.log)
