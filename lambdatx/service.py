"""
``make_service(config, reactor)``: the whole daemon as one Service, built from its parts.

Shutdown order (lifecycle.md §6), written down once in :meth:`LambdaTxService._stop`:
stop intake (close the Invoke API port, refuse new invocations, drain idle instances), let
running invocations finish within the grace, then answer what is still queued, TERM and KILL
the remaining instances, release external polls, close the Runtime API listeners.
"""

from __future__ import annotations

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.logger import Logger

from .dispatcher import Dispatcher
from .errors import ListenError
from .external import ExternalRuntimes
from .instance import EXIT_GRACE
from .invoke_api import InvokeApi, invoke_site
from .launcher import Launcher
from .lifecycle import ServiceLifecycle, first_of
from .process import OutputSink
from .reaper import ZombieReaper
from .reports import Reports
from .runtime_api import runtime_site


class LambdaTxService(ServiceLifecycle, MultiService):
    log = Logger()

    def __init__(self, config, reactor, stdout=None, stderr=None):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.stdout = stdout if stdout is not None else OutputSink(reactor, 1)
        self.stderr = stderr if stderr is not None else OutputSink(reactor, 2)
        self.reports = Reports(config, out=self.stdout)
        self.launcher = Launcher(config, reactor, self.stdout, self.stderr)
        self.dispatcher = Dispatcher(
            config, reactor, self.launcher.new_instance, self.reports
        )
        self.external = ExternalRuntimes(self.dispatcher)
        self.invoke_api = InvokeApi(config, self.dispatcher)
        # Reaps orphaned zombies when we are PID 1 or a child subreaper (a no-op otherwise).
        ZombieReaper(reactor).setServiceParent(self)
        # AMQP-RPC consumer, only with AMQP_URI (txAMQP is not even imported otherwise).
        self.amqp = None
        if config.amqp_uri is not None:
            from .amqp_rpc import AmqpRpc

            self.amqp = AmqpRpc(config, reactor, self.dispatcher, lambda: self.finish(69))
            self.amqp.setServiceParent(self)
        self.invoke_port = None
        self.runtime_port = None
        self._init_lifecycle()
        self._stopping = False

    # --- start ------------------------------------------------------------------------------

    def startService(self):
        super().startService()
        config = self.config
        try:
            self.runtime_port = self._listen_tcp(
                config.runtime_api_host,
                config.runtime_api_port,
                runtime_site(self.external, config),
            )
            self.invoke_port = self._listen_tcp(
                config.invoke_api_host,
                config.port,
                invoke_site(self.invoke_api.app.resource(), config),
            )
        except ListenError as e:
            self._listen_failed(e)
            if self.runtime_port is not None:
                self.runtime_port.stopListening()
                self.runtime_port = None
        self._announce_ready()

    # --- stop -------------------------------------------------------------------------------

    def stopService(self):
        return defer.Deferred.fromCoroutine(self._stop())

    def _busy(self) -> bool:
        """Invocations running, or queued while an instance is left that may take them."""
        dispatcher = self.dispatcher
        return dispatcher.running_count() != 0 or bool(dispatcher.queue and dispatcher.instances)

    async def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        dispatcher = self.dispatcher
        # 1-2. Stop intake.
        if self.invoke_port is not None:
            await defer.maybeDeferred(self.invoke_port.stopListening)
        dispatcher.stop_intake()
        if self.amqp is not None:
            await self.amqp.stop_intake()
        # 3-4. Let running invocations finish within the grace.
        await self._grace(self.config.shutdown_grace, self._busy)
        # 5. Grace over.
        dispatcher.drop_queued()
        for instance in list(dispatcher.instances):
            instance.terminate_for_shutdown()
        self.external.release_polls()
        # Wait for every group to be gone (TERM, then KILL after EXIT_GRACE).
        deadline = self.reactor.seconds() + EXIT_GRACE + 1.0
        while dispatcher.instances and self.reactor.seconds() < deadline:
            await task.deferLater(self.reactor, 0.02, lambda: None)
        for instance in list(dispatcher.instances):
            self.log.warn("runtime still alive at exit: {instance}", instance=repr(instance))
            if instance.process is not None:
                instance.process.kill()
        # 6. Close the remaining listeners.
        if self.amqp is not None:
            await self.amqp.close()
        if self.runtime_port is not None:
            await defer.maybeDeferred(self.runtime_port.stopListening)
        # Flush runtime output and platform lines, but never hang on a stuck terminal.
        await first_of(
            defer.gatherResults([self.stdout.flushed(), self.stderr.flushed()]),
            task.deferLater(self.reactor, 2.0, lambda: None),
        )
        await defer.maybeDeferred(super().stopService)


def make_service(config, reactor, **parts) -> LambdaTxService:
    """The whole daemon; ``parts`` may replace ``stdout``/``stderr`` output sinks in tests."""
    return LambdaTxService(config, reactor, **parts)
