"""
lambdatx.process and lambdatx.reaper: ExitStatus without children, the rest with real children on
the real reactor (testing level 3). Every child is SIGKILLed in teardown by the ``spawner``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import pytest_twisted
from twisted.internet import process as twisted_process
from twisted.internet.task import LoopingCall

from lambdatx.process import ExitStatus, GroupMemory, OutputSink
from lambdatx.reaper import twisted_children
from process_helpers import BASE_ENV, Spawner, is_dead, python, wait_until

MiB = 1 << 20


@pytest.fixture
def spawner():
    """Starts children for one test; SIGKILLs every group and tracked pid afterwards."""
    from twisted.internet import reactor

    spawner = Spawner(reactor)
    try:
        yield spawner
    finally:
        spawner.cleanup()


@pytest.fixture
def pipe_sink():
    """An OutputSink writing into a pipe; returns (sink, read fd). Closed in teardown."""
    from twisted.internet import reactor

    made = []

    def make(full=False, **kwargs):
        r, w = os.pipe()
        os.set_blocking(r, False)
        if full:  # the writer thread blocks on its first write, until teardown
            os.set_blocking(w, False)
            try:
                while True:
                    os.write(w, b"\0" * 4096)
            except BlockingIOError:
                pass
            os.set_blocking(w, True)
        sink = OutputSink(reactor, w, **kwargs)
        made.append((sink, r, w))
        return sink, r

    yield make
    for sink, r, w in made:
        sink.close()
        os.close(r)  # a writer thread still blocked on the pipe gets EPIPE and stops
        if sink.buffered == 0:  # else the thread may still use w: leave it open
            os.close(w)


def read_available(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


# --- ExitStatus, no processes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "wait_status, text, clean",
    [
        (0, "exit status 0", True),
        (7 << 8, "exit status 7", False),
        (signal.SIGKILL, "signal: killed", False),
        (signal.SIGTERM, "signal: terminated", False),
        (signal.SIGSEGV | 0x80, "signal: segmentation fault (core dumped)", False),
        (signal.SIGXCPU, "signal: CPU time limit exceeded", False),
        (signal.SIGRTMIN + 1, f"signal: signal {signal.SIGRTMIN + 1}", False),
    ],
)
@pytest.mark.timeout(5)
def test_exit_status_text(wait_status, text, clean):
    """A wait status is worded as Go's os/exec words it, and only exit 0 is clean."""
    status = ExitStatus.from_wait_status(wait_status)
    assert status.text == text
    assert status.clean is clean


@pytest.mark.timeout(5)
def test_exit_status_fields():
    """ExitStatus keeps the exit code, the signal and the core flag apart."""
    assert ExitStatus.from_wait_status(3 << 8) == ExitStatus(3, None, False)
    assert ExitStatus.from_wait_status(signal.SIGABRT | 0x80) == ExitStatus(
        None, signal.SIGABRT, True
    )


