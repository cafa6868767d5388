#!/usr/bin/env python3
"""
lambdatx benchmark, run by hand: ``python bench/bench.py [--quick]``. Prints a Markdown table.

It starts the daemon (the ``lambdatx`` console script beside this Python, or on PATH) with
``bench/fast_runtime.py`` as the function, on free loopback ports, and measures:

1. sequential latency: p50/p90/p99 over 2,000 invokes on one keep-alive connection, after a
   warm-up of 200;
2. throughput: 16 concurrent keep-alive clients for 10 s (after a 2 s warm-up) at
   MAX_CONCURRENCY 1 and 4: invokes/s, p50/p99, errors. The load generator is ``wrk`` with a Lua
   script when it is installed, else a multi-process asyncio client (``--loadgen python``);
3. cold start: daemon launch to the first answered invoke (runtime spawn included), median of 10;
4. the daemon's RSS (its own pid, not the runtimes) idle after start and after the load;
5. the same latency and throughput against a bare loopback HTTP/1.1 echo server (the floor).

Everything listens on 127.0.0.1, every loop is bounded in count and time, and every process the
script starts (daemons, their runtimes, the echo server, load generators) is killed on the way
out, including on Ctrl-C or SIGTERM.

Internal sub-commands (run by the script itself in separate processes): ``_echo PORT`` serves
the echo floor; ``_load HOST PORT CONNS SECONDS`` is one worker of the Python load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAST_RUNTIME = os.path.join(HERE, "fast_runtime.py")
INVOKE_PATH = "/2015-03-31/functions/function/invocations"
BODY = b'{"bench":"lambdatx","payload":"0123456789abcdef"}'
HOST = "127.0.0.1"
CLIENTS = 16

#: Reference figures, this machine (2 vCPU), Go echo runtime; None = not given.
REFERENCES = {
    "Go daemon": {"seq_p50": 0.29, "seq_rate": 3200, "mc1_rate": 4100, "mc4_rate": 5700},
    "twisted.web relay": {"seq_p50": 0.66, "seq_rate": 1400},
    "Twisted+httptools relay": {"seq_p50": 0.26, "seq_rate": 3400},
}

REQUEST = (
    f"POST {INVOKE_PATH} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
    f"Content-Length: {len(BODY)}\r\n\r\n"
).encode() + BODY

WRK_LUA = """\
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%.1f, "p99_us": %%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
""" % BODY.decode()


# --- process bookkeeping -------------------------------------------------------------------


class Processes:
    """Every process the bench starts, in its own session, killed with its descendants."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []
        #: pid -> create time of processes seen below ours: runtimes call setsid, so a killpg
        #: of the daemon's group does not reach them. The create time guards against pid reuse.
        self.descendants: dict[int, float] = {}

    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)
        self.started.append(proc)
        return proc

    def note_descendants(self, proc: subprocess.Popen) -> None:
        try:
            import psutil

            for child in psutil.Process(proc.pid).children(recursive=True):
                self.descendants[child.pid] = child.create_time()
        except Exception:
            pass

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        """SIGTERM (the daemon's graceful stop), then SIGKILL to the group and descendants."""
        if proc not in self.started:
            return
        self.note_descendants(proc)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group outlives its leader while a member lives; reaped just now, so no reuse.
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.started.remove(proc)
        self._kill_descendants()

    def _kill_descendants(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        for pid, created in list(self.descendants.items()):
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:
                    p.kill()
            except psutil.Error:
                pass
            del self.descendants[pid]

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc, grace=3.0)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def lambdatx_command() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "lambdatx")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("lambdatx")
    if found:
        return [found]
    sys.exit("bench: no lambdatx console script beside this Python nor on PATH (pip install -e .)")


# --- a minimal keep-alive HTTP/1.1 client ----------------------------------------------------


