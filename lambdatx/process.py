"""
Child processes for runtimes, with no Lambda semantics (spec/lifecycle.md §5, §8).

A :class:`RuntimeProcess` starts one program in its own session (pid == pgid), with stdin on
``/dev/null`` and stdout/stderr on pipes, and reports to a :class:`ProcessObserver`: exec
succeeded or failed, every output chunk, and the exit status. Output is also passed through,
unmodified, to an :class:`OutputSink` per stream, which writes from its own thread and pauses the
producing processes while its buffer is over a bound, so a slow stdout never blocks the reactor.

Why a trampoline (NOTES.md, "Child processes"): ``spawnProcess`` cannot start a new session on
its ``posix_spawnp`` path, so we spawn ``python -I -S -c TRAMPOLINE``, which resets signal
dispositions, calls ``setsid``, ``chdir`` and ``execvpe``. It reports on fd 3 (close-on-exec):
``.`` once it runs, then an error text if chdir or exec fails; ``.`` then EOF means exec
succeeded. The runtime's environment travels in argv, not in the trampoline's environment,
because CPython adds ``LC_CTYPE`` to its own environment under the C locale (PEP 538).

Exit is taken from ``processExited``, never ``processEnded``: a grandchild holding the pipes
would delay the latter for ever. On exit we SIGKILL the group, read what the dead process left
in the pipes, report, and close the pipes.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO, Mapping, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

#: Go's names for signals (spec/lifecycle.md §5, "Exit text").
SIGNAL_NAMES: dict[int, str] = {
    signal.SIGKILL: "killed",
    signal.SIGTERM: "terminated",
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGINT: "interrupt",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating point exception",
    signal.SIGILL: "illegal instruction",
    signal.SIGPIPE: "broken pipe",
    signal.SIGHUP: "hangup",
    signal.SIGQUIT: "quit",
    signal.SIGTRAP: "trace/breakpoint trap",
    signal.SIGSYS: "bad system call",
    signal.SIGUSR1: "user defined signal 1",
    signal.SIGUSR2: "user defined signal 2",
    signal.SIGALRM: "alarm clock",
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
}

STDOUT, STDERR, _EXEC_REPORT = 1, 2, 3

# The child side. argv: -c, cwd, number of env entries, KEY=VALUE..., program argv...
# Ignored signals and the signal mask survive exec; Python ignores SIGPIPE and SIGXFSZ itself.
_TRAMPOLINE = r"""
import os, signal, sys
a = sys.argv; d = a[1]; n = int(a[2]); c = a[3 + n:]
e = dict(x.split("=", 1) for x in a[3:3 + n])
os.set_inheritable(3, False)
os.write(3, b".")
for s in signal.valid_signals():
    try:
        signal.signal(s, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
signal.pthread_sigmask(signal.SIG_SETMASK, ())
os.setsid()
def fail(m):
    os.write(3, m.encode("utf-8", "surrogateescape"))
    os._exit(127)
def why(x):
    return os.strerror(x.errno).lower()
try:
    os.chdir(d)
except OSError as x:
    fail("chdir %s: %s" % (d, why(x)))
try:
    os.execvpe(c[0], c, e)
except OSError as x:
    if "/" not in c[0] and x.errno in (2, 13):
        fail('exec: "%s": executable file not found in $PATH' % c[0])
    fail("fork/exec %s: %s" % (c[0], why(x)))
"""

_DRAIN_LIMIT = 1 << 20  # bytes read synchronously per pipe at exit


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit code, or a signal (maybe with a core dump)."""

    code: int | None
    signal: int | None = None
    core_dumped: bool = False

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status), os.WCOREDUMP(status))
        return cls(os.WEXITSTATUS(status))

    @property
    def clean(self) -> bool:
        return self.code == 0

    @property
    def text(self) -> str:
        """Go's wording: ``exit status 7``, ``signal: killed``, ``… (core dumped)``."""
        if self.signal is None:
            return f"exit status {self.code}"
        name = SIGNAL_NAMES.get(self.signal, f"signal {self.signal}")
        return f"signal: {name}" + (" (core dumped)" if self.core_dumped else "")


