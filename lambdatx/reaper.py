"""
Reaping orphans when lambdatx is PID 1 or a child subreaper (spec/lifecycle.md §5, "Reaping").

Orphaned descendants of runtimes are re-parented to us and, once they exit, stay zombies until
someone waits for them. Twisted only waits for the pids it spawned, and a ``waitpid(-1)`` would
steal their statuses (NOTES.md), so :class:`ZombieReaper` scans ``/proc`` once a second for
zombies whose parent is us and that Twisted does not know, and waits for those pids only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Callable, Collection

from twisted.application.service import Service
from twisted.internet import process as _twisted_process
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from lambdatx.process import ExitStatus

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

log = Logger()


def _prctl() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux); log and return False if that fails."""
    try:
        if _prctl()(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            return True
        error = os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as e:
        error = str(e)
    log.warn("cannot become a child subreaper, orphans may stay zombies: {error}", error=error)
    return False


def is_subreaper() -> bool:
    """Whether this process is a child subreaper (False where that cannot be asked)."""
    try:
        flag = ctypes.c_int(0)
        if _prctl()(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0:
            return bool(flag.value)
    except (OSError, AttributeError):
        pass
    return False


def twisted_children() -> Collection[int]:
    """The pids Twisted will wait for itself (pinned by tests/test_process.py)."""
    return _twisted_process.reapProcessHandlers.keys()


class ZombieReaper(Service):
    """
    Waits for foreign zombie children, once per ``interval``, when PID 1 or a subreaper.

    :param known: the pids that someone else waits for; Twisted's own by default.
    """

    def __init__(
        self,
        reactor: Any,
        interval: float = 1.0,
        known: Callable[[], Collection[int]] = twisted_children,
    ) -> None:
        self._clock = reactor
        self._interval = interval
        self._known = known
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        if os.getpid() == 1 or is_subreaper():
            self._loop = LoopingCall(self.reap)
            self._loop.clock = self._clock
            self._loop.start(self._interval, now=False)

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        super().stopService()

    def reap(self) -> list[tuple[int, ExitStatus]]:
        """Wait for every foreign zombie child now; returns their pids and statuses."""
        reaped = []
        known = self._known()
        for pid in foreign_zombies(os.getpid()):
            if pid in known:
                continue
            try:
                waited, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if waited:
                exit_status = ExitStatus.from_wait_status(status)
                log.debug("reaped orphan {pid}: {status}", pid=pid, status=exit_status.text)
                reaped.append((pid, exit_status))
        return reaped


def foreign_zombies(parent: int) -> list[int]:
    """Pids of zombie processes whose parent is ``parent``."""
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb", buffering=0) as f:
                stat = f.read()
            state, ppid = stat[stat.rindex(b")") + 2 :].split(None, 2)[:2]
        except (OSError, ValueError):
            continue
        if state == b"Z" and int(ppid) == parent:
            found.append(int(name))
    return found
