"""
Keeping one AMQP connection up (amqp-rpc.md §1, §7), for the daemon and the gateway.

:class:`AmqpConnector` connects with Twisted's ``ClientService`` and our retry policy: the delay
before retry *n* is ``retry_delay × 2^(n−1)``, capped at ``max(retry_delay, 30 s)``, ±20 % jitter;
after ``connection_attempts`` consecutive failed attempts it logs CRITICAL "AMQP unavailable,
giving up" and tells its owner. ``ClientService`` only manages TCP (+TLS): it cannot reject a
connection from ``prepareConnection`` without an unhandled ``NoTransition`` when that transport
later closes (Twisted 24-26), so the AMQP handshake and the owner's setup run beside it and the
attempts are counted here (``ClientService``'s own count resets at every TCP connect).
"""

from __future__ import annotations

import os
import random
import socket
from typing import Awaitable, Callable

from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .amqp_client import AmqpProtocol
from .amqp_uri import AmqpUri

#: Upper bound of the backoff, unless retry_delay itself is longer (amqp-rpc.md §7).
BACKOFF_CAP = 30.0


def backoff_delay(
    retry_delay: float, n: int, jitter: Callable[[], float] = random.random
) -> float:
    """The delay before retry ``n`` (n ≥ 1): ``retry_delay × 2^(n−1)``, capped, ±20 % jitter."""
    cap = max(retry_delay, BACKOFF_CAP)
    base = cap if n > 64 else min(retry_delay * 2 ** (n - 1), cap)
    return base * (0.8 + 0.4 * jitter())


def connection_name(role: str) -> str:
    """``lambdatx <function>@<hostname>`` (daemon) or ``lambdatx-server@<hostname>`` (gateway)."""
    return f"{role}@{socket.gethostname()}"


