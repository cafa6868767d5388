"""Dispatcher and instance logic on a fake clock, with fake listeners and processes."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from lambdatx.config import Config
from lambdatx.dispatcher import Dispatcher
from lambdatx.errors import (
    InvalidRequestID,
    InvalidStateTransition,
    InvokeTimeout,
    ServiceException,
    ShuttingDown,
    TooManyRequestsException,
)
from lambdatx.external import ExternalRuntimes
from lambdatx.instance import Instance
from lambdatx.invocation import Invocation, new_request_id
from lambdatx.process import ExitStatus
from lambdatx.reports import Reports


class FakeProcess:
    def __init__(self):
        self.signals = []
        self.pid = 4242

    def kill(self):
        self.signals.append("KILL")

    def terminate(self, grace):
        self.signals.append("TERM")

    samples = 0

    def sample_memory(self):
        self.samples += 1
        return 0

    def memory_peak_bytes(self):
        return 3 * 1048576


class FakeLauncher:
    def __init__(self):
        self.instances = []
        self.closed_count = 0

    def new_instance(self, dispatcher, job, slot):
        instance = Instance(dispatcher, self, job, slot)
        self.instances.append(instance)
        return instance

    def listen(self, instance):
        return object()

    def spawn(self, instance):
        return FakeProcess()

    def closed(self, instance):
        self.closed_count += 1


def make(lines=None, **overrides):
    config = replace(Config(), **overrides)
    clock = Clock()
    launcher = FakeLauncher()
    write = (lambda data: lines.append(data)) if lines is not None else None
    reports = Reports(config, write=write)
    dispatcher = Dispatcher(config, clock, launcher.new_instance, reports)
    return dispatcher, clock, launcher


def inv(payload=b"{}", **kw):
    return Invocation(new_request_id(), payload, trace_id="Root=1-0-0", **kw)


ALIVE = lambda: True  # noqa: E731


def ready(instance):
    """The runtime starts and polls once; returns the poll Deferred."""
    instance.exec_succeeded()
    return instance.next_invocation(ALIVE)


def results(d):
    out = []
    d.addBoth(out.append)
    return out


def test_cold_start_dispatches_the_assigned_invocation():
    """The first /next of a cold instance returns the invocation that caused the spawn."""
    dispatcher, clock, launcher = make()
    caller = results(dispatcher.submit(inv(b'{"a":1}')))
    [instance] = launcher.instances
    got = results(ready(instance))
    assert got[0].invocation.payload == b'{"a":1}'
    instance.invocation_response(got[0].request_id, b'"ok"', "application/json")
    assert caller[0].body == b'"ok"' and not caller[0].function_error


def test_fifo_order_and_single_instance():
    """With MAX_CONCURRENCY 1, waiting invocations run one after another in arrival order."""
    dispatcher, clock, launcher = make()
    callers = [results(dispatcher.submit(inv(b"%d" % i))) for i in range(3)]
    [instance] = launcher.instances
    seen = []
    poll = ready(instance)
    for i in range(3):
        job = results(poll)[0]
        seen.append(job.invocation.payload)
        instance.invocation_response(job.request_id, job.invocation.payload, "application/json")
        poll = instance.next_invocation(ALIVE)
    assert seen == [b"0", b"1", b"2"]
    assert [c[0].body for c in callers] == [b"0", b"1", b"2"]
    assert len(launcher.instances) == 1


def test_queue_deadline_times_out_without_running():
    """An invocation that waits T in the queue gets Sandbox.Timedout and never runs."""
    dispatcher, clock, launcher = make(timeout=2.0)
    dispatcher.submit(inv())
    waiting = results(dispatcher.submit(inv()))
    clock.advance(1.99)
    assert waiting == []
    clock.advance(0.02)
    doc = json.loads(waiting[0].body)
    assert doc["errorType"] == "Sandbox.Timedout"
    assert doc["errorMessage"].endswith("Task timed out after 2.00 seconds")
    assert waiting[0].function_error
    assert not dispatcher.queue


def test_execution_deadline_kills_the_group_and_answers():
    """A running invocation past T is answered Sandbox.Timedout and its group SIGKILLed."""
    lines = []
    dispatcher, clock, launcher = make(lines, timeout=3.0, print_reports=True)
    caller = results(dispatcher.submit(inv()))
    [instance] = launcher.instances
    ready(instance)
    clock.advance(3.0)
    assert json.loads(caller[0].body)["errorMessage"].endswith("after 3.00 seconds")
    assert instance.process.signals == ["KILL"]
    instance.exited(ExitStatus(None, 9, False))
    text = b"".join(lines).decode()
    assert "Task timed out after 3.00 seconds" in text
    assert "Duration: 3000.00 ms" in text and "Status: timeout" in text
    assert instance.state == "dead" and not dispatcher.instances


def test_crash_mid_invoke_answers_exit_error_and_respawns_on_demand():
    """A runtime exiting while busy gives Runtime.ExitError; the next invoke spawns anew."""
    dispatcher, clock, launcher = make()
    caller = results(dispatcher.submit(inv()))
    [instance] = launcher.instances
    ready(instance)
    instance.exited(ExitStatus(7, None, False))
    doc = json.loads(caller[0].body)
    assert doc == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {doc['errorMessage'].split()[1]} Error: Runtime exited with error: exit status 7",
    }
    dispatcher.submit(inv())
    assert len(launcher.instances) == 2


def test_init_error_goes_to_the_assigned_caller_only():
    """/init/error answers the invocation that caused the cold start, then the group dies."""
    dispatcher, clock, launcher = make()
    caller = results(dispatcher.submit(inv()))
    [instance] = launcher.instances
    instance.exec_succeeded()
    instance.init_error(b'{"errorType":"Runtime.ImportModuleError","errorMessage":"x"}', "Runtime.ImportModuleError")
    assert caller[0].function_error and b"ImportModuleError" in caller[0].body
    with pytest.raises(InvalidStateTransition):
        instance.init_error(b"{}", None)
    clock.advance(2.0)
    assert instance.process.signals == ["KILL"]


def test_exit_during_init_without_init_error():
    """A runtime that exits before its first /next fails the assigned invocation."""
    dispatcher, clock, launcher = make()
    caller = results(dispatcher.submit(inv()))
    [instance] = launcher.instances
    instance.exec_succeeded()
    instance.exited(ExitStatus(1, None, False))
    assert json.loads(caller[0].body)["errorType"] == "Runtime.ExitError"


def test_exec_failure_is_invalid_entrypoint():
    """An exec failure answers Runtime.InvalidEntrypoint with the OS reason."""
    dispatcher, clock, launcher = make()
    caller = results(dispatcher.submit(inv()))
    [instance] = launcher.instances
    instance.exec_failed("fork/exec /x/bootstrap: permission denied")
    instance.exited(ExitStatus(127, None, False))
    doc = json.loads(caller[0].body)
    assert doc["errorType"] == "Runtime.InvalidEntrypoint"
    assert doc["errorMessage"].endswith("Error: fork/exec /x/bootstrap: permission denied")


def test_misuse_answers():
    """Unknown ids, second responses and early /next calls are refused with the right errors."""
    dispatcher, clock, launcher = make()
    dispatcher.submit(inv())
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    with pytest.raises(InvalidRequestID):
        instance.invocation_response("nope", b"", "application/json")
    with pytest.raises(InvalidStateTransition) as e:
        instance.next_invocation(ALIVE)
    assert (e.value.from_state, e.value.to_state) == ("Invoking", "Next")
    instance.invocation_response(job.request_id, b"1", "application/json")
    with pytest.raises(InvalidStateTransition):
        instance.invocation_error(job.request_id, b"{}", None)
    instance.next_invocation(ALIVE)
    with pytest.raises(InvalidRequestID):
        instance.invocation_response(job.request_id, b"", "application/json")


def test_caller_gone_while_queued_never_runs():
    """Cancelling a queued invocation removes it; the runtime never sees it."""
    dispatcher, clock, launcher = make()
    dispatcher.submit(inv(b"first"))
    second = dispatcher.submit(inv(b"second"))
    second.addErrback(lambda f: f.trap(CancelledError))
    second.cancel()
    assert not dispatcher.queue
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    instance.invocation_response(job.request_id, b"", "application/json")
    poll = results(instance.next_invocation(ALIVE))
    assert poll == []


def test_dead_poll_connection_puts_invocation_back():
    """A poll whose connection is gone is skipped; the invocation stays at the queue head."""
    dispatcher, clock, launcher = make()
    dispatcher.submit(inv(b"a"))
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    instance.invocation_response(job.request_id, b"", "application/json")
    instance.next_invocation(lambda: False)
    later = results(dispatcher.submit(inv(b"b")))
    assert later == [] and len(dispatcher.queue) == 1
    got = results(instance.next_invocation(ALIVE))
    assert got[0].invocation.payload == b"b"


def test_pool_spawns_up_to_max_concurrency_then_queues_and_429s():
    """A burst spawns up to N instances; beyond that invocations queue up to the limit."""
    dispatcher, clock, launcher = make(max_concurrency=3, queue_limit=2)
    for _ in range(5):
        dispatcher.submit(inv())
    assert len(launcher.instances) == 3 and len(dispatcher.queue) == 2
    with pytest.raises(TooManyRequestsException):
        dispatcher.submit(inv())


def test_responded_instance_is_waited_for_rather_than_duplicated():
    """An instance about to poll again takes the next invocation instead of a new spawn."""
    dispatcher, clock, launcher = make(max_concurrency=4)
    dispatcher.submit(inv())
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    instance.invocation_response(job.request_id, b"", "application/json")
    second = results(dispatcher.submit(inv(b"2")))
    assert len(launcher.instances) == 1
    got = results(instance.next_invocation(ALIVE))
    assert got[0].invocation.payload == b"2" and second == []
    # A runtime that never polls again does not stall the queue: 100 ms later it spawns.
    instance.invocation_response(got[0].request_id, b"", "application/json")
    dispatcher.submit(inv(b"3"))
    clock.advance(0.1)
    assert len(launcher.instances) == 2


def test_idle_instances_are_reaped_lifo():
    """The most recently idle instance gets work; one idle past the idle timeout is drained."""
    dispatcher, clock, launcher = make(max_concurrency=2, idle_timeout=10, timeout=30)
    dispatcher.submit(inv())
    dispatcher.submit(inv())
    a, b = launcher.instances
    ja = results(ready(a))[0]
    jb = results(ready(b))[0]
    a.invocation_response(ja.request_id, b"", "application/json")
    a.next_invocation(ALIVE)
    clock.advance(5)
    b.invocation_response(jb.request_id, b"", "application/json")
    b.next_invocation(ALIVE)
    job = dispatcher.submit(inv())
    assert b.state == "busy" and a.state == "idle"
    clock.advance(5.1)
    assert a.state == "draining" and a.process.signals == ["TERM"]
    job.addErrback(lambda f: f.trap(CancelledError))
    job.cancel()


def test_tail_waits_for_report():
    """A Tail caller is answered at completion with the START/END/REPORT lines."""
    dispatcher, clock, launcher = make()
    caller = results(dispatcher.submit(inv(tail=True)))
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    instance.output(1, b"hello from the function\n")
    instance.invocation_response(job.request_id, b"1", "application/json")
    assert caller == []
    instance.next_invocation(ALIVE)
    import base64

    log = base64.b64decode(caller[0].log_result).decode()
    assert log.startswith(f"START RequestId: {job.request_id}")
    assert "hello from the function" in log and "REPORT RequestId" in log
    assert "Init Duration" in log


def test_multi_concurrent_instance_holds_m_invocations():
    """With AWS_LAMBDA_MAX_CONCURRENCY=2 one instance holds two invocations at once."""
    dispatcher, clock, launcher = make(runtime_max_concurrency=2)
    callers = [results(dispatcher.submit(inv(b"%d" % i))) for i in range(2)]
    [instance] = launcher.instances
    first = results(ready(instance))[0]
    second = results(instance.next_invocation(ALIVE))[0]
    assert {first.invocation.payload, second.invocation.payload} == {b"0", b"1"}
    assert len(launcher.instances) == 1
    clock.advance(3)
    assert all(json.loads(c[0].body)["errorType"] == "Sandbox.Timedout" for c in callers)
    assert instance.process.signals == []
    with pytest.raises(InvokeTimeout):
        instance.invocation_response(first.request_id, b"", "application/json")


def test_external_runtime_polls_are_slots():
    """A pending external /next takes an invocation without any spawn."""
    dispatcher, clock, launcher = make(no_spawn=True)
    external = ExternalRuntimes(dispatcher)
    poll = results(external.next_invocation(ALIVE))
    caller = results(dispatcher.submit(inv(b"x")))
    job = poll[0]
    external.invocation_response(job.request_id, b"y", "application/json")
    assert caller[0].body == b"y" and not launcher.instances


def test_shutdown_refuses_and_drops_queued():
    """After stop_intake new invocations are refused; queued ones get ShuttingDown."""
    dispatcher, clock, launcher = make()
    dispatcher.submit(inv())
    queued = results(dispatcher.submit(inv()))
    dispatcher.stop_intake()
    with pytest.raises(ShuttingDown):
        dispatcher.submit(inv())
    dispatcher.drop_queued()
    assert queued[0].check(ShuttingDown)


def test_memory_is_sampled_every_100ms_while_busy():
    """With reports on, a busy group's memory is sampled every 100 ms, and not once idle."""
    dispatcher, clock, launcher = make([], print_reports=True, timeout=10)
    dispatcher.submit(inv())
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    before = instance.process.samples
    clock.pump([0.1, 0.1, 0.1, 0.05])
    assert instance.process.samples - before == 3
    instance.invocation_response(job.request_id, b"", "application/json")
    instance.next_invocation(ALIVE)
    after = instance.process.samples
    clock.pump([0.1] * 10)
    assert instance.process.samples == after


