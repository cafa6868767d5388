"""
An instance: one runtime process group with its own Runtime API listener (lifecycle.md §1-2).

States (nouns, as in the spec): ``starting`` → ``initialising`` → ``idle`` ⇄ ``busy`` →
``draining`` → ``dead``. The Runtime API routes of the instance's listener call
:meth:`next_invocation`, :meth:`invocation_response`, :meth:`invocation_error` and
:meth:`init_error`; the process layer calls the :class:`lambdatx.process.ProcessObserver`
methods. Each raises :mod:`lambdatx.errors` runtime-side exceptions on misuse.

Classic instances hold one invocation, which is complete when the runtime polls ``/next``
again; a timeout kills the group. Multi-concurrent instances (``AWS_LAMBDA_MAX_CONCURRENCY``)
hold one invocation per pending poll, complete each at its response, and only fail an
invocation on timeout (its late post gets 410).
"""

from __future__ import annotations

import json
from collections import deque
from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .dispatcher import RESPONDED, RUNNING, Dispatcher, Job
from .errors import InvalidRequestID, InvalidStateTransition, InvokeTimeout
from .invocation import JSON, Outcome, exit_error, function_failure, timed_out

STARTING, INITIALISING, IDLE, BUSY, DRAINING, DEAD = (
    "starting",
    "initialising",
    "idle",
    "busy",
    "draining",
    "dead",
)

#: Seconds a runtime gets to exit by itself after /init/error, and between TERM and KILL.
EXIT_GRACE = 2.0
#: How many timed-out request ids an instance remembers for the 410 answer.
TIMED_OUT_MEMORY = 1000
#: Seconds between memory samples of a group holding an invocation (when reports are wanted).
MEMORY_SAMPLE_INTERVAL = 0.1