class ProcessObserver(Protocol):
    """What a :class:`RuntimeProcess` reports, in this order: exec result, output, exit."""

    def exec_succeeded(self) -> None:
        """The program was exec'd in its own session."""

    def exec_failed(self, reason: str) -> None:
        """chdir or exec failed (Go's wording); :meth:`exited` follows."""

    def output(self, fd: int, data: bytes) -> None:
        """Bytes read from stdout (1) or stderr (2), as read."""

    def exited(self, status: ExitStatus) -> None:
        """The main process exited; its group has been sent SIGKILL."""


class Producer(Protocol):
    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...


class OutputSink:
    """
    Writes bytes, in order, to one target (an fd or a binary file) from its own thread.

    The reactor only queues. While more than ``high_water`` bytes are queued, each producer
    that writes is paused; all are resumed once the queue falls to ``low_water``. A thread
    rather than ``O_NONBLOCK``: the flag belongs to the file description, which fd 1 and fd 2
    (and the parent shell) often share, and it does nothing for regular files.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        target: int | BinaryIO,
        high_water: int = 1 << 20,
        low_water: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._high = high_water
        self._low = high_water // 4 if low_water is None else low_water
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[bytes] = deque()
        self._queued = 0  # bytes not yet written; under _lock
        self._resume_wanted = False  # under _lock
        self._empty_wanted = False  # under _lock
        self._closing = False  # under _lock
        self._thread: threading.Thread | None = None
        self._paused: set[Producer] = set()  # reactor thread only
        self._empty_waiters: list[Deferred[None]] = []
        self._failed = False
        #: Whether everything queued so far ends with a newline (or nothing was queued).
        self.at_line_boundary = True

    @property
    def buffered(self) -> int:
        """Bytes queued and not yet written."""
        return self._queued

    def write(self, data: bytes, producer: Producer | None = None) -> None:
        """Queue ``data``; pause ``producer`` if the queue is over the high-water mark."""
        if not data:
            return
        self.at_line_boundary = data[-1:] == b"\n"
        with self._lock:
            self._queue.append(data)
            self._queued += len(data)
            over = self._queued > self._high
            if over and producer is not None:
                self._resume_wanted = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="lambdatx-output", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        if over and producer is not None and producer not in self._paused:
            self._paused.add(producer)
            producer.pauseProducing()

    def forget(self, producer: Producer) -> None:
        """Drop ``producer`` (it is gone) without resuming it."""
        self._paused.discard(producer)

    def flushed(self) -> Deferred[None]:
        """A Deferred that fires once everything queued so far has been written."""
        with self._lock:
            if self._queued == 0:
                return succeed(None)
            self._empty_wanted = True
        d: Deferred[None] = Deferred()
        self._empty_waiters.append(d)
        return d

    def close(self) -> None:
        """Let the writer thread end once the queue is empty (the target is not closed)."""
        with self._lock:
            self._closing = True
            self._wake.notify()

    # --- writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    self._thread = None
                    return
                chunks = []
                size = 0
                while self._queue and size < (256 << 10):
                    chunk = self._queue.popleft()
                    chunks.append(chunk)
                    size += len(chunk)
            self._write_out(b"".join(chunks) if len(chunks) > 1 else chunks[0])
            with self._lock:
                self._queued -= size
                if self._resume_wanted and self._queued <= self._low:
                    self._resume_wanted = False
                    self._reactor.callFromThread(self._resume_all)
                if self._empty_wanted and self._queued == 0:
                    self._empty_wanted = False
                    self._reactor.callFromThread(self._fire_empty)

    def _write_out(self, data: bytes) -> None:
        if self._failed:
            return
        try:
            if isinstance(self._target, int):
                view = memoryview(data)
                while view:
                    view = view[os.write(self._target, view) :]
            else:
                self._target.write(data)
                self._target.flush()
        except (OSError, ValueError) as e:
            # A closed stdout must not wedge the runtimes: drop output from now on.
            self._failed = True
            self._reactor.callFromThread(
                self.log.warn, "output target failed, dropping output: {error}", error=str(e)
            )

    # --- reactor thread --------------------------------------------------------------------

    def _resume_all(self) -> None:
        paused, self._paused = self._paused, set()
        for producer in paused:
            producer.resumeProducing()

    def _fire_empty(self) -> None:
        waiters, self._empty_waiters = self._empty_waiters, []
        for d in waiters:
            d.callback(None)


class _StreamProducer:
    """One stream of one process, as a producer an :class:`OutputSink` can pause."""

    def __init__(self, process: RuntimeProcess, fd: int) -> None:
        self._process = process
        self._fd = fd

    def pauseProducing(self) -> None:
        self._process._pause_stream(self._fd)

    def resumeProducing(self) -> None:
        self._process._resume_stream(self._fd)


class _ChildProtocol(ProcessProtocol):
    """Translates Twisted's callbacks into calls on the :class:`RuntimeProcess`."""

    def __init__(self, owner: RuntimeProcess) -> None:
        self._owner = owner

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self._owner._received(childFD, data)

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == _EXEC_REPORT:
            self._owner._settle_exec()

    def processExited(self, reason: Any) -> None:
        self._owner._exited(ExitStatus.from_wait_status(reason.value.status))