@pytest.mark.timeout(5)
def test_memory_without_proc(monkeypatch, log_events):
    """With /proc unreadable the peak is 0 and one WARNING is logged, however many samples."""

    def unreadable(path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(GroupMemory, "_warned", False)
    monkeypatch.setattr(os, "listdir", unreadable)
    memory = GroupMemory(os.getpid())
    assert [memory.sample(), memory.sample()] == [0, 0]
    warnings = [e for e in log_events if "/proc is unreadable" in e.get("log_format", "")]
    assert len(warnings) == 1


# --- spawning ----------------------------------------------------------------------------------

PROBE = textwrap.dedent("""
    import json, os, stat
    def fd_open(fd):
        try:
            os.fstat(fd)
            return True
        except OSError:
            return False
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
    environ = open("/proc/self/environ", "rb").read().split(b"\\0")
    print(json.dumps({
        "pid": os.getpid(), "pgid": os.getpgid(0), "sid": os.getsid(0), "cwd": os.getcwd(),
        "env": sorted(e.decode() for e in environ if e),
        "stdin_rdev": os.fstat(0).st_rdev, "stdin_chr": stat.S_ISCHR(os.fstat(0).st_mode),
        "stdout_fifo": stat.S_ISFIFO(os.fstat(1).st_mode),
        "stderr_fifo": stat.S_ISFIFO(os.fstat(2).st_mode),
        "fd3_open": fd_open(3),
        "sig_blocked": status["SigBlk"].strip(),
    }))
    """)


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_child_in_own_session_with_exact_env_cwd_and_stdin(spawner, tmp_path):
    """The child leads its own session, gets exactly our env and cwd, and reads /dev/null."""
    env = {"PATH": BASE_ENV["PATH"], "WITH_EQUALS": "a=b=c", "EMPTY": "", "UNICODE": "é✓"}
    proc, observer = spawner.start(python(PROBE), env=env, cwd=str(tmp_path))
    status = await observer.when_exited()
    assert status == ExitStatus(0), observer.out[2]
    assert observer.events[0] == ("exec_succeeded",)
    probe = json.loads(observer.out[1])
    assert probe["pid"] == probe["pgid"] == probe["sid"] == proc.pid
    assert probe["cwd"] == str(tmp_path)
    # Exactly what we passed: the trampoline's own LC_CTYPE coercion must not leak through.
    assert probe["env"] == sorted(f"{k}={v}" for k, v in env.items())
    assert probe["stdin_chr"] and probe["stdin_rdev"] == os.stat(os.devnull).st_rdev
    assert probe["stdout_fifo"] and probe["stderr_fifo"]
    assert not probe["fd3_open"]  # the exec report pipe is close-on-exec
    assert int(probe["sig_blocked"], 16) == 0


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_signal_dispositions_are_reset(spawner):
    """Signals our Python ignores (SIGPIPE, SIGXFSZ) are back to default in the runtime."""
    _, observer = spawner.start(["/bin/cat", "/proc/self/status"])
    await observer.when_exited()
    fields = dict(line.split(":", 1) for line in observer.out[1].decode().splitlines())
    ignored = int(fields["SigIgn"].strip(), 16)
    # glibc's posix_spawn leaves its two internal signals (32, 33) ignored; glibc programs
    # install their own handlers for those, and no process can change them through glibc.
    glibc_internal = (1 << 31) | (1 << 32)
    assert ignored & ~glibc_internal == 0


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_output_passes_through_unmodified(spawner, pipe_sink):
    """stdout and stderr bytes reach their sinks and the observer unmodified, before exited()."""
    out_chunks = [b"no newline", b"\x00\xff\xfe binary\r\n", b"x" * 100_000, b"\nend"]
    err_chunks = [b"err1\n", b"\xc3(\n", b"err-last"]
    code = textwrap.dedent(f"""
        import os, time
        for a, b in zip({out_chunks!r}, {err_chunks!r} + [b""]):
            os.write(1, a); os.write(2, b); time.sleep(0.01)
        """)
    out_sink, out_r = pipe_sink()
    err_sink, err_r = pipe_sink()
    _, observer = spawner.start(python(code), stdout=out_sink, stderr=err_sink)
    got_out = bytearray()

    def pump():  # keep the stdout pipe moving: 100 kB is more than a pipe holds
        got_out.extend(read_available(out_r))

    loop = LoopingCall(pump)
    loop.start(0.005)
    try:
        status = await observer.when_exited()
        await out_sink.flushed().addTimeout(5, spawner.reactor)
        await err_sink.flushed().addTimeout(5, spawner.reactor)
        await wait_until(spawner.reactor, lambda: len(got_out) == len(b"".join(out_chunks)))
    finally:
        loop.stop()
    assert status.clean
    assert bytes(got_out) == b"".join(out_chunks)
    assert read_available(err_r) == b"".join(err_chunks)
    assert observer.out == {1: b"".join(out_chunks), 2: b"".join(err_chunks)}
    assert observer.output_at_exit == {1: len(observer.out[1]), 2: len(observer.out[2])}


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_output_left_in_pipes_at_exit_is_not_lost(spawner, pipe_sink):
    """Output still unread when the child exits (its reading paused) reaches the observer first."""
    # high_water=0: the first chunk pauses the child's pipes, and the sink never drains.
    sink, _ = pipe_sink(high_water=0, full=True)
    code = "import os, time; os.write(2, b'a'); time.sleep(0.3); os.write(2, b'b' * 50000)"
    proc, observer = spawner.start(python(code), stderr=sink)
    status = await observer.when_exited()
    assert status.clean
    assert observer.out[2] == b"a" + b"b" * 50000
    assert observer.output_at_exit[2] == 50001


@pytest.mark.parametrize(
    "case",
    ["missing", "not executable", "exec format", "bad cwd", "not in PATH"],
)
@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_exec_failures_are_reported(spawner, tmp_path, case):
    """A program that cannot be started is reported as exec_failed in Go's words, then exited."""
    path = tmp_path / "bootstrap"
    cwd = str(tmp_path)
    argv = [str(path)]
    if case == "missing":
        expected = f"fork/exec {path}: no such file or directory"
    elif case == "not executable":
        path.write_text("#!/bin/sh\necho hi\n")
        expected = f"fork/exec {path}: permission denied"
    elif case == "exec format":
        path.write_bytes(b"\x00\x01 not a program\n")
        path.chmod(0o755)
        expected = f"fork/exec {path}: exec format error"
    elif case == "bad cwd":
        path.write_text("#!/bin/sh\necho hi\n")
        path.chmod(0o755)
        cwd = str(tmp_path / "nowhere")
        expected = f"chdir {cwd}: no such file or directory"
    else:
        argv = ["lambdatx-no-such-program"]
        expected = 'exec: "lambdatx-no-such-program": executable file not found in $PATH'
    _, observer = spawner.start(argv, cwd=cwd)
    status = await observer.when_exited()
    assert observer.events == [("exec_failed", expected), ("exited", status)]
    assert not status.clean
    assert observer.out == {1: b"", 2: b""}


@pytest.mark.parametrize(
    "how, text",
    [
        ("exit", "exit status 7"),
        ("kill", "signal: killed"),
        ("term", "signal: terminated"),
        ("segv", "signal: segmentation fault"),
    ],
)
@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_exit_status_of_real_children(spawner, how, text):
    """Exit codes and deaths by signal are reported with the right text."""
    code = textwrap.dedent("""
        import os, resource, signal, sys, time
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        how = sys.argv[1]
        if how == "exit":
            sys.exit(7)
        if how == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        print("ready", flush=True)
        time.sleep(30)
        """)
    proc, observer = spawner.start(python(code) + [how])
    if how in ("kill", "term"):
        await observer.when_output(1, b"ready")
        proc.kill() if how == "kill" else proc.signal_group(signal.SIGTERM)
    status = await observer.when_exited()
    assert observer.events[0] == ("exec_succeeded",)
    assert status.text == text


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_kill_right_after_start(spawner):
    """kill() issued before the trampoline has reached setsid still kills the child."""
    proc, observer = spawner.start(python("import time; time.sleep(30)"))
    proc.kill()
    status = await observer.when_exited(timeout=5)
    assert status.text == "signal: killed"
    assert observer.events[-1] == ("exited", status)


GRANDCHILD = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen(["sleep", "60"])  # inherits our stdout and stderr pipes
    print(child.pid, flush=True)
    """)


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_grandchild_holding_stdout_does_not_delay_exit(spawner):
    """exited() comes promptly although a grandchild holds stdout, and the grandchild is killed."""
    proc, observer = spawner.start(python(GRANDCHILD))
    await observer.when_output(1, b"\n")
    grandchild = int(observer.out[1])
    spawner.track(grandchild)
    started = time.monotonic()
    status = await observer.when_exited(timeout=3)
    assert status.clean
    assert time.monotonic() - started < 3
    await wait_until(spawner.reactor, lambda: is_dead(grandchild), timeout=3)


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_terminate_escalates_to_kill(spawner):
    """terminate() sends SIGTERM to the group, then SIGKILL after the grace period."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(30)"
    )
    proc, observer = spawner.start(python(code))
    await observer.when_output(1, b"ready")
    started = time.monotonic()
    proc.terminate(grace=0.5)
    status = await observer.when_exited(timeout=5)
    assert status.text == "signal: killed"
    assert time.monotonic() - started >= 0.45


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_terminate_cancels_kill_when_child_obeys(spawner):
    """A child that honours SIGTERM exits 'terminated' and the SIGKILL timer is cancelled."""
    proc, observer = spawner.start(
        python("import time; print('ready', flush=True); time.sleep(30)")
    )
    await observer.when_output(1, b"ready")
    before = set(spawner.reactor.getDelayedCalls())
    proc.terminate(grace=5)
    armed = set(spawner.reactor.getDelayedCalls()) - before
    status = await observer.when_exited()
    assert status.text == "signal: terminated"
    assert armed and not any(call.active() for call in armed)


