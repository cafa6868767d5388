"""
The dispatcher: the single owner of the FIFO queue and of instance slots (lifecycle.md §3).

It knows nothing of HTTP or AMQP. Front ends call :meth:`Dispatcher.submit` and get a
cancellable Deferred per invocation; instances (``lambdatx.instance``) tell the dispatcher when
they can take work (:meth:`offer`), when they cannot any more (:meth:`withdraw`) and when they
die (:meth:`instance_dead`).

Slot rules, in one place:

* ``submit`` creates a :class:`Job` and its caller Deferred; cancelling that Deferred means the
  caller left: a queued job is removed (never runs), an assigned one is unassigned, a running
  one runs to completion and its result is dropped.
* A job goes to the most recently idle instance (LIFO), else to a new instance when fewer than
  MAX_CONCURRENCY are live and no instance about to poll again can take it, else to the queue
  (429 past LAMBDATX_QUEUE_LIMIT, AMQP exempt), where a T deadline runs (none for Event).
* State is updated before any Deferred fires.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .errors import ServiceException, ShuttingDown, TooManyRequestsException
from .invocation import Invocation, Outcome, timed_out
from .reports import LogTail, Reports

QUEUED, ASSIGNED, RUNNING, RESPONDED, DONE = "queued", "assigned", "running", "responded", "done"


class Job:
    """One invocation's journey through the dispatcher, and its caller's Deferred."""

    __slots__ = (
        "invocation",
        "dispatcher",
        "state",
        "caller",
        "timer",
        "queue_timer",
        "instance",
        "answered",
        "held_outcome",
        "accepted_at",
        "dispatched_at",
        "deadline_ms",
        "tail",
        "status",
        "error_type",
        "init_ms",
    )

    def __init__(self, invocation: Invocation, dispatcher: "Dispatcher"):
        self.invocation = invocation
        self.dispatcher = dispatcher
        self.state = QUEUED
        self.caller: Deferred[Outcome] = Deferred(self._cancel)
        #: The execution deadline (set at dispatch) and the queue deadline.
        self.timer = None
        self.queue_timer = None
        self.instance = None
        #: The caller has its outcome (or will get it at completion, for Tail).
        self.answered = False
        self.held_outcome: Optional[Outcome] = None
        self.accepted_at = dispatcher.clock.seconds()
        self.dispatched_at = 0.0
        self.deadline_ms = 0
        self.tail = LogTail() if invocation.tail else None
        #: REPORT status: None, "timeout" or "error".
        self.status: Optional[str] = None
        self.error_type: Optional[str] = None
        #: Init Duration to report on this (cold-start) invocation.
        self.init_ms: Optional[float] = None

    @property
    def request_id(self) -> str:
        return self.invocation.request_id

    def answer(self, outcome: Outcome) -> None:
        """Give the caller its outcome (once); Tail callers wait for completion."""
        if self.answered:
            return
        self.answered = True
        if self.tail is not None:
            self.held_outcome = outcome
        else:
            self._fire(outcome)

    def completed(self) -> None:
        """END/REPORT were written: release a Tail caller's held outcome."""
        self.state = DONE
        outcome, self.held_outcome = self.held_outcome, None
        if outcome is not None:
            self._fire(outcome.with_log_result(self.tail.encoded()))

    def _fire(self, outcome: Outcome) -> None:
        caller = self.caller
        if not caller.called:
            caller.callback(outcome)

    def _cancel(self, _d: Deferred) -> None:
        self.dispatcher._caller_gone(self)


