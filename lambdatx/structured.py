"""
Runtime output as JSON lines, for ``USE_STRUCTURED_LOGGING=true`` (configuration.md §10).

Each line a runtime writes becomes one JSON object ``{"time", "stream", "instance",
"message"}`` on the same stream of the daemon, so stderr (daemon logs and runtime errors alike)
stays parseable line by line. A partial line waits for its end, or for the process's exit.
"""

from __future__ import annotations

import json
import time

from .process import OutputSink, Producer

_STREAMS = {1: "stdout", 2: "stderr"}


def _stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % int((now % 1) * 1000)


class JsonLines:
    """One process's one stream, turned into JSON lines on a shared :class:`OutputSink`."""

    def __init__(self, sink: OutputSink, fd: int, instance: int):
        self._sink = sink
        self._stream = _STREAMS.get(fd, str(fd))
        self._instance = instance
        self._partial = b""

    @property
    def at_line_boundary(self) -> bool:
        return self._sink.at_line_boundary

    def write(self, data: bytes, producer: Producer | None = None) -> None:
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if lines:
            self._sink.write(b"".join(self._event(line) for line in lines), producer)

    def forget(self, producer: Producer) -> None:
        """The process is gone: its last partial line is written as it is."""
        if self._partial:
            partial, self._partial = self._partial, b""
            self._sink.write(self._event(partial))
        self._sink.forget(producer)

    def flushed(self):
        return self._sink.flushed()

    def _event(self, line: bytes) -> bytes:
        record = {
            "time": _stamp(time.time()),
            "level": "info",
            "logger": "runtime",
            "stream": self._stream,
            "instance": self._instance,
            "message": line.decode("utf-8", "replace"),
        }
        return json.dumps(record).encode() + b"\n"
