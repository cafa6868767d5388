"""
Platform lines: START, END, REPORT, INIT_REPORT, timeout and error lines (lifecycle.md §7).

Every line goes into the invocation's log tail when its caller asked for ``Tail``, and to
stdout when ``PRINT_REPORTS`` is on. Nothing is formatted when neither needs it.
"""

from __future__ import annotations

import base64
import math
import sys
import time
from typing import Callable

TAIL_BYTES = 4096


def _utc_stamp(now: float) -> str:
    t = time.gmtime(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % int((now % 1) * 1000)


class LogTail:
    """The last 4096 bytes of one invocation's log."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def add(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if len(buf) > 2 * TAIL_BYTES:
            del buf[: len(buf) - TAIL_BYTES]

    def encoded(self) -> str:
        return base64.b64encode(bytes(self.buf[-TAIL_BYTES:])).decode()


class Reports:
    """Writes platform lines to stdout (PRINT_REPORTS) and to log tails."""

    def __init__(self, config, write: Callable[[bytes], None] | None = None, out=None):
        """``out``: the stdout sink runtimes share (``write`` and ``at_line_boundary``)."""
        self.enabled = config.print_reports
        self.version = config.function_version
        self.memory_size = config.memory_size
        self._out = out
        self._write = write or (out.write if out is not None else self._stdout_write)

    @staticmethod
    def _stdout_write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def wanted(self, tail: LogTail | None) -> bool:
        return self.enabled or tail is not None

    def emit(self, tail: LogTail | None, text: str) -> None:
        data = text.encode() + b"\n"
        if tail is not None:
            tail.add(data)
        if self.enabled:
            out = self._out
            if out is not None and not out.at_line_boundary:
                # A runtime's unfinished line: platform lines start on a line of their own.
                data = b"\n" + data
            self._write(data)

    def start(self, tail: LogTail | None, request_id: str) -> None:
        if self.enabled or tail is not None:
            self.emit(tail, f"START RequestId: {request_id} Version: {self.version}")

    def timeout_line(self, tail: LogTail | None, request_id: str, seconds: float, now: float) -> None:
        if self.enabled or tail is not None:
            self.emit(
                tail, f"{_utc_stamp(now)} {request_id} Task timed out after {seconds:.2f} seconds"
            )

    def error_lines(self, tail: LogTail | None, request_id: str, message: str, error_type: str) -> None:
        """``RequestId: <id> Error: <message>`` then the error type on its own line."""
        if self.enabled or tail is not None:
            prefix = f"RequestId: {request_id} Error: "
            if message.startswith(prefix):
                message = message[len(prefix):]
            self.emit(tail, f"{prefix}{message}\n{error_type}")

    def init_report(
        self, tail: LogTail | None, init_ms: float, status: str, error_type: str | None
    ) -> None:
        if self.enabled or tail is not None:
            line = f"INIT_REPORT Init Duration: {init_ms:.2f} ms\tPhase: init\tStatus: {status}"
            if status == "error" and error_type:
                line += f"\tError Type: {error_type}"
            self.emit(tail, line)

    def end_report(
        self,
        tail: LogTail | None,
        request_id: str,
        duration_ms: float,
        max_memory_bytes: int,
        init_ms: float | None,
        status: str | None,
        error_type: str | None,
    ) -> None:
        if not (self.enabled or tail is not None):
            return
        billed = math.ceil(duration_ms + (init_ms or 0.0))
        used_mb = math.ceil(max_memory_bytes / 1048576)
        line = (
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {billed} ms\tMemory Size: {self.memory_size} MB\t"
            f"Max Memory Used: {used_mb} MB\t"
        )
        if init_ms is not None:
            line += f"Init Duration: {init_ms:.2f} ms\t"
        if status:
            line += f"Status: {status}"
            if status == "error" and error_type:
                line += f"\tError Type: {error_type}"
        self.emit(tail, f"END RequestId: {request_id}\n{line}")