def tls_options(uri: AmqpUri):
    """TLS client options for ``amqps`` (SNI and verification per amqp-rpc.md §1)."""
    from twisted.internet import ssl

    client_certificate = None
    if uri.certfile:
        with open(uri.certfile, "rb") as f:
            pem = f.read()
        if uri.keyfile:
            with open(uri.keyfile, "rb") as f:
                pem += b"\n" + f.read()
        client_certificate = ssl.PrivateCertificate.loadPEM(pem)
    if not uri.verify:
        if client_certificate is None:
            return ssl.CertificateOptions(verify=False)
        return client_certificate.options()
    trust = ssl.platformTrust()
    if uri.cacertfile:
        with open(uri.cacertfile, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
    return ssl.optionsForClientTLS(
        uri.server_name_indication or uri.host,
        trustRoot=trust,
        clientCertificate=client_certificate,
    )


@implementer(IStreamClientEndpoint)
class _ObservedEndpoint:
    """Reports each failed connect (refused, timed out, DNS, TLS) before ClientService retries."""

    def __init__(self, endpoint, on_failure: Callable[[Failure], None], shown: str):
        self._endpoint = endpoint
        self._on_failure = on_failure
        self._shown = shown

    def __repr__(self) -> str:
        return self._shown

    def connect(self, factory):
        def failed(failure):
            self._on_failure(failure)
            return failure

        return self._endpoint.connect(factory).addErrback(failed)


class AmqpConnector(Service):
    """
    Keeps one AMQP connection up: connects, runs ``on_ready(protocol)`` (channels, topology),
    reconnects with our backoff after any loss, and gives up after ``connection_attempts``
    consecutive failed attempts (CRITICAL log, then ``on_give_up()``).

    An attempt fails when TCP/TLS, the handshake or ``on_ready`` fails or takes longer than
    ``connection_timeout``. ``on_lost(reason)`` is called when a ready connection goes away.
    """

    log = Logger()

    def __init__(
        self,
        uri: AmqpUri,
        credentials: tuple[str, str],
        name: str,
        reactor,
        on_ready: Callable[[AmqpProtocol], Awaitable[None]],
        on_lost: Callable[[Failure], None],
        on_give_up: Callable[[], None],
        *,
        endpoint=None,
        jitter: Callable[[], float] = random.random,
    ):
        self.uri = uri
        self.reactor = reactor
        self._credentials = credentials
        self._name = name
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_give_up = on_give_up
        self._jitter = jitter
        endpoint = endpoint if endpoint is not None else self._endpoint()
        factory = protocol.Factory.forProtocol(self._build)
        factory.noisy = False
        self._service = ClientService(
            _ObservedEndpoint(endpoint, self._connect_failed, uri.display()),
            factory,
            retryPolicy=self.retry_delay,
            clock=reactor,
            prepareConnection=self._prepare,
        )
        #: The connection whose ``on_ready`` completed, while it lasts.
        self.protocol: AmqpProtocol | None = None
        self.failures = 0
        self._retries = 0
        self._lost_ready = False
        self._last_error = "no attempt yet"
        self.gave_up = False
        self._built: AmqpProtocol | None = None

    @property
    def last_error(self) -> str:
        """Why the last attempt failed or the last connection ended."""
        return self._last_error

    def _endpoint(self):
        tcp = HostnameEndpoint(
            self.reactor, self.uri.host, self.uri.port, timeout=self.uri.connection_timeout
        )
        return wrapClientTLS(tls_options(self.uri), tcp) if self.uri.tls else tcp

    def _build(self) -> AmqpProtocol:
        user, password = self._credentials
        self._built = AmqpProtocol(
            vhost=self.uri.vhost,
            username=user,
            password=password,
            heartbeat=self.uri.heartbeat,
            connection_name=self._name,
            clock=self.reactor,
        )
        return self._built

    def startService(self):
        super().startService()
        self.log.info("connecting to {uri}", uri=self.uri.display())
        self._service.startService()

    # --- attempts ---------------------------------------------------------------------------

    def retry_delay(self, _attempts: int) -> float:
        """ClientService's retry policy; ClientService's own count is not ours (see above)."""
        if self._lost_ready:
            self._lost_ready = False
        else:
            self.failures += 1
            self.log.warn(
                "AMQP connection attempt {attempt} failed: {reason}",
                attempt=self.failures,
                reason=self._last_error,
            )
        limit = self.uri.connection_attempts
        if limit and self.failures >= limit:
            self.reactor.callLater(0, self._give_up)
            return 3600.0
        self._retries += 1
        return backoff_delay(self.uri.retry_delay, self._retries, self._jitter)

    def _connect_failed(self, failure: Failure) -> None:
        self._last_error = _describe(failure)

    def _prepare(self, _proxy) -> None:
        # Runs beside ClientService, which must never see it fail (module docstring). It is
        # given a proxy; the protocol itself is the one just built (one attempt at a time).
        amqp, self._built = self._built, None
        if amqp is not None:
            defer.Deferred.fromCoroutine(self._session(amqp))

    async def _session(self, amqp: AmqpProtocol) -> None:
        timer = self.reactor.callLater(self.uri.connection_timeout, self._handshake_timeout, amqp)
        try:
            await amqp.open()
            await self._on_ready(amqp)
        except Exception as e:
            self._last_error = amqp.close_reason or _describe(Failure(e))
            if amqp.transport is not None and amqp.lost_reason is None:
                amqp.transport.abortConnection()
            return
        finally:
            if timer.active():
                timer.cancel()
        if amqp.lost_reason is not None:
            return
        self.protocol = amqp
        self.failures = self._retries = 0
        amqp.when_lost().addCallback(lambda _: self._lost(amqp))

    def _handshake_timeout(self, amqp: AmqpProtocol) -> None:
        amqp.close_reason = f"no AMQP handshake within {self.uri.connection_timeout:g} s"
        amqp.transport.abortConnection()

    def _lost(self, amqp: AmqpProtocol) -> None:
        if self.protocol is amqp:
            self.protocol = None
        self._lost_ready = True
        reason = amqp.lost_reason or Failure(ConnectionDone())
        self._last_error = amqp.close_reason or _describe(reason)
        if self.running:
            self._on_lost(reason)

    def _give_up(self) -> None:
        if self.gave_up or not self.running:
            return
        self.gave_up = True
        self.log.critical(
            "AMQP unavailable, giving up attempts={attempts} reason={reason}",
            attempts=self.failures,
            reason=self._last_error,
        )
        self._service.stopService()
        self._on_give_up()

    # --- stopping ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection cleanly (reply 200) and stop reconnecting."""
        if not self.running:
            return
        Service.stopService(self)
        proto, self.protocol = self.protocol, None
        if proto is not None:
            await proto.close_cleanly()
        await self._service.stopService()

    def stopService(self):
        return defer.Deferred.fromCoroutine(self.close())


def _describe(failure: Failure) -> str:
    value = failure.value
    text = str(value) or type(value).__name__
    return text.replace(os.linesep, " ")
