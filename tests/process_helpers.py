"""Helpers for tests that start real children through lambdatx.process."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable

import psutil

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from lambdatx.process import ExitStatus, OutputSink, RuntimeProcess

#: The environment given to test children: small, explicit, and enough to find programs.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def python(code: str) -> list[str]:
    """argv that runs ``code`` in this interpreter, isolated from our site-packages."""
    return [sys.executable, "-I", "-c", code]


class RecordingObserver:
    """A ProcessObserver that records every report, in order."""

    def __init__(self, reactor) -> None:
        self._reactor = reactor
        self.events: list[tuple] = []
        self.out: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.status: ExitStatus | None = None
        self.output_at_exit: dict[int, int] = {}
        self._exit_waiters: list[Deferred] = []

    def exec_succeeded(self) -> None:
        self.events.append(("exec_succeeded",))

    def exec_failed(self, reason: str) -> None:
        self.events.append(("exec_failed", reason))

    def output(self, fd: int, data: bytes) -> None:
        self.out[fd] += data

    def exited(self, status: ExitStatus) -> None:
        self.events.append(("exited", status))
        self.status = status
        self.output_at_exit = {fd: len(buf) for fd, buf in self.out.items()}
        waiters, self._exit_waiters = self._exit_waiters, []
        for d in waiters:
            d.callback(status)

    def when_exited(self, timeout: float = 10.0) -> Deferred:
        """A Deferred for the exit status, failing with TimeoutError after ``timeout``."""
        d: Deferred = Deferred()
        if self.status is not None:
            d.callback(self.status)
        else:
            self._exit_waiters.append(d)
        return d.addTimeout(timeout, self._reactor)

    async def when_output(self, fd: int, needle: bytes, timeout: float = 10.0) -> None:
        await wait_until(self._reactor, lambda: needle in self.out[fd], timeout)


async def wait_until(reactor, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` every 10 ms on the reactor; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await deferLater(reactor, 0.01, lambda: None)


class Spawner:
    """Starts RuntimeProcesses for one test and SIGKILLs whatever is left in teardown."""

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self._groups: list[RuntimeProcess] = []
        self._pids: list[int] = []

    def start(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str = "/",
        stdout: OutputSink | None = None,
        stderr: OutputSink | None = None,
    ) -> tuple[RuntimeProcess, RecordingObserver]:
        observer = RecordingObserver(self.reactor)
        proc = RuntimeProcess(
            self.reactor,
            argv,
            BASE_ENV if env is None else env,
            cwd,
            observer,
            stdout=stdout,
            stderr=stderr,
        )
        proc.start()
        self._groups.append(proc)
        return proc, observer

    def track(self, pid: int) -> None:
        """Also kill ``pid`` in teardown (a descendant that may have left the group)."""
        self._pids.append(pid)

    def cleanup(self) -> None:
        for proc in self._groups:
            if proc.pid is not None and not proc.has_exited:
                _ignore_missing(os.killpg, proc.pid, signal.SIGKILL)
        for pid in self._pids:
            _ignore_missing(os.kill, pid, signal.SIGKILL)


def _ignore_missing(kill, pid: int, sig: int) -> None:
    try:
        kill(pid, sig)
    except ProcessLookupError:
        pass


def is_dead(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (its parent may not be us, so no waitpid)."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True
