"""
Runtimes started outside lambdatx, polling the shared Runtime API listener (runtime-api.md §1).

They behave like one multi-concurrent instance without a process: every pending ``/next`` is a
free slot, an invocation is complete when it is answered, and a timeout only answers the caller
(a late post gets 410). Nothing here is owned, so nothing is ever killed.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from .dispatcher import Dispatcher
from .errors import RuntimeShuttingDown
from .instance import IDLE, Instance
from .invocation import function_failure


class ExternalRuntimes(Instance):
    """
    Runtimes started outside lambdatx, served on the shared listener (runtime-api.md §1).

    Each pending ``/next`` is a free slot; posts are matched by request id; an invocation is
    complete when it is answered. Nothing here is owned: on timeout the caller is answered and
    a late post gets 410. It never counts toward MAX_CONCURRENCY.
    """

    def __init__(self, dispatcher: Dispatcher):
        super().__init__(dispatcher, None, None, -1)
        dispatcher.external = self
        self.multi = 1 << 30
        self.state = IDLE
        self.init_ms = None
        self._init_reported = True

    def __repr__(self) -> str:
        return "<ExternalRuntimes>"

    def start(self) -> None:  # pragma: no cover - never spawned
        raise NotImplementedError

    def _become_idle(self) -> None:
        self.state = IDLE

    def init_error(self, body: bytes, error_type: Optional[str]) -> None:
        self.log.warn("external runtime init error type={error_type}", error_type=error_type)

    def drain(self) -> None:
        pass

    def release_polls(self) -> None:
        """
        Grace over: pending external polls get 500, and invocations external runtimes still
        hold are answered (nothing of theirs can be stopped; a late post gets 410).
        """
        polls, self.polls = self.polls, deque()
        self.dispatcher.withdraw(self)
        for d, _alive in polls:
            if not d.called:
                d.errback(RuntimeShuttingDown())
        held = list(self.held.values())
        self.held.clear()
        now = self.clock.seconds()
        for job in held:
            self._remember_timed_out(job.request_id)
            message = (
                f"RequestId: {job.request_id} Error: the daemon shut down before the external "
                "runtime answered"
            )
            job.status, job.error_type = "error", "Runtime.ExitError"
            self.reports.error_lines(job.tail, job.request_id, message, job.error_type)
            job.answer(function_failure("Runtime.ExitError", message))
            self._complete(job, now)