MEMORY = textwrap.dedent("""
    import signal
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
    print("start", flush=True)
    signal.sigwait([signal.SIGUSR1])
    block = b"\\x01" * (100 << 20)   # touched pages, unlike bytearray(n)
    del block
    print("freed", flush=True)
    signal.sigwait([signal.SIGUSR1])
    """)


@pytest.mark.timeout(20)
@pytest_twisted.ensureDeferred
async def test_memory_peak_keeps_a_freed_allocation(spawner):
    """The peak grows by ~100 MB after an allocation, though sampled only once it was freed."""
    proc, observer = spawner.start(python(MEMORY))
    await observer.when_output(1, b"start")
    before = proc.sample_memory()
    assert 0 < before < 60 * MiB
    proc.signal_group(signal.SIGUSR1)
    await observer.when_output(1, b"freed")
    after = proc.sample_memory()
    assert after >= before + 95 * MiB
    assert proc.memory_peak_bytes() == after
    proc.kill()
    await observer.when_exited()
    assert proc.sample_memory() == after  # never decreases, even with the group gone


@pytest.mark.timeout(20)
@pytest_twisted.ensureDeferred
async def test_memory_sums_the_group(spawner):
    """Resident sizes of all the group's processes are summed: two 40 MB processes exceed 80 MB."""
    code = (
        "import os, sys, time; os.fork(); block = b'\\x01' * (40 << 20); "
        "print('ready', flush=True); time.sleep(30)"
    )
    proc, observer = spawner.start(python(code))
    await wait_until(spawner.reactor, lambda: observer.out[1].count(b"ready") == 2)
    assert proc.sample_memory() >= 80 * MiB
    proc.kill()
    await observer.when_exited()