def test_shutdown_lets_multi_concurrent_invocations_finish():
    """A multi-concurrent instance holding work with a free poll is not drained at shutdown."""
    dispatcher, clock, launcher = make(runtime_max_concurrency=2, timeout=30)
    caller = results(dispatcher.submit(inv()))
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    instance.next_invocation(ALIVE)  # the second worker polls
    dispatcher.stop_intake()
    assert instance.process.signals == [] and dispatcher.running_count() == 1
    instance.invocation_response(job.request_id, b"1", "application/json")
    assert caller[0].body == b"1"
    instance.next_invocation(ALIVE)
    assert instance.process.signals == ["TERM"]


def test_external_invocations_count_and_are_answered_at_shutdown():
    """Work held by external runtimes counts as running; at the end of the grace it is answered."""
    dispatcher, clock, launcher = make(no_spawn=True)
    external = ExternalRuntimes(dispatcher)
    external.next_invocation(ALIVE)
    caller = results(dispatcher.submit(inv()))
    assert dispatcher.running_count() == 1
    pending = results(external.next_invocation(ALIVE))
    external.release_polls()
    assert json.loads(caller[0].body)["errorType"] == "Runtime.ExitError"
    assert pending[0].check(Exception)
    assert dispatcher.running_count() == 0


@pytest.mark.allow_logged_errors(types=[OSError])
def test_failed_start_answers_500_and_frees_the_slot():
    """When a runtime cannot even be started the caller gets ServiceException and the slot is free."""
    dispatcher, clock, launcher = make()

    def broken(instance):
        raise OSError("no file descriptors left")

    launcher.listen = broken
    caller = results(dispatcher.submit(inv()))
    assert caller[0].check(ServiceException)
    assert not dispatcher.instances
    launcher.listen = lambda instance: object()
    dispatcher.submit(inv())
    assert len(dispatcher.instances) == 1