class RuntimeProcess:
    """
    One child program in its own session, on an injected reactor.

    :param argv: the program and its arguments; ``argv[0]`` is looked up in ``env["PATH"]``
        when it has no slash.
    :param env: the program's whole environment, passed exactly.
    :param cwd: its working directory; failing to enter it is an exec failure.
    :param stdout: where stdout is passed through, or ``None`` (observer only); same for
        ``stderr``.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str,
        observer: ProcessObserver,
        *,
        stdout: OutputSink | None,
        stderr: OutputSink | None,
    ) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self._reactor = reactor
        self._argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._observer = observer
        self._sinks = {STDOUT: stdout, STDERR: stderr}
        self._producers = {fd: _StreamProducer(self, fd) for fd in (STDOUT, STDERR)}
        self._paused_streams: set[int] = set()
        self._transport: Any = None
        self._exec_report = b""
        self._exec_settled = False
        self._kill_timer: Any = None
        self._memory = GroupMemory()
        #: The main process's pid, which is also its process group id; None before start.
        self.pid: int | None = None
        self.has_exited = False

    def start(self) -> None:
        """Spawn the child; raises ``OSError`` if even the trampoline cannot be spawned."""
        env_args = [f"{k}={v}" for k, v in self._env.items()]
        args = [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, self._cwd, str(len(env_args))]
        devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._transport = self._reactor.spawnProcess(
                _ChildProtocol(self),
                sys.executable,
                args + env_args + self._argv,
                env=self._env,
                childFDs={0: devnull, STDOUT: "r", STDERR: "r", _EXEC_REPORT: "r"},
            )
        finally:
            os.close(devnull)
        self.pid = self._transport.pid
        self._memory.pgid = self.pid
        self.log.debug("spawned {argv} as pid {pid}", argv=self._argv, pid=self.pid)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group; nothing once the main process has exited."""
        if self.pid is not None and not self.has_exited:
            self._killpg(sig)

    def _killpg(self, sig: int, alone_if_no_group: bool = True) -> None:
        assert self.pid is not None
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            if not alone_if_no_group:
                return
            # No such group yet: the trampoline has not called setsid, so it has no
            # descendants either. Signal it alone: until we hear of its exit it is not
            # reaped, so the pid is still its own.
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the group."""
        self.signal_group(signal.SIGKILL)

    def terminate(self, grace: float = 2.0) -> None:
        """SIGTERM the group, and SIGKILL it ``grace`` seconds later unless it has exited."""
        self.signal_group(signal.SIGTERM)
        if self._kill_timer is None and not self.has_exited and self.pid is not None:
            self._kill_timer = self._reactor.callLater(grace, self.kill)

    def sample_memory(self) -> int:
        """Take one sample of the group's memory now; returns :meth:`memory_peak_bytes`."""
        if not self.has_exited:
            self._memory.sample()
        return self._memory.peak

    def memory_peak_bytes(self) -> int:
        """Highest group RSS sum or single-process VmHWM seen so far, in bytes."""
        return self._memory.peak

    # --- from the protocol ---------------------------------------------------------------

    def _received(self, fd: int, data: bytes) -> None:
        if fd == _EXEC_REPORT:
            self._exec_report += data
            return
        try:
            self._observer.output(fd, data)
        except Exception:
            self.log.failure("observer.output failed")
        sink = self._sinks.get(fd)
        if sink is not None:
            sink.write(data, self._producers[fd])

    def _settle_exec(self) -> None:
        if self._exec_settled:
            return
        self._exec_settled = True
        report = self._exec_report.decode("utf-8", "replace")
        if report == ".":
            self._observer.exec_succeeded()
        elif report.startswith("."):
            self._observer.exec_failed(report[1:])
        else:
            self._observer.exec_failed(f"fork/exec {sys.executable}: trampoline did not run")

    def _exited(self, status: ExitStatus) -> None:
        # Grandchildren holding the pipes must not outlive the main process. The group id
        # stays valid while any member lives, and is not reused before they are all gone.
        self._killpg(signal.SIGKILL, alone_if_no_group=False)  # the pid is reaped already
        self.has_exited = True
        if self._kill_timer is not None and self._kill_timer.active():
            self._kill_timer.cancel()
        self._kill_timer = None
        self._drain_pipes()
        self._settle_exec()
        self.log.debug("pid {pid} exited: {status}", pid=self.pid, status=status.text)
        try:
            self._observer.exited(status)
        finally:
            for fd, sink in self._sinks.items():
                if sink is not None:
                    sink.forget(self._producers[fd])
            for fd in (STDOUT, STDERR, _EXEC_REPORT):
                self._transport.closeChildFD(fd)

    def _drain_pipes(self) -> None:
        """Read what the dead main process left in the pipes, so none of it is lost."""
        pipes = getattr(self._transport, "pipes", {})
        for fd in (_EXEC_REPORT, STDOUT, STDERR):
            pipe = pipes.get(fd)
            budget = _DRAIN_LIMIT
            while pipe is not None and budget > 0:
                try:
                    data = os.read(pipe.fileno(), 65536)
                except OSError as e:  # EAGAIN: nothing more for now
                    if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                        self.log.warn("reading fd {fd} at exit: {error}", fd=fd, error=str(e))
                    break
                if not data:
                    break
                budget -= len(data)
                self._received(fd, data)

    def _pause_stream(self, fd: int) -> None:
        if not self._paused_streams and not self.has_exited:
            self._transport.pauseProducing()
        self._paused_streams.add(fd)

    def _resume_stream(self, fd: int) -> None:
        self._paused_streams.discard(fd)
        if not self._paused_streams and not self.has_exited:
            self._transport.resumeProducing()