FLOOD = textwrap.dedent("""
    import os
    for i in range(800):  # 800 x 64 KiB = 50 MiB, each block different
        block = (b"%08d" % i) * 8192
        view = memoryview(block)
        while view:
            view = view[os.write(1, view):]
    """)


@pytest.mark.timeout(90)
@pytest_twisted.ensureDeferred
async def test_output_flood_with_slow_consumer(spawner, pipe_sink):
    """50 MiB reach a slow reader whole and in order, with a bounded buffer and a free reactor."""
    reactor = spawner.reactor
    sink, read_end = pipe_sink(high_water=256 << 10)
    expected = hashlib.sha256(b"".join((b"%08d" % i) * 8192 for i in range(800))).hexdigest()
    received = hashlib.sha256()
    counts = {"bytes": 0, "max_buffered": 0, "max_gap": 0.0, "last": time.monotonic()}

    def slow_reader():
        data = b""
        try:
            data = os.read(read_end, 128 << 10)
        except BlockingIOError:
            pass
        received.update(data)
        counts["bytes"] += len(data)
        now = time.monotonic()
        counts["max_gap"] = max(counts["max_gap"], now - counts["last"])
        counts["last"] = now
        counts["max_buffered"] = max(counts["max_buffered"], sink.buffered)

    loop = LoopingCall(slow_reader)
    loop.start(0.002)
    try:
        proc, observer = spawner.start(python(FLOOD), stdout=sink)
        status = await observer.when_exited(timeout=80)
        await wait_until(reactor, lambda: counts["bytes"] == 50 * MiB, timeout=30)
    finally:
        loop.stop()
    assert status.clean, observer.out[2]
    assert received.hexdigest() == expected
    assert hashlib.sha256(observer.out[1]).hexdigest() == expected
    assert counts["max_buffered"] <= (256 << 10) + 2 * MiB
    assert counts["max_gap"] < 0.5


# --- pins on Twisted internals (NOTES.md: keep a test that fails loudly) ---------------------


@pytest.mark.timeout(15)
@pytest_twisted.ensureDeferred
async def test_twisted_internals_we_rely_on(spawner):
    """Twisted still keeps reapProcessHandlers and Process.pipes, which reaper and drain use."""
    proc, observer = spawner.start(python("import time; time.sleep(30)"))
    assert proc.pid in twisted_process.reapProcessHandlers
    assert proc.pid in twisted_children()
    transport = twisted_process.reapProcessHandlers[proc.pid]
    assert {1, 2, 3} <= set(transport.pipes)
    proc.kill()
    await observer.when_exited()


# --- reaper ------------------------------------------------------------------------------------

REAPER_CHECK = textwrap.dedent("""
    import json, os, sys, time
    from lambdatx.reaper import ZombieReaper, become_subreaper, is_subreaper
    assert become_subreaper() and is_subreaper()
    r, w = os.pipe()
    child = os.fork()
    if child == 0:                      # the child forks an orphan-to-be, then exits
        if os.fork() == 0:
            os.close(w)
            os.read(r, 1)               # EOF once our parent is gone and the test closed w
            os._exit(5)
        os._exit(0)
    time.sleep(0.2)                     # child is now our zombie; its child is ours
    os.close(w)                         # let the orphan exit
    time.sleep(0.3)
    reaped = ZombieReaper(None, known=lambda: {child}).reap()
    _, status = os.waitpid(child, 0)    # the known child's status was not stolen
    print(json.dumps({"reaped": [(p, s.text) for p, s in reaped], "child": status}))
    """)


@pytest.mark.timeout(20)
def test_reaper_reaps_only_foreign_zombies():
    """As a subreaper, reap() waits for an orphan's zombie but leaves known children alone."""
    result = subprocess.run(
        [sys.executable, "-c", REAPER_CHECK],
        capture_output=True,
        timeout=15,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [text for _, text in report["reaped"]] == ["exit status 5"]
    assert report["child"] == 0