def test_poll_after_timeout_kill_takes_nothing():
    """A /next arriving after the timeout kill is not given the next queued invocation."""
    dispatcher, clock, launcher = make(timeout=1)
    dispatcher.submit(inv())
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    instance.invocation_response(job.request_id, b"", "application/json")
    clock.advance(1)
    assert instance.process.signals == ["KILL"]
    waiting = results(dispatcher.submit(inv()))
    poll = results(instance.next_invocation(ALIVE))
    assert poll == [] and waiting == []
    instance.exited(ExitStatus(None, 9, False))
    assert len(launcher.instances) == 2


def test_init_timeout_report_uses_the_init_budget():
    """An init timeout reports INIT_REPORT Status: timeout and a Duration of the whole wait."""
    lines = []
    dispatcher, clock, launcher = make(lines, timeout=1, init_timeout=2, print_reports=True)
    caller = results(dispatcher.submit(inv()))
    [instance] = launcher.instances
    instance.exec_succeeded()
    clock.advance(2)
    assert json.loads(caller[0].body)["errorMessage"].endswith("after 2.00 seconds")
    text = b"".join(lines).decode()
    assert "INIT_REPORT Init Duration: 2000.00 ms\tPhase: init\tStatus: timeout" in text
    assert "Duration: 2000.00 ms" in text.split("REPORT RequestId")[1]