class Connection:
    """Raw-socket keep-alive client: one prebuilt request, Content-Length responses only."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def invoke(self, request: bytes = REQUEST) -> tuple[int, bytes]:
        self.sock.sendall(request)
        buf = self.buffer
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        head = buf[:end].decode("latin-1")
        status = int(head[9:12])
        length = None
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
                break
        if length is None:
            raise ConnectionError("response without Content-Length")
        start = end + 4
        while len(buf) - start < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        self.buffer = buf[start + length :]
        return status, buf[start : start + length]

    def close(self) -> None:
        self.sock.close()


def wait_answering(
    port: int, deadline: float, proc: subprocess.Popen | None = None
) -> tuple[float, float]:
    """
    Connect every 2 ms until the port accepts, then invoke until a 200. Returns the
    ``perf_counter`` times of the first accepted connection and of the first good answer.
    """
    accepted = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered on port {port} in time")
        try:
            conn = Connection(port, timeout=max(0.1, deadline - time.monotonic()))
        except OSError:
            time.sleep(0.002)
            continue
        if accepted is None:
            accepted = time.perf_counter()
        try:
            status, body = conn.invoke()
        except OSError:
            time.sleep(0.002)
            continue
        finally:
            conn.close()
        if status == 200 and body == BODY:
            return accepted, time.perf_counter()
        time.sleep(0.01)


# --- measurements ----------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def sequential(port: int, count: int, warmup: int) -> dict:
    conn = Connection(port)
    errors = 0
    try:
        for _ in range(warmup):
            conn.invoke()
        latencies = []
        clock = time.perf_counter
        started = clock()
        for _ in range(count):
            t0 = clock()
            status, body = conn.invoke()
            latencies.append(clock() - t0)
            if status != 200 or body != BODY:
                errors += 1
        elapsed = clock() - started
    finally:
        conn.close()
    latencies.sort()
    return {
        "p50": percentile(latencies, 50) * 1e3,
        "p90": percentile(latencies, 90) * 1e3,
        "p99": percentile(latencies, 99) * 1e3,
        "rate": count / elapsed,
        "errors": errors,
    }


def throughput(procs: Processes, loadgen: str, port: int, seconds: float, warmup: float) -> dict:
    if warmup > 0:
        _load_run(procs, loadgen, port, warmup)
    return _load_run(procs, loadgen, port, seconds)


def _load_run(procs: Processes, loadgen: str, port: int, seconds: float) -> dict:
    if loadgen == "wrk":
        return _wrk(procs, port, seconds)
    return _python_load(procs, port, seconds)


def _wrk(procs: Processes, port: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_LUA)
    try:
        # One wrk thread drives 16 connections easily and leaves the CPU to the daemon.
        argv = ["wrk", "-t1", f"-c{CLIENTS}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                "-s", script.name, f"http://{HOST}:{port}{INVOKE_PATH}"]  # fmt: skip
        proc = procs.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = proc.communicate(timeout=seconds + 30)
        finally:
            procs.stop(proc, grace=1.0)
    finally:
        os.unlink(script.name)
    for line in out.splitlines():
        if line.startswith("BENCH-RESULT "):
            r = json.loads(line[len("BENCH-RESULT ") :])
            errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
            return {
                "rate": r["requests"] / (r["duration_us"] / 1e6),
                "p50": r["p50_us"] / 1e3,
                "p99": r["p99_us"] / 1e3,
                "errors": errors,
                "requests": r["requests"],
            }
    raise RuntimeError("wrk printed no result:\n" + out)


def _python_load(procs: Processes, port: int, seconds: float) -> dict:
    workers = max(1, min(CLIENTS, os.cpu_count() or 1))
    per = [CLIENTS // workers + (1 if i < CLIENTS % workers else 0) for i in range(workers)]
    children = [
        procs.spawn([sys.executable, __file__, "_load", HOST, str(port), str(n), str(seconds)],
                    stdout=subprocess.PIPE, text=True)  # fmt: skip
        for n in per
    ]
    latencies: list[float] = []
    requests = errors = 0
    duration = 0.0
    try:
        for child in children:
            out, _ = child.communicate(timeout=seconds + 30)
            r = json.loads(out.strip().splitlines()[-1])
            latencies.extend(r["latencies"])
            requests += r["requests"]
            errors += r["errors"]
            duration = max(duration, r["duration"])
    finally:
        for child in children:
            procs.stop(child, grace=1.0)
    latencies.sort()
    return {
        "rate": requests / duration if duration else 0.0,
        "p50": percentile(latencies, 50) * 1e3,
        "p99": percentile(latencies, 99) * 1e3,
        "errors": errors,
        "requests": requests,
    }


def load_worker(host: str, port: int, conns: int, seconds: float) -> None:
    """One process of the Python load generator: ``conns`` closed-loop keep-alive clients."""

    async def client(stop_at: float, latencies: list, counts: list) -> None:
        clock = time.perf_counter
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts[1] += 1
            return
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while clock() < stop_at:
                t0 = clock()
                writer.write(REQUEST)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                latencies.append(clock() - t0)
                counts[0] += 1
                if head[9:12] != b"200" or body != BODY:
                    counts[1] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            counts[1] += 1
        finally:
            writer.close()

    async def run() -> dict:
        latencies: list[float] = []
        counts = [0, 0]
        start = time.perf_counter()
        stop_at = start + seconds
        await asyncio.wait_for(
            asyncio.gather(*(client(stop_at, latencies, counts) for _ in range(conns))),
            seconds + 20,
        )
        duration = time.perf_counter() - start
        return {"latencies": latencies, "requests": counts[0], "errors": counts[1],
                "duration": duration}  # fmt: skip

    print(json.dumps(asyncio.run(run())))


# --- the echo floor --------------------------------------------------------------------------


class EchoProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive echo of the request body; only what a benchmark client sends."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buffer = b""
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = 0
            for line in buf[:end].split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            start = end + 4
            if len(buf) - start < length:
                break
            body = buf[start : start + length]
            buf = buf[start + length :]
            out.append(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % len(body)
                + body
            )
        self.buffer = buf
        if out:
            self.transport.write(b"".join(out))


def echo_server(port: int) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(EchoProtocol, HOST, port, backlog=128)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print(f"echo listening on {HOST}:{port}", file=sys.stderr, flush=True)
        async with server:
            await stop.wait()

    asyncio.run(serve())


# --- the daemon ------------------------------------------------------------------------------


def daemon_env(port: int, runtime_port: int, max_concurrency: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMBDATX_", "AMQP_"))}
    env.update(
        PORT=str(port),
        INVOKE_API_HOST=HOST,
        RUNTIME_API_HOST=HOST,
        RUNTIME_API_PORT=str(runtime_port),
        MAX_CONCURRENCY=str(max_concurrency),
        AWS_LAMBDA_FUNCTION_NAME="bench",
        AWS_LAMBDA_FUNCTION_TIMEOUT="30",
        LOG_LEVEL="INFO",
        PRINT_REPORTS="false",
    )
    return env


class Daemon:
    def __init__(self, procs: Processes, max_concurrency: int, log_dir: str, tag: str) -> None:
        self.procs = procs
        self.port = free_port()
        self.runtime_port = free_port()
        while self.runtime_port == self.port:
            self.runtime_port = free_port()
        self.log_path = os.path.join(log_dir, f"daemon-{tag}.log")
        self.log = open(self.log_path, "wb")
        argv = lambdatx_command() + [sys.executable, FAST_RUNTIME]
        self.launched = time.perf_counter()
        self.proc = procs.spawn(
            argv, env=daemon_env(self.port, self.runtime_port, max_concurrency),
            stdout=self.log, stderr=subprocess.STDOUT, cwd=HERE,
        )  # fmt: skip

    def wait_answering(self, timeout: float = 30.0) -> tuple[float, float]:
        """Seconds from launch to the Invoke API accepting, and to the first answered invoke."""
        try:
            accepted, answered = wait_answering(self.port, time.monotonic() + timeout, self.proc)
        except RuntimeError as problem:
            self.log.flush()
            with open(self.log_path, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            raise RuntimeError(f"lambdatx: {problem}; its log ends:\n{tail}") from None
        return accepted - self.launched, answered - self.launched

    def rss_mib(self) -> float | None:
        try:
            import psutil

            return psutil.Process(self.proc.pid).memory_info().rss / 2**20
        except Exception:
            return None

    def stop(self) -> None:
        self.procs.stop(self.proc)
        self.log.close()


# --- the table -------------------------------------------------------------------------------


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def table(results: dict, meta: dict) -> str:
    refs = list(REFERENCES)
    header = ["measurement", "lambdatx", "echo floor"] + [f"{r} (ref)" for r in refs]
    rows: list[list[str]] = []

    def row(label: str, ours, floor, key: str | None = None, digits: int = 2) -> None:
        ref_cells = [fmt(REFERENCES[r].get(key) if key else None, digits) for r in refs]
        rows.append([label, fmt(ours, digits), fmt(floor, digits)] + ref_cells)

    seq, eseq = results["seq"], results["echo_seq"]
    n = meta["seq_count"]
    row(f"sequential p50, ms ({n:,} invokes, 1 conn)", seq["p50"], eseq["p50"], "seq_p50")
    row("sequential p90, ms", seq["p90"], eseq["p90"])
    row("sequential p99, ms", seq["p99"], eseq["p99"])
    row("sequential invokes/s", seq["rate"], eseq["rate"], "seq_rate", 0)
    row("sequential errors", seq["errors"], eseq["errors"], None, 0)
    echo = results["echo_load"]
    for mc in (1, 4):
        load = results[f"mc{mc}_load"]
        tag = f"{CLIENTS} clients, MC={mc}"
        row(f"{tag}: invokes/s ({meta['seconds']:g} s)", load["rate"], echo["rate"],
            f"mc{mc}_rate", 0)  # fmt: skip
        row(f"{tag}: p50, ms", load["p50"], echo["p50"])
        row(f"{tag}: p99, ms", load["p99"], echo["p99"])
        row(f"{tag}: errors", load["errors"], echo["errors"], None, 0)
    cold = [answered for _, answered in results["cold"]]
    listening = [accepted for accepted, _ in results["cold"]]
    n = len(cold)
    row(f"cold start: launch to first answer, median of {n}, ms", statistics.median(cold) * 1e3,
        None, None, 1)  # fmt: skip
    row("cold start: launch to first answer, min / max, ms",
        f"{min(cold) * 1e3:.1f} / {max(cold) * 1e3:.1f}", None)  # fmt: skip
    row(f"cold start: launch to Invoke API accepting, median of {n}, ms",
        statistics.median(listening) * 1e3, None, None, 1)  # fmt: skip
    for mc in (1, 4):
        row(f"daemon RSS idle after start, MiB (MC={mc})", results[f"mc{mc}_rss_idle"], None,
            None, 1)  # fmt: skip
        row(f"daemon RSS after load, MiB (MC={mc})", results[f"mc{mc}_rss_load"], None, None, 1)

    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    out = [line(header), "|" + "|".join(("-" * (w + 1)) + (":" if i else "-")
                                        for i, w in enumerate(widths)) + "|"]  # fmt: skip
    out += [line(r) for r in rows]
    return "\n".join(out)


def header_text(meta: dict) -> str:
    return "\n".join([
        f"## lambdatx benchmark{' (--quick)' if meta['quick'] else ''}",
        "",
        f"- machine: {meta['cpus']} vCPU, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, lambdatx {meta['version']}",
        "- runtime: bench/fast_runtime.py, a Python Runtime API echo client on one keep-alive "
        "http.client connection (no Go toolchain here, so not the Go echo runtime the reference "
        "figures used)",
        f"- sequential client: raw-socket keep-alive HTTP/1.1 in this process, "
        f"{meta['seq_warmup']} warm-up invokes then {meta['seq_count']:,} timed",
        f"- load generator: {meta['loadgen_text']}, {CLIENTS} keep-alive connections, "
        f"{meta['warmup']:g} s warm-up then {meta['seconds']:g} s measured",
        "- echo floor: asyncio HTTP/1.1 keep-alive echo server in its own process",
        f"- body: {len(BODY)} bytes of JSON; MC = MAX_CONCURRENCY; RSS = the daemon's own pid",
        "",
    ])  # fmt: skip


# --- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, procs: Processes, log_dir: str) -> None:
    quick = args.quick
    meta = {
        "quick": quick,
        "seq_count": 300 if quick else 2000,
        "seq_warmup": 50 if quick else 200,
        "seconds": 3.0 if quick else 10.0,
        "warmup": 1.0 if quick else 2.0,
        "cold_runs": 3 if quick else 10,
        "cpus": os.cpu_count(),
    }
    try:
        from importlib.metadata import version

        meta["version"] = version("lambdatx")
    except Exception:
        meta["version"] = "unknown"
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    if loadgen == "wrk":
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
        meta["loadgen_text"] = "wrk (" + (wrk_version.stdout.split("\n")[0].split(" [")[0]
                                          or "wrk") + ", 1 thread, Lua POST script)"  # fmt: skip
    else:
        meta["loadgen_text"] = (f"Python asyncio client in {min(CLIENTS, os.cpu_count() or 1)} "
                                "processes" + ("" if args.loadgen == "python" else ", wrk not installed") + ")")  # fmt: skip
    results: dict = {}

    def say(text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    # 5. The floor first, while nothing else runs.
    echo_port = free_port()
    echo = procs.spawn([sys.executable, __file__, "_echo", str(echo_port)],
                       stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_answering(echo_port, time.monotonic() + 15, echo)
        say("echo floor: sequential")
        results["echo_seq"] = sequential(echo_port, meta["seq_count"], meta["seq_warmup"])
        say(f"echo floor: {CLIENTS} clients")
        results["echo_load"] = throughput(procs, loadgen, echo_port, meta["seconds"],
                                          meta["warmup"])  # fmt: skip
    finally:
        procs.stop(echo, grace=2.0)

    # 1, 2, 4. The daemon at MAX_CONCURRENCY 1 then 4.
    for mc in (1, 4):
        daemon = Daemon(procs, mc, log_dir, f"mc{mc}")
        try:
            daemon.wait_answering()
            time.sleep(1.0)
            results[f"mc{mc}_rss_idle"] = daemon.rss_mib()
            if mc == 1:
                say("lambdatx: sequential")
                results["seq"] = sequential(daemon.port, meta["seq_count"], meta["seq_warmup"])
            say(f"lambdatx MC={mc}: {CLIENTS} clients")
            results[f"mc{mc}_load"] = throughput(procs, loadgen, daemon.port, meta["seconds"],
                                                 meta["warmup"])  # fmt: skip
            procs.note_descendants(daemon.proc)
            time.sleep(0.5)
            results[f"mc{mc}_rss_load"] = daemon.rss_mib()
        finally:
            daemon.stop()

    # 3. Cold starts.
    cold = []
    for i in range(meta["cold_runs"]):
        say(f"cold start {i + 1}/{meta['cold_runs']}")
        daemon = Daemon(procs, 1, log_dir, f"cold{i}")
        try:
            cold.append(daemon.wait_answering())
        finally:
            daemon.stop()
    results["cold"] = cold

    print(header_text(meta))
    print(table(results, meta))
    print()
    print("The echo floor has no MAX_CONCURRENCY: both 16-client rows show its one run. "
          "References are the figures given for this machine; '–' = not given.")  # fmt: skip


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "_echo":
        return echo_server(int(sys.argv[2]))
    if len(sys.argv) >= 2 and sys.argv[1] == "_load":
        host, port, conns, seconds = sys.argv[2:6]
        return load_worker(host, int(port), int(conns), float(seconds))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="300 sequential invokes, 3 s load runs, 3 cold starts")  # fmt: skip
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator for the 16-client runs (auto: wrk if installed)",
    )
    args = parser.parse_args()
    procs = Processes()

    def terminated(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    log_dir = tempfile.mkdtemp(prefix="lambdatx-bench-")
    try:
        run(args, procs, log_dir)
    except KeyboardInterrupt:
        print("bench: interrupted, cleaning up", file=sys.stderr)
        sys.exit(130)
    finally:
        # Ctrl-C again while cleaning up must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
