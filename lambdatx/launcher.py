"""
Starting instances: a Runtime API listener and a runtime process group for each.

The dispatcher decides *when*; this module knows *how*: the loopback listener on an ephemeral
port (opened before the spawn, closed when the instance is dead), the address advertised in
``AWS_LAMBDA_RUNTIME_API``, the environment, and the process itself.
"""

from __future__ import annotations

import ipaddress

from twisted.logger import Logger

from .environment import RuntimeEnvironment
from .instance import Instance
from .process import RuntimeProcess
from .runtime_api import runtime_site
from .structured import JsonLines


def advertised_host(host: str) -> str:
    """The host part of AWS_LAMBDA_RUNTIME_API for a listener bound to ``host``."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


class Launcher:
    log = Logger()

    def __init__(self, config, reactor, stdout=None, stderr=None):
        self.config = config
        self.reactor = reactor
        self.environment = RuntimeEnvironment(config)
        self.stdout = stdout
        self.stderr = stderr
        self._host = advertised_host(config.runtime_api_host)

    def new_instance(self, dispatcher, job, slot) -> Instance:
        return Instance(dispatcher, self, job, slot)

    def listen(self, instance: Instance):
        return self.reactor.listenTCP(
            0, runtime_site(instance, self.config), interface=self.config.runtime_api_host
        )

    def spawn(self, instance: Instance) -> RuntimeProcess:
        address = f"{self._host}:{instance.port.getHost().port}"
        env = self.environment.for_spawn(address, instance.slot, self.reactor.seconds())
        stdout, stderr = self.stdout, self.stderr
        if self.config.structured_logging:
            stdout = stdout and JsonLines(stdout, 1, instance.slot)
            stderr = stderr and JsonLines(stderr, 2, instance.slot)
        process = RuntimeProcess(
            self.reactor,
            self.config.command,
            env,
            self.config.task_root,
            instance,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            process.start()
        except OSError as e:
            self.log.failure("could not spawn the runtime trampoline")
            self.reactor.callLater(0, instance.exec_failed, f"fork/exec {self.config.command[0]}: {(e.strerror or str(e)).lower()}")
            self.reactor.callLater(0, instance.exited, None)
            return process
        self.log.info(
            "runtime spawned pid={pid} slot={slot} api={address}",
            pid=process.pid,
            slot=instance.slot,
            address=address,
        )
        return process

    def closed(self, instance: Instance) -> None:
        port, instance.port = instance.port, None
        if port is not None:
            port.stopListening()