def test_init_error_after_response_names_the_responded_state():
    """/init/error after a /response is refused from Responded."""
    dispatcher, clock, launcher = make()
    dispatcher.submit(inv())
    [instance] = launcher.instances
    job = results(ready(instance))[0]
    instance.invocation_response(job.request_id, b"", "application/json")
    with pytest.raises(InvalidStateTransition) as e:
        instance.init_error(b"{}", None)
    assert (e.value.from_state, e.value.to_state) == ("Responded", "InitError")


def test_platform_lines_for_exec_failure_and_crash_after_response():
    """Exec failures print INIT_REPORT then START then the error; a crash after answering prints exit lines."""
    lines = []
    dispatcher, clock, launcher = make(lines, print_reports=True)
    dispatcher.submit(inv())
    [instance] = launcher.instances
    instance.exec_failed("fork/exec /x: permission denied")
    instance.exited(ExitStatus(127, None, False))
    text = b"".join(lines).decode()
    assert text.index("INIT_REPORT") < text.index("START") < text.index("Error: fork/exec")
    lines.clear()
    dispatcher.submit(inv())
    second = launcher.instances[1]
    job = results(ready(second))[0]
    second.invocation_response(job.request_id, b"", "application/json")
    second.exited(ExitStatus(2, None, False))
    text = b"".join(lines).decode()
    assert "Runtime exited with error: exit status 2\nRuntime.ExitError" in text
    assert "Status: error\tError Type: Runtime.ExitError" in text


def test_runtime_error_documents_survive_hostile_bodies():
    """Deeply nested error bodies are forwarded, never crash the route's helpers."""
    from lambdatx.runtime_api import error_type_for_log

    deep = b"[" * 100000 + b"]" * 100000
    assert error_type_for_log(None, deep) == "Runtime.Unknown"
    assert error_type_for_log(b"A\x01B", b"") == "AB"
