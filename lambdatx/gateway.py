"""
``lambdatx-server``: one Invoke API endpoint for every function, routed through RabbitMQ
(amqp-rpc.md §9).

Protocol (spec/invoke-api.md, with the gateway's differences): ``POST /2015-03-31/functions/
{FunctionName}/invocations[?Qualifier=Q]`` for **any** function name (name, ``name:q``, partial
or full ARN of this gateway's region and account; no ``function`` alias). The gateway checks
locally whatever needs no function configuration (route, name syntax, header syntax, client
context, the 6 MB / 1 MB body limits, early 413 through :class:`~lambdatx.httpserver.LambdaSite`),
then publishes the call to the queue named after the function (:mod:`lambdatx.gateway_amqp`) and
answers with the reply: the daemon decides everything else (qualifier, JSON validity) and its
answer passes through unchanged. The qualifier travels as ``X-Lambdatx-Qualifier``. Every answer
carries ``x-amzn-RequestId`` = the correlation id = the daemon's request id. With
``ENABLE_OPENFAAS``: ``GET /_/health`` and ``GET /_/ready`` (broker connection up).

Shutdown (:meth:`GatewayService.stopService`): stop listening, refuse requests still arriving on
open connections (500 "Service is shutting down."), give pending calls up to
:data:`SHUTDOWN_GRACE` seconds (a second signal ends it), close the broker connection (calls
still pending get G05), let the last answers flush.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import HTTPException

from .errors import ListenError, ServiceError, ShuttingDown, UnknownOperationException
from .gateway_amqp import AmqpRouter, FunctionNotFound, reply_response
from .gateway_config import GatewayConfig
from .http_answers import (
    CLIENT_CONTEXT,
    COGNITO_IDENTITY,
    CONTENT_ENCODING,
    CONTENT_TYPE,
    INVOCATION_TYPE,
    LOG_TYPE,
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
from .httpserver import LambdaSite
from .invoke_api import INVOKE_ROUTE, FunctionNameConverter, invoke_payload, invoke_site
from .lifecycle import ServiceLifecycle
from .validate import (
    DRY_RUN,
    EVENT,
    check_cognito_identity,
    check_content_encoding,
    check_invocation_type,
    check_log_type,
    check_tenant_id,
    decode_client_context,
    function_not_found,
    merge_qualifiers,
    parse_function_name,
)

#: Seconds pending calls get to finish after SIGTERM (7 s + margin fits ``docker stop``'s 10 s).
SHUTDOWN_GRACE = 7.0
EX_UNAVAILABLE = 69

_OPENFAAS_PATHS = frozenset((b"/_/health", b"/_/ready"))


class GatewayApi:
    """The gateway's Invoke API as a Klein app; ``GatewayApi(config, router).app.resource()``."""

    app = Klein()
    app.url_map.converters["function_name"] = FunctionNameConverter
    log = Logger()

    def __init__(self, config: GatewayConfig, router: Any):
        self._config = config
        #: ``request``/``event``/``exists`` calls and ``connected`` (:class:`AmqpRouter`).
        self._router = router
        #: Set when shutdown starts: requests still arriving get E16.
        self.stopping = False

    # --- routes -------------------------------------------------------------------------------

    @app.route(INVOKE_ROUTE, methods=["POST"], merge_slashes=False)
    async def invoke(self, request: Request, function_name: str) -> bytes:
        request_id = assign_request_id(request)
        try:
            name, qualifier, kind, payload, headers = self._check(request, function_name)
        except ServiceError as error:
            self.log.info(
                "invoke rejected error={error} request_id={request_id}: {message}",
                error=error.error_type,
                request_id=request_id,
                message=error.message,
            )
            raise
        router = self._router
        content_type = _last_raw(request, CONTENT_TYPE)
        try:
            if kind == DRY_RUN:
                if not await router.exists(name):
                    raise FunctionNotFound(name)
                return empty_answer(request, 204)
            if kind == EVENT:
                await router.event(name, payload, headers, content_type, request_id)
                return empty_answer(request, 202)
            reply = await router.request(name, payload, headers, content_type, request_id)
        except FunctionNotFound:
            self.log.info(
                "function not found function={function} request_id={request_id}",
                function=name,
                request_id=request_id,
            )
            raise function_not_found(self._config.function_arn(name), qualifier) from None
        status, pairs, body = reply_response(reply.properties, reply.body, request_id)
        return answer(request, status, pairs, body)

    @app.route("/_/health", methods=["GET"])
    def health(self, request: Request) -> bytes:
        self._require_openfaas(request)
        return plain_answer(request, not self.stopping)

    @app.route("/_/ready", methods=["GET"])
    def ready(self, request: Request) -> bytes:
        self._require_openfaas(request)
        return plain_answer(request, self._router.connected and not self.stopping)

    # --- local validation -----------------------------------------------------------------------

    def _check(self, request: Request, raw_name: str) -> tuple[str, str | None, str, bytes, dict]:
        """Everything that needs no function configuration, in the daemon's order."""
        if self.stopping:
            raise ShuttingDown()
        config = self._config
        target = parse_function_name(raw_name, config.region, config.account_id, config.partition)
        qualifier = merge_qualifiers(target.qualifier, query_qualifier(request))
        get = request.requestHeaders.getRawHeaders
        kind = check_invocation_type(last_text(get(INVOCATION_TYPE)))
        payload = invoke_payload(request, config.daemon_view, kind)
        return target.name, qualifier, kind, payload, _forwarded_headers(get, qualifier)

    def _require_openfaas(self, request: Request) -> None:
        if not self._config.enable_openfaas:
            raise UnknownOperationException(request_method(request), request_path(request))

    # --- errors: the one table ----------------------------------------------------------------

    @app.handle_errors(ServiceError)
    def _service_error(self, request: Request, failure: Failure) -> bytes:
        # Logged where decided: local rejections in invoke(), broker failures by the router.
        return error_answer(request, failure.value)

    @app.handle_errors(HTTPException)
    def _routing_error(self, request: Request, failure: Failure) -> bytes:
        # The OpenFaaS routes are unknown (404, not 405) while ENABLE_OPENFAAS is off.
        hide_405 = not self._config.enable_openfaas and request.path in _OPENFAAS_PATHS
        return routing_error_answer(request, failure.value, self.log, hide_405)

    @app.handle_errors(Exception)
    def _unexpected(self, request: Request, failure: Failure) -> bytes:
        return unexpected_error_answer(request, failure, self.log)