class Dispatcher:
    log = Logger()

    def __init__(
        self,
        config,
        clock,
        spawn: Optional[Callable[["Dispatcher", Job, int], object]],
        reports: Optional[Reports] = None,
    ):
        self.config = config
        self.clock = clock
        #: ``spawn(dispatcher, job, slot)`` starts a new instance assigned ``job``; None = never.
        self._spawn = spawn if not config.no_spawn else None
        self.reports = reports or Reports(config)
        self.queue: deque[Job] = deque()
        #: Instances with a free poll, most recently idle last.
        self.idle: list = []
        #: Live instances (starting ... draining), the ones that count toward MAX_CONCURRENCY.
        self.instances: list = []
        self.shutting_down = False
        #: The shared listener's runtimes (lambdatx.instance.ExternalRuntimes), if any.
        self.external = None
        self._recheck = None
        self._timeout = config.timeout
        self._max = config.max_concurrency
        self._queue_limit = config.queue_limit

    # --- front ends -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return not self.shutting_down and len(self.queue) < self._queue_limit

    def submit(self, invocation: Invocation) -> Deferred:
        """Run ``invocation``; raises ServiceError at once when it is refused."""
        if self.shutting_down:
            raise ShuttingDown()
        job = Job(invocation, self)
        if self.idle and self._take_idle(job):
            return job.caller
        if self._can_spawn(len(self.queue)):
            self._start_instance(job)
            return job.caller
        if (
            len(self.queue) >= self._queue_limit
            and invocation.source != "amqp"
            and self._responded_count() <= len(self.queue)
        ):
            self.log.warn("queue full limit={limit}", limit=self._queue_limit)
            raise TooManyRequestsException()
        self._enqueue(job)
        return job.caller

    # --- instances --------------------------------------------------------------------------

    def offer(self, instance) -> None:
        """``instance`` has a free poll: give it the queue head or remember it as idle."""
        queue = self.queue
        while queue:
            job = queue[0]
            if not instance.dispatch(job):
                return
            queue.popleft()
            self._cancel_timer(job)
            if not instance.has_free_poll():
                return
        if self.shutting_down:
            # No new work; an instance that holds nothing is stopped, the others finish first.
            if not instance.held_count():
                instance.drain()
        elif instance not in self.idle:
            self.idle.append(instance)

    def withdraw(self, instance) -> None:
        """``instance`` can take nothing now (poll gone, draining, dead)."""
        try:
            self.idle.remove(instance)
        except ValueError:
            pass

    def instance_dead(self, instance) -> None:
        self.withdraw(instance)
        try:
            self.instances.remove(instance)
        except ValueError:
            pass
        self._pump(force=False)

    # --- internals --------------------------------------------------------------------------

    def _take_idle(self, job: Job) -> bool:
        """Hand ``job`` to the most recently idle instance whose poll is still there."""
        idle = self.idle
        while idle:
            instance = idle.pop()
            if instance.dispatch(job):
                if instance.has_free_poll():
                    idle.append(instance)
                return True
        return False

    def _responded_count(self) -> int:
        return sum(1 for i in self.instances if i.about_to_poll())

    def _can_spawn(self, queued: int, force: bool = False) -> bool:
        if self._spawn is None or self.shutting_down or len(self.instances) >= self._max:
            return False
        return force or self._responded_count() <= queued

    def _free_slot(self) -> int:
        used = {i.slot for i in self.instances}
        slot = 0
        while slot in used:
            slot += 1
        return slot

    def _start_instance(self, job: Job) -> None:
        job.state = ASSIGNED
        instance = self._spawn(self, job, self._free_slot())
        job.instance = instance
        self.instances.append(instance)
        try:
            instance.start()
        except Exception:
            # E.g. no file descriptor left for the listener: the function did not run.
            self.log.failure("could not start a runtime request_id={request_id}", request_id=job.request_id)
            instance.abandon()
            self.instances.remove(instance)
            job.state = DONE
            if not job.caller.called:
                job.caller.errback(ServiceException(f"Internal error (request {job.request_id})."))

    def _enqueue(self, job: Job) -> None:
        self.queue.append(job)
        if not job.invocation.event:
            job.queue_timer = self.clock.callLater(self._timeout, self._queue_timeout, job)
        if self._recheck is None and self._responded_count():
            self._recheck = self.clock.callLater(0.1, self._recheck_queue)

    def _recheck_queue(self) -> None:
        self._recheck = None
        self._pump(force=True)

    def _pump(self, force: bool) -> None:
        queue = self.queue
        while queue and self.idle:
            job = queue[0]
            if self._take_idle(job):
                queue.popleft()
                self._cancel_timer(job)
        while queue and self._can_spawn(len(queue) - 1, force):
            job = queue.popleft()
            self._cancel_timer(job)
            self._start_instance(job)
        if queue and self._recheck is None and self._responded_count():
            self._recheck = self.clock.callLater(0.1, self._recheck_queue)

    @staticmethod
    def _cancel_timer(job: Job) -> None:
        timer, job.queue_timer = job.queue_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _queue_timeout(self, job: Job) -> None:
        job.queue_timer = None
        try:
            self.queue.remove(job)
        except ValueError:
            return
        self.log.warn("task timed out in queue request_id={request_id}", request_id=job.request_id)
        self.reports.timeout_line(job.tail, job.request_id, self._timeout, self.clock.seconds())
        job.status = "timeout"
        job.answer(timed_out(job.request_id, self._timeout))
        job.completed()

    def _caller_gone(self, job: Job) -> None:
        if job.state == QUEUED:
            self._cancel_timer(job)
            try:
                self.queue.remove(job)
            except ValueError:
                pass
            job.state = DONE
        elif job.state == ASSIGNED and job.instance is not None:
            job.instance.unassign(job)
            job.state = DONE
        else:
            self.log.info(
                "caller gone; result will be discarded request_id={request_id}",
                request_id=job.request_id,
            )

    # --- shutdown ---------------------------------------------------------------------------

    def stop_intake(self) -> None:
        """No new invocations, no new instances; idle instances are drained."""
        self.shutting_down = True
        self.idle.clear()
        for instance in list(self.instances):
            if instance.is_idle() and not instance.held_count() and instance.assigned is None:
                instance.drain()

    def running_count(self) -> int:
        """Invocations dispatched or assigned and not complete (spawned and external runtimes)."""
        count = sum(i.held_count() for i in self.instances) + sum(
            1 for i in self.instances if i.assigned is not None
        )
        if self.external is not None:
            count += self.external.held_count()
        return count

    def withdraw_queued(self, predicate: Callable[[Invocation], bool]) -> list[Invocation]:
        """
        Take back the queued (never started) invocations ``predicate`` selects, e.g. AMQP
        deliveries the broker requeues. Their callers' Deferreds fail with CancelledError.
        """
        jobs = [job for job in self.queue if predicate(job.invocation)]
        for job in jobs:
            job.caller.cancel()  # _caller_gone takes a queued job out of the queue
        return [job.invocation for job in jobs]

    def drop_queued(self) -> None:
        """The grace is over: queued synchronous callers get 500, queued events are dropped."""
        while self.queue:
            job = self.queue.popleft()
            self._cancel_timer(job)
            job.state = DONE
            if job.invocation.event:
                self.log.error(
                    "dropped at shutdown request_id={request_id}", request_id=job.request_id
                )
            else:
                self.log.warn("dropped at shutdown request_id={request_id}", request_id=job.request_id)
            if not job.caller.called:
                job.caller.errback(ShuttingDown())