class GroupMemory:
    """
    Peak memory of one process group, from ``/proc`` (spec/lifecycle.md §8).

    Each sample takes the sum of ``VmRSS`` over the group's live processes, and each process's
    ``VmHWM``, which keeps a short peak that fell between samples.
    """

    log = Logger()
    _warned = False  # once per daemon, not per group

    def __init__(self, pgid: int | None = None) -> None:
        self.pgid = pgid
        self.peak = 0

    def sample(self) -> int:
        if self.pgid is None:
            return self.peak
        try:
            entries = os.listdir("/proc")
        except OSError as e:
            if not GroupMemory._warned:
                GroupMemory._warned = True
                self.log.warn("/proc is unreadable, memory is reported as 0: {error}", error=str(e))
            return self.peak
        total = 0
        for name in entries:
            if name.isdigit() and _pgrp(name) == self.pgid:
                rss, hwm = _rss_hwm(name)
                total += rss
                self.peak = max(self.peak, hwm)
        self.peak = max(self.peak, total)
        return self.peak


def _pgrp(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb", buffering=0) as f:
            stat = f.read()
        # comm may contain spaces and parentheses: fields start after the last ')'.
        return int(stat[stat.rindex(b")") + 2 :].split(None, 3)[2])
    except (OSError, ValueError, IndexError):
        return None


def _rss_hwm(pid: str) -> tuple[int, int]:
    """``VmRSS`` and ``VmHWM`` in bytes; zeros for a vanished process or a zombie."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb", buffering=0) as f:
            status = f.read()
    except OSError:
        return 0, 0
    for line in status.splitlines():
        if line.startswith(b"VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith(b"VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return rss, hwm
