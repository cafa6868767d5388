"""
The lifecycle both top-level services share (the daemon's and the gateway's): listening, telling
the entry point when the service is ready or has decided to end, and the shutdown grace.

:class:`ServiceLifecycle` owns that state; each service keeps its own ``startService`` and the
ordered ``stopService`` of its parts, and calls the mixin's steps from them:

* ``_listen_tcp`` opens a listener (or raises :class:`~lambdatx.errors.ListenError`);
  ``_listen_failed`` records why the service cannot serve; ``_announce_ready`` then fires every
  ``when_ready`` waiter, with the service or with that error.
* ``finish(code)`` fires every ``when_finished`` waiter (the service ends on its own).
* ``_grace(seconds, busy)`` waits while ``busy()``, at most ``seconds``; ``skip_grace()`` (a
  second signal) ends it at once.

:class:`Waiters` is the one way of waiting for the next occurrence of something (also the AMQP
consumer's and the gateway router's ``when_ready``): a fresh Deferred per caller, all fired
together after the state they announce is set, then forgotten.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.error import CannotListenError

from .errors import ListenError

#: Twisted's default (50) drops connection bursts (SYN retries of 1 s, 3 s, …); the kernel caps
#: it at net.core.somaxconn.
LISTEN_BACKLOG = 1024
#: How often a grace period looks whether the work it waits for is done.
_GRACE_POLL = 0.05


def address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def first_of(*ds: defer.Deferred) -> None:
    """Wait for the first of ``ds`` without consuming the others' results."""
    waiter: defer.Deferred = defer.Deferred()

    def fire(result):
        if not waiter.called:
            waiter.callback(None)
        return result

    for d in ds:
        d.addBoth(fire)
    await waiter


class Waiters:
    """Callers waiting for the next occurrence of one event; each has its own Deferred."""

    def __init__(self) -> None:
        self._waiting: list[defer.Deferred] = []

    def wait(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        return d

    def fire(self, result: Any) -> None:
        """Fire every waiter with ``result`` (take-then-clear: new waiters wait for the next)."""
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)

    def fail(self, error: BaseException) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(error)


class ServiceLifecycle:
    """
    Mixin for a ``Service`` with ``reactor`` and ``log`` attributes; call
    ``_init_lifecycle()`` from ``__init__``.
    """

    reactor: Any
    log: Any
    running: int

    def _init_lifecycle(self) -> None:
        self._listen_error: ListenError | None = None
        self._ready_waiters = Waiters()
        self._finished_waiters = Waiters()
        self._grace_cut: defer.Deferred | None = None

    # --- start ------------------------------------------------------------------------------

    def _listen_tcp(self, host: str, port: int, site: Any) -> Any:
        """Listen on ``host:port`` and log the address bound; raises :class:`ListenError`."""
        try:
            # A deep backlog: bursts of new connections must queue, not be dropped.
            listening = self.reactor.listenTCP(port, site, backlog=LISTEN_BACKLOG, interface=host)
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError or e)
            raise ListenError(address(host, port), str(reason).lower()) from None
        self.log.info("listening on {address}", address=address(host, listening.getHost().port))
        return listening

    def _listen_failed(self, error: ListenError) -> None:
        self.log.critical(
            "cannot listen on {address}: {reason}", address=error.address, reason=error.reason
        )
        self._listen_error = error

    def _announce_ready(self) -> None:
        """Fire the ``when_ready`` waiters; called once ``startService`` has listened."""
        if self._listen_error is not None:
            self._ready_waiters.fail(self._listen_error)
        else:
            self._ready_waiters.fire(self)

    def when_ready(self) -> defer.Deferred:
        """Fires with the service once listening, or fails with ListenError."""
        if not self.running:
            return self._ready_waiters.wait()
        if self._listen_error is not None:
            return defer.fail(self._listen_error)
        return defer.succeed(self)

    # --- end --------------------------------------------------------------------------------

    def when_finished(self) -> defer.Deferred:
        """Fires with an exit code when the service decides to end on its own."""
        return self._finished_waiters.wait()

    def finish(self, code: int) -> None:
        self._finished_waiters.fire(code)

    async def _grace(self, seconds: float, busy: Callable[[], bool]) -> None:
        """Wait while ``busy()``, for ``seconds`` at most or until :meth:`skip_grace`."""
        cut = self._grace_cut = defer.Deferred()
        deadline = self.reactor.seconds() + seconds
        while not cut.called and self.reactor.seconds() < deadline and busy():
            await first_of(cut, task.deferLater(self.reactor, _GRACE_POLL, lambda: None))
        self._grace_cut = None

    def skip_grace(self) -> None:
        """A second signal: end the grace period now."""
        cut, self._grace_cut = self._grace_cut, None
        if cut is not None and not cut.called:
            cut.callback(None)