class Instance:
    log = Logger()

    def __init__(self, dispatcher: Dispatcher, launcher, job: Optional[Job], slot: int):
        self.dispatcher = dispatcher
        self.config = config = dispatcher.config
        self.clock = dispatcher.clock
        self.reports = dispatcher.reports
        self.launcher = launcher
        self.slot = slot
        self.state = STARTING
        #: Invocations a multi-concurrent instance may hold (None = classic).
        self.multi = config.runtime_max_concurrency
        #: Pending /next polls: (Deferred, is_alive) pairs, oldest first.
        self.polls: deque = deque()
        #: Held invocations by request id (classic: at most one).
        self.held: dict[str, Job] = {}
        #: The invocation that caused the cold start, until the first /next.
        self.assigned = job
        #: Classic: the held invocation was answered (/response, /error, 413).
        self.responded = False
        self.init_errored = False
        self.init_ms: Optional[float] = None
        self.exit_status = None
        #: Recently timed-out ids (multi-concurrent and external): late posts get 410.
        self.timed_out_ids: dict[str, None] = {}
        self.process = None
        self.port = None
        self.spawned_at = 0.0
        self._init_timer = None
        self._idle_timer = None
        self._kill_timer = None
        self._killed_for: Optional[Job] = None
        self._sampler = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"<Instance slot={self.slot} pid={pid} {self.state}>"

    # --- dispatcher queries -----------------------------------------------------------------

    def has_free_poll(self) -> bool:
        return bool(self.polls) and self.state in (IDLE, BUSY)

    def about_to_poll(self) -> bool:
        """Classic ``busy/responded``: it will most likely poll again at once."""
        return (
            self.state == BUSY
            and self.responded
            and self.multi is None
            and self._killed_for is None
        )

    def is_idle(self) -> bool:
        return self.state == IDLE

    def held_count(self) -> int:
        return len(self.held)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.spawned_at = self.clock.seconds()
        self.port = self.launcher.listen(self)
        self._init_timer = self.clock.callLater(self.config.init_budget, self._init_timeout)
        self.process = self.launcher.spawn(self)
        job = self.assigned
        if self.reports.wanted(job.tail if job is not None else None):
            self.process.sample_memory()
            self._start_sampling()

    def abandon(self) -> None:
        """``start`` failed: release what it opened; the dispatcher answers the caller."""
        self.state = DEAD
        self.assigned = None
        for name in ("_init_timer", "_sampler"):
            self._cancel(name)
        if self.port is not None:
            self.launcher.closed(self)

    def unassign(self, job: Job) -> None:
        """The cold start's caller left before init finished."""
        if self.assigned is job:
            self.assigned = None

    def drain(self) -> None:
        """Stop taking work; SIGTERM the group, SIGKILL after the grace."""
        if self.state in (DRAINING, DEAD):
            return
        self.state = DRAINING
        self._cancel("_idle_timer")
        self.dispatcher.withdraw(self)
        if self.process is not None:
            self.process.terminate(EXIT_GRACE)

    def terminate_for_shutdown(self) -> None:
        """Grace over: TERM the group even though it holds invocations."""
        if self.state == DEAD:
            return
        self.state = DRAINING
        self.dispatcher.withdraw(self)
        if self.process is not None:
            self.process.terminate(EXIT_GRACE)

    # --- Runtime API ------------------------------------------------------------------------

    def next_invocation(self, is_alive: Callable[[], bool]) -> Deferred:
        state = self.state
        if self._killed_for is not None:
            # Timed out and SIGKILLed: a poll that was already on its way takes nothing.
            return Deferred()
        if state == INITIALISING or state == STARTING:
            if self.init_errored:
                raise InvalidStateTransition("Init", "Next")
            self._init_done()
            job, self.assigned = self.assigned, None
            if job is not None:
                d = Deferred()
                self._start_job(job)
                d.callback(job)
                return d
        elif state == BUSY and self.multi is None:
            if not self.responded:
                raise InvalidStateTransition("Invoking", "Next")
            self._complete_classic()
        elif state == IDLE or state == BUSY:
            if self.multi is None:
                if any(alive() for _, alive in self.polls):
                    raise InvalidStateTransition("Ready", "Next")
                self.polls.clear()
            elif len(self.polls) + len(self.held) >= self.multi:
                raise InvalidStateTransition("Ready", "Next")
        else:
            # draining or dead: the group is being stopped; the poll just waits.
            return Deferred()
        d = Deferred(self._poll_cancelled)
        self.polls.append((d, is_alive))
        if self.multi is None or not self.held:
            self._become_idle()
        self.dispatcher.offer(self)
        return d

    def dispatch(self, job: Job) -> bool:
        """Hand ``job`` to a pending poll; False when no poll is still connected."""
        polls = self.polls
        while polls:
            d, alive = polls.popleft()
            if d.called:
                continue
            if not alive():
                continue
            self._start_job(job)
            d.callback(job)
            return True
        return False

    def invocation_response(self, request_id: str, body: bytes, content_type: str) -> None:
        job = self._held(request_id, "Response")
        self._answered(job, Outcome(body, content_type))

    def invocation_error(self, request_id: str, body: bytes, error_type: Optional[str]) -> None:
        job = self._held(request_id, "Error")
        self.log.debug(
            "function error type={error_type} request_id={request_id}",
            error_type=error_type,
            request_id=request_id,
        )
        self._answered(job, Outcome(body, JSON, True, error_type))

    def response_too_large(self, request_id: str) -> None:
        """A /response or /error body crossed the limit (the runtime gets 413)."""
        try:
            job = self._held(request_id, "Response")
        except (InvalidRequestID, InvalidStateTransition, InvokeTimeout):
            return
        limit = self.config.max_response_bytes
        message = f"Response payload size exceeded maximum allowed payload size ({limit} bytes)."
        self.log.warn("response too large request_id={request_id}", request_id=request_id)
        job.status, job.error_type = "error", "Function.ResponseSizeTooLarge"
        self.reports.error_lines(job.tail, request_id, message, job.error_type)
        self._answered(job, function_failure("Function.ResponseSizeTooLarge", message))

    def invalid_response_mode(self, request_id: str, value: bytes) -> None:
        """The runtime gets 400; the caller is answered at once instead of timing out."""
        try:
            job = self._held(request_id, "Response")
        except (InvalidRequestID, InvalidStateTransition, InvokeTimeout):
            return
        self.log.warn("invalid response mode value={value!r}", value=value)
        message = (
            f"RequestId: {request_id} Error: Invalid Lambda-Runtime-Function-Response-Mode header"
        )
        job.status, job.error_type = "error", "Runtime.InvalidResponseModeHeader"
        self.reports.error_lines(job.tail, request_id, message, job.error_type)
        self._answered(job, function_failure("Runtime.InvalidResponseModeHeader", message))

    def init_error(self, body: bytes, error_type: Optional[str]) -> None:
        if self.state not in (STARTING, INITIALISING):
            if self.state == BUSY and self.multi is None:
                from_state = "Responded" if self.responded else "Invoking"
            else:
                from_state = "Ready"
            raise InvalidStateTransition(from_state, "InitError")
        if self.init_errored:
            raise InvalidStateTransition("Init", "InitError")
        self.init_errored = True
        init_ms = (self.clock.seconds() - self.spawned_at) * 1000
        self.log.warn("init error type={error_type}", error_type=error_type)
        job, self.assigned = self.assigned, None
        if job is not None:
            tail = job.tail
            self.reports.init_report(tail, init_ms, "error", error_type)
            job.status, job.error_type = "error", error_type or "Runtime.Unknown"
            job.dispatched_at = self.spawned_at
            self._report_failed_init(job, Outcome(body, JSON, True, error_type), init_ms)
        else:
            self.reports.init_report(None, init_ms, "error", error_type)
        self._cancel("_init_timer")
        self._kill_timer = self.clock.callLater(EXIT_GRACE, self._kill)

    # --- process observer -------------------------------------------------------------------

    def exec_succeeded(self) -> None:
        if self.state == STARTING:
            self.state = INITIALISING

    def exec_failed(self, reason: str) -> None:
        self.log.error("spawn failed: {reason}", reason=reason)
        job, self.assigned = self.assigned, None
        if job is not None:
            message = f"RequestId: {job.request_id} Error: {reason}"
            init_ms = (self.clock.seconds() - self.spawned_at) * 1000
            self.reports.init_report(job.tail, init_ms, "error", "Runtime.InvalidEntrypoint")
            job.status, job.error_type = "error", "Runtime.InvalidEntrypoint"
            job.dispatched_at = self.spawned_at
            self._report_failed_init(
                job, function_failure("Runtime.InvalidEntrypoint", message), init_ms, message
            )
        self.init_errored = True

    def output(self, fd: int, data: bytes) -> None:
        for job in self.held.values():
            if job.tail is not None:
                job.tail.add(data)
        job = self.assigned
        if job is not None and job.tail is not None:
            job.tail.add(data)

    def exited(self, status) -> None:
        self.exit_status = status
        self._die(status)

    # --- internals --------------------------------------------------------------------------

    def _held(self, request_id: str, to: str) -> Job:
        job = self.held.get(request_id)
        if job is None:
            if request_id in self.timed_out_ids:
                raise InvokeTimeout()
            raise InvalidRequestID()
        if job.state != RUNNING:
            raise InvalidStateTransition("Responded", to)
        return job

    def _answered(self, job: Job, outcome: Outcome) -> None:
        job.state = RESPONDED
        if self.multi is None:
            self.responded = True
            job.answer(outcome)
        else:
            job.answer(outcome)
            self._complete(job, self.clock.seconds())
            del self.held[job.request_id]
            if not self.held and self.polls:
                self._become_idle()

    def _init_done(self) -> None:
        self._cancel("_init_timer")
        self.init_ms = (self.clock.seconds() - self.spawned_at) * 1000
        self.state = IDLE
        self.log.debug("runtime ready init_ms={init_ms:.2f}", init_ms=self.init_ms)

    def _become_idle(self) -> None:
        self.state = IDLE
        idle = self.config.idle_timeout
        if idle and self._idle_timer is None:
            self._idle_timer = self.clock.callLater(idle, self._idle_expired)

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if self.state == IDLE and not self.held:
            self.log.info("reaping idle runtime slot={slot}", slot=self.slot)
            self.drain()

    def _start_job(self, job: Job) -> None:
        self._cancel("_idle_timer")
        now = self.clock.seconds()
        job.state = RUNNING
        job.instance = self
        job.dispatched_at = now
        timeout = self.config.timeout
        job.deadline_ms = int((now + timeout) * 1000)
        job.timer = self.clock.callLater(timeout, self._deadline, job)
        if self.init_ms is not None and not getattr(self, "_init_reported", False):
            self._init_reported = True
            job.init_ms = self.init_ms
        self.held[job.request_id] = job
        if self.multi is None:
            self.state = BUSY
            self.responded = False
        elif len(self.held) >= self.multi or not self.polls:
            self.state = BUSY
        self.reports.start(job.tail, job.request_id)
        if self.process is not None and self.reports.wanted(job.tail):
            self.process.sample_memory()
            self._start_sampling()

    def _poll_cancelled(self, d: Deferred) -> None:
        for i, (pd, _alive) in enumerate(self.polls):
            if pd is d:
                del self.polls[i]
                break
        if not self.polls:
            self.dispatcher.withdraw(self)

    def _complete_classic(self) -> None:
        job = next(iter(self.held.values()))
        self.held.clear()
        self._complete(job, self.clock.seconds())

    def _complete(self, job: Job, now: float) -> None:
        """END and REPORT, then release a Tail caller."""
        timer, job.timer = job.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        duration = (now - job.dispatched_at) * 1000
        if job.error_type == "Sandbox.Timedout":
            duration = min(duration, self.config.timeout * 1000)
        if self.reports.wanted(job.tail):
            memory = 0
            if self.process is not None:
                self.process.sample_memory()
                memory = self.process.memory_peak_bytes()
            self.reports.end_report(
                job.tail, job.request_id, duration, memory, job.init_ms, job.status, job.error_type
            )
        job.completed()
        if not self.held:
            self._stop_sampling()

    def _start_sampling(self) -> None:
        """Sample the group's memory every 100 ms while it holds an invocation (lifecycle §8)."""
        if self._sampler is None:
            self._sampler = self.clock.callLater(MEMORY_SAMPLE_INTERVAL, self._sample)

    def _sample(self) -> None:
        self._sampler = None
        busy = self.held or self.state in (STARTING, INITIALISING)
        if self.process is not None and busy and self.state != DEAD:
            self.process.sample_memory()
            self._sampler = self.clock.callLater(MEMORY_SAMPLE_INTERVAL, self._sample)

    def _stop_sampling(self) -> None:
        self._cancel("_sampler")

    def _report_failed_init(
        self, job: Job, outcome: Outcome, init_ms: float, message: Optional[str] = None
    ) -> None:
        """An assigned invocation that never ran: START, error lines, END, REPORT."""
        job.state = RUNNING
        job.init_ms = init_ms
        self.reports.start(job.tail, job.request_id)
        if message is not None:
            self.reports.error_lines(job.tail, job.request_id, message, job.error_type)
        job.answer(outcome)
        self._complete(job, self.clock.seconds())

    def _deadline(self, job: Job) -> None:
        job.timer = None
        if job.state == RUNNING or job.state == RESPONDED:
            timeout = self.config.timeout
            self.log.info("task timed out request_id={request_id}", request_id=job.request_id)
            self.reports.timeout_line(job.tail, job.request_id, timeout, self.clock.seconds())
            job.status = "timeout"
            job.error_type = "Sandbox.Timedout"
            job.answer(timed_out(job.request_id, timeout))
            if self.multi is None:
                self._killed_for = job
                self.dispatcher.withdraw(self)
                self._kill()
            else:
                self.held.pop(job.request_id, None)
                self._remember_timed_out(job.request_id)
                self._complete(job, self.clock.seconds())

    def _init_timeout(self) -> None:
        self._init_timer = None
        if self.state not in (STARTING, INITIALISING):
            return
        budget = self.config.init_budget
        self.log.warn("init timed out after {budget}s", budget=budget)
        self.init_errored = True
        job, self.assigned = self.assigned, None
        if job is not None:
            self.reports.init_report(job.tail, budget * 1000, "timeout", None)
            job.status = "timeout"
            job.dispatched_at = self.spawned_at
            self._report_failed_init(job, timed_out(job.request_id, budget), budget * 1000)
        self._kill()

    def _kill(self) -> None:
        self._kill_timer = None
        if self.process is not None and self.state != DEAD:
            self.process.kill()

    def _die(self, status) -> None:
        if self.state == DEAD:
            return
        was = self.state
        self.state = DEAD
        for name in ("_init_timer", "_idle_timer", "_kill_timer", "_sampler"):
            self._cancel(name)
        self.dispatcher.withdraw(self)
        self.polls.clear()
        now = self.clock.seconds()
        reason = None if status is None or status.clean else status.text
        job, self.assigned = self.assigned, None
        if job is not None and not self.init_errored:
            # Exit during init, without /init/error.
            self.log.warn("runtime exited during init: {reason}", reason=reason)
            init_ms = (now - self.spawned_at) * 1000
            self.reports.init_report(job.tail, init_ms, "error", "Runtime.ExitError")
            job.status, job.error_type = "error", "Runtime.ExitError"
            job.dispatched_at = self.spawned_at
            outcome = exit_error(job.request_id, reason)
            self.reports.start(job.tail, job.request_id)
            self.reports.error_lines(job.tail, job.request_id, _message(outcome), "Runtime.ExitError")
            job.state = RUNNING
            job.init_ms = init_ms
            job.answer(outcome)
            self._complete(job, now)
        elif was in (STARTING, INITIALISING) and not self.init_errored:
            self.log.warn("runtime exited during init: {reason}", reason=reason)
            init_ms = (now - self.spawned_at) * 1000
            self.reports.init_report(None, init_ms, "error", "Runtime.ExitError")
        held = list(self.held.values())
        self.held.clear()
        for job in held:
            if job is self._killed_for:
                self._complete(job, now)
                continue
            if job.status is None:
                job.status, job.error_type = "error", "Runtime.ExitError"
            outcome = exit_error(job.request_id, reason)
            self.reports.error_lines(
                job.tail, job.request_id, _message(outcome), "Runtime.ExitError"
            )
            if not job.answered:
                self.log.warn(
                    "runtime exited status={reason} request_id={request_id}",
                    reason=reason,
                    request_id=job.request_id,
                )
                job.answer(outcome)
            self._complete(job, now)
        if was == IDLE and self._killed_for is None:
            self.log.warn("idle runtime exited: {reason}", reason=reason)
        self.launcher.closed(self)
        self.dispatcher.instance_dead(self)

    def _remember_timed_out(self, request_id: str) -> None:
        ids = self.timed_out_ids
        ids[request_id] = None
        if len(ids) > TIMED_OUT_MEMORY:
            del ids[next(iter(ids))]

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        setattr(self, name, None)
        if timer is not None and timer.active():
            timer.cancel()


def _message(outcome: Outcome) -> str:
    return json.loads(outcome.body)["errorMessage"]
