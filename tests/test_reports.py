"""Platform lines: formats and their place on stdout."""

from __future__ import annotations

from dataclasses import replace

from lambdatx.config import Config
from lambdatx.reports import LogTail, Reports


class Sink:
    def __init__(self):
        self.data = bytearray()

    @property
    def at_line_boundary(self):
        return not self.data or self.data.endswith(b"\n")

    def write(self, data, producer=None):
        self.data += data


def test_platform_lines_start_on_a_line_of_their_own():
    """After a runtime's unfinished line, START begins on a new line."""
    sink = Sink()
    reports = Reports(replace(Config(), print_reports=True), out=sink)
    sink.write(b"partial output")
    reports.start(None, "r1")
    sink.write(b"done\n")
    reports.start(None, "r2")
    assert sink.data.decode().splitlines() == [
        "partial output",
        "START RequestId: r1 Version: $LATEST",
        "done",
        "START RequestId: r2 Version: $LATEST",
    ]


def test_report_line_format():
    """REPORT has TAB-separated fields, Init Duration only when given, Status last."""
    sink = Sink()
    reports = Reports(replace(Config(), print_reports=True, memory_size=128), out=sink)
    reports.end_report(None, "r", 12.345, 5 * 1048576 + 1, 40.5, "error", "Runtime.ExitError")
    assert sink.data.decode() == (
        "END RequestId: r\n"
        "REPORT RequestId: r\tDuration: 12.35 ms\tBilled Duration: 53 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 6 MB\tInit Duration: 40.50 ms\tStatus: error\tError Type: Runtime.ExitError\n"
    )


def test_tail_keeps_the_last_4096_bytes_without_printing():
    """With reports off the tail still records the lines, bounded to 4 KB."""
    sink = Sink()
    reports = Reports(Config(), out=sink)
    tail = LogTail()
    tail.add(b"x" * 10000)
    reports.start(tail, "r")
    import base64

    decoded = base64.b64decode(tail.encoded())
    assert len(decoded) == 4096 and decoded.endswith(b"START RequestId: r Version: $LATEST\n")
    assert sink.data == b""