def _forwarded_headers(get: Any, qualifier: str | None) -> dict[str, str]:
    """Check the invoke headers (E03, E08-E10, E14) and return those forwarded (§9)."""
    check_content_encoding(last_text(get(CONTENT_ENCODING)))
    table: dict[str, str] = {}
    log_type = last_text(get(LOG_TYPE))
    check_log_type(log_type)
    if log_type:
        table["X-Amz-Log-Type"] = log_type
    context = last_text(get(CLIENT_CONTEXT))
    if context and decode_client_context(context) is not None:
        table["X-Amz-Client-Context"] = context
    tenant = check_tenant_id(last_text(get(TENANT_ID)))
    if tenant is not None:
        table["X-Amz-Tenant-Id"] = tenant
    identity = cognito_identity(get(COGNITO_IDENTITY))
    if identity is not None:
        check_cognito_identity(identity)
        table["X-Lambdatx-Cognito-Identity"] = identity
    trace = get(TRACE_ID)
    if trace and trace[-1]:
        table["X-Amzn-Trace-Id"] = _text(trace[-1])
    if qualifier:
        table["X-Lambdatx-Qualifier"] = qualifier
    return table


# --- small request/response helpers -----------------------------------------------------------


def _last_raw(request: Request, name: bytes) -> bytes | None:
    values = request.requestHeaders.getRawHeaders(name)
    return values[-1] if values else None


def _text(value: bytes) -> str:
    """Header bytes as text for an AMQP string: UTF-8 when they are, else latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


# --- the service ------------------------------------------------------------------------------


class GatewayService(ServiceLifecycle, Service):
    """The listener, the API and the broker connection; the console script and twistd run it."""

    log = Logger()

    def __init__(self, config: GatewayConfig, reactor: Any, *, router: Any = None):
        self.config = config
        self.reactor = reactor
        self.router = router or AmqpRouter(config, reactor, lambda: self.finish(EX_UNAVAILABLE))
        self.api = GatewayApi(config, self.router)
        self.port: Any = None
        self._init_lifecycle()
        self._stopping = False

    def site(self) -> LambdaSite:
        return invoke_site(self.api.app.resource(), self.config.daemon_view)

    def listen(self) -> Any:
        """Open the listener now (idempotent); raises :class:`ListenError`."""
        if self.port is None:
            config = self.config
            self.port = self._listen_tcp(config.invoke_api_host, config.port, self.site())
        return self.port

    def startService(self) -> None:
        super().startService()
        for warning in self.config.warnings:
            self.log.warn("{warning}", warning=warning)
        self.log.info("configuration", **self.config.settings())
        try:
            self.listen()
        except ListenError as e:
            self._listen_failed(e)
        else:
            self.router.start()
        self._announce_ready()

    def stopService(self) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.api.stopping = True
        if self.port is not None:
            await defer.maybeDeferred(self.port.stopListening)
        await self._grace(SHUTDOWN_GRACE, lambda: bool(self.router.pending_count))
        await self.router.close()
        # Calls answered just now (G05) are written on the next turns; let them go out.
        await task.deferLater(self.reactor, 0.05, lambda: None)
        super().stopService()


def make_gateway_service(config: GatewayConfig, reactor: Any, **parts: Any) -> GatewayService:
    """The whole gateway; ``parts`` may replace the ``router`` in tests."""
    return GatewayService(config, reactor, **parts)
