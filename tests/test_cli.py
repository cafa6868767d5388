"""Tests for the ``lambdatx`` console script (lambdatx.cli) and ``twistd lambdatx`` (tap)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel, globalLogPublisher

from lambdatx import cli
from lambdatx.cli import format_json, format_text, main, parse_argv
from lambdatx.errors import ListenError
from lambdatx.tap import Options

BIN = Path(sys.executable).parent
LAMBDATX = BIN / "lambdatx"
TWISTD = BIN / "twistd"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


# --- argv ---------------------------------------------------------------------------------


def test_plain_command():
    """Arguments that are not rie flags form the command, in order."""
    parsed = parse_argv(["/var/runtime/bootstrap", "app.handler"])
    assert (parsed.command, parsed.overrides) == (["/var/runtime/bootstrap", "app.handler"], {})


def test_flags_anywhere_before_double_dash():
    """rie flags are recognised after the command too, in both value forms."""
    parsed = parse_argv(
        ["python3", "--log-level", "debug", "-m", "awslambdaric", "echo.handler",
         "--runtime-interface-emulator-address=0.0.0.0:9000", "--enable-init-caching",
         "--runtime-api-address", "127.0.0.1:9002"]
    )  # fmt: skip
    assert parsed.command == ["python3", "-m", "awslambdaric", "echo.handler"]
    assert parsed.overrides == {
        "log-level": "debug",
        "runtime-interface-emulator-address": "0.0.0.0:9000",
        "enable-init-caching": True,
        "runtime-api-address": "127.0.0.1:9002",
    }


def test_double_dash_ends_flags():
    """Everything after -- is the command verbatim, flag names included."""
    parsed = parse_argv(["--log-level=info", "--", "rt", "--log-level", "x", "--"])
    assert parsed.command == ["rt", "--log-level", "x", "--"]
    assert parsed.overrides == {"log-level": "info"}


def test_missing_flag_value():
    """A value flag at the end of argv is a usage problem."""
    assert parse_argv(["rt", "--log-level"]).problems == [
        'lambdatx: configuration error: --log-level="": needs a value'
    ]


@pytest.mark.parametrize("argv, action", [(["-h"], "help"), (["--help"], "help"),
                                          (["--version"], "version")])  # fmt: skip
def test_help_and_version_alone(argv, action):
    """-h, --help and --version are recognised only as the sole argument."""
    assert parse_argv(argv).action == action
    assert parse_argv(["rt", *argv]).command == ["rt", *argv]


@pytest.mark.parametrize("argv, expected", [(["--help"], "usage: lambdatx"),
                                            (["--version"], "lambdatx ")])  # fmt: skip
def test_main_help_and_version(argv, expected):
    """--help and --version print on stdout and return 0 without starting anything."""
    out = io.StringIO()
    assert main(argv, {}, stdout=out, make_service=pytest.fail) == 0
    assert out.getvalue().startswith(expected)


def test_main_configuration_errors():
    """Configuration and argv problems are all printed on stderr and give 64."""
    err = io.StringIO()
    code = main(["/nonexistent/rt", "--log-level"], {"MAX_CONCURRENCY": "0"}, stderr=err,
                make_service=pytest.fail)  # fmt: skip
    assert code == 64
    assert err.getvalue().splitlines() == [
        'lambdatx: configuration error: --log-level="": needs a value',
        'lambdatx: configuration error: MAX_CONCURRENCY="0": must be an integer >= 1',
        'lambdatx: configuration error: COMMAND="/nonexistent/rt": cannot run /nonexistent/rt: '
        "No such file or directory",
    ]


# --- log formats --------------------------------------------------------------------------


def event(**fields):
    return {"log_time": 1772442901.2041, "log_level": LogLevel.info, "log_namespace": "lambdatx",
            **fields}  # fmt: skip


def test_text_format():
    """Text logs: UTC millisecond time, level, logger, message, then unused fields as key=value."""
    line = format_text(event(log_format="listening on {port}", port=8080, host="a b",
                             command=["x", "y"], log_level=LogLevel.warn))  # fmt: skip
    assert line == (
        '2026-03-02T09:15:01.204Z [WARNING] (lambdatx) listening on 8080 host="a b" '
        'command=["x","y"]\n'
    )


def test_json_format():
    """JSON logs: one object per line with time, lowercase level, logger, message and fields."""
    record = json.loads(format_json(event(log_format="hello {who}", who="you", extra=1)))
    assert record == {"time": "2026-03-02T09:15:01.204Z", "level": "info", "logger": "lambdatx",
                      "message": "hello you", "extra": 1}  # fmt: skip


# --- running with a fake reactor and a fake service ---------------------------------------


class FakeReactor:
    """Just enough of a reactor: run() fires the startup callbacks, then the shutdown triggers."""

    def __init__(self):
        self.when_running = []
        self.before_shutdown = []
        self.stopped = False
        self.during_run = lambda: None

    def callWhenRunning(self, f, *args):
        self.when_running.append((f, args))

    def addSystemEventTrigger(self, phase, event, f, *args):
        assert (phase, event) == ("before", "shutdown")
        self.before_shutdown.append((f, args))

    def callFromThread(self, f, *args):
        f(*args)

    def stop(self):
        assert not self.stopped, "reactor stopped twice"
        self.stopped = True

    def run(self, installSignalHandlers=True):
        for f, args in self.when_running:
            f(*args)
        self.during_run()
        assert self.stopped, "the reactor would run for ever"
        for f, args in self.before_shutdown:
            f(*args)


class FakeService:
    def __init__(self):
        self.calls = []
        self.ready = Deferred()
        self.finished = Deferred()

    def startService(self):
        self.calls.append("start")

    def stopService(self):
        self.calls.append("stop")
        return succeed(None)

    def when_ready(self):
        return self.ready

    def when_finished(self):
        return self.finished

    def skip_grace(self):
        self.calls.append("skip_grace")


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Run main() on a fake reactor and service; yield a function returning (code, stderr)."""
    monkeypatch.setattr(cli, "EXTENSIONS_DIR", str(tmp_path / "extensions"))
    observers = []

    def run(service, reactor=None, argv=("/bin/true",), env=None, handlers=None):
        err = io.StringIO()

        def begin(observer):
            observers.append(observer)
            globalLogPublisher.addObserver(observer)

        code = main(list(argv), {"AWS_LAMBDA_FUNCTION_NAME": "f", **(env or {})},
                    reactor or FakeReactor(), lambda config, reactor: service, stderr=err,
                    begin_logging=begin,
                    set_signal=(handlers if handlers is not None else {}).__setitem__)  # fmt: skip
        return code, err.getvalue()

    yield run
    for observer in observers:
        globalLogPublisher.removeObserver(observer)


def test_listen_error_exits_69(run):
    """A listener that cannot be opened prints one line and gives 69 after stopping the service."""
    service = FakeService()
    service.ready = fail(ListenError("0.0.0.0:8080", "address already in use"))
    code, err = run(service)
    assert code == 69
    assert "lambdatx: cannot listen on 0.0.0.0:8080: address already in use\n" in err
    assert service.calls == ["start", "stop"]


def test_service_finishes_on_its_own(run):
    """when_finished's exit code (AMQP gave up: 69) stops the reactor and is the exit status."""
    service = FakeService()
    service.finished = succeed(69)
    assert run(service)[0] == 69


def test_signals(run):
    """First SIGTERM logs "shutting down" and stops; a second skips the grace; SIGHUP does not."""
    service = FakeService()
    reactor = FakeReactor()
    handlers = {}

    def deliver():
        handlers[signal.SIGHUP](signal.SIGHUP, None)
        assert not reactor.stopped
        handlers[signal.SIGTERM](signal.SIGTERM, None)
        assert reactor.stopped
        handlers[signal.SIGINT](signal.SIGINT, None)

    reactor.during_run = deliver
    code, err = run(service, reactor, handlers=handlers)
    assert code == 0
    assert re.search(TIMESTAMP + r" \[INFO\] \(lambdatx\) shutting down signal=SIGTERM\n", err)
    assert service.calls == ["start", "skip_grace", "stop"]


def test_startup_logs(run, tmp_path):
    """Start-up logs list warnings, the masked configuration, the name, its origin, the command."""
    (tmp_path / "extensions").mkdir()
    (tmp_path / "extensions" / "ext").write_text("")
    reactor = FakeReactor()
    reactor.during_run = reactor.stop
    env = {"AMQP_URI": "amqp://u:hunter2@h/", "AWS_LAMBDA_FUNCTION_TIMEOUT": "1000"}
    code, err = run(FakeService(), reactor, argv=["/bin/true", "--enable-init-caching"], env=env)
    assert code == 0
    assert "hunter2" not in err
    assert "[WARNING] (lambdatx) AWS_LAMBDA_FUNCTION_TIMEOUT=1000 is above" in err
    assert "[WARNING] (lambdatx) --enable-init-caching is accepted and ignored" in err
    assert "[WARNING] (lambdatx) extensions are not run yet" in err
    assert "amqp_uri=amqp://u:***@h/" in err
    assert "daemon_log_level=INFO" in err
    assert "function f (name from variable), command: /bin/true" in err


def test_log_level_filters(run):
    """Events below LOG_LEVEL are not written."""
    reactor = FakeReactor()
    reactor.during_run = reactor.stop
    code, err = run(
        FakeService(), reactor, env={"LOG_LEVEL": "error", "AWS_LAMBDA_FUNCTION_TIMEOUT": "1000"}
    )
    assert code == 0 and err == ""


def test_structured_logging(run):
    """USE_STRUCTURED_LOGGING writes every daemon log line as a JSON object."""
    reactor = FakeReactor()
    reactor.during_run = reactor.stop
    code, err = run(FakeService(), reactor, env={"USE_STRUCTURED_LOGGING": "true"})
    records = [json.loads(line) for line in err.splitlines()]
    assert records and {"time", "level", "logger", "message"} <= set(records[0])


@pytest.mark.allow_logged_errors
def test_unexpected_error_exits_1(run):
    """An exception while building the service is logged at CRITICAL and gives 1."""

    class Broken(FakeService):
        def startService(self):
            raise RuntimeError("boom")

    code, err = run(Broken())
    assert code == 1
    assert "[CRITICAL] (lambdatx) unexpected error" in err and "RuntimeError: boom" in err


# --- the installed console script and twistd plugin (subprocesses) ------------------------


def test_console_script_installed():
    """The lambdatx console script exists next to the interpreter."""
    assert LAMBDATX.exists(), "pip install -e . --config-settings editable_mode=compat"


def test_console_script_config_errors(tmp_path):
    """The real console script prints every problem and exits 64."""
    env = {"PATH": os.environ["PATH"], "PORT": "x", "AWS_LAMBDA_FUNCTION_TIMEOUT": "3s",
           "AMQP_PASSWORD": "hunter2"}  # fmt: skip
    result = subprocess.run([LAMBDATX, "/nonexistent"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 64
    lines = result.stderr.splitlines()
    assert len(lines) == 4 and all(
        line.startswith("lambdatx: configuration error: ") for line in lines
    )
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_console_script_help(argv):
    """The real console script answers --help and --version with 0."""
    result = subprocess.run([LAMBDATX, *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith(("lambdatx", "usage: lambdatx"))


def test_twistd_plugin_help(tmp_path):
    """`twistd lambdatx --help` works, which proves the plugin is discoverable."""
    result = subprocess.run([TWISTD, "lambdatx", "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--runtime-interface-emulator-address" in result.stdout
    assert "--amqp-password" not in result.stdout and "--handler" in result.stdout


def test_twistd_config_error_exits_64(tmp_path):
    """Under twistd a configuration error prints its lines and exits 64, not 1."""
    env = {**os.environ, "MAX_CONCURRENCY": "0"}
    result = subprocess.run([TWISTD, "-n", "--pidfile=", "lambdatx", "--port", "99999", "--",
                             "/bin/true"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 64
    assert (
        'lambdatx: configuration error: --port="99999": must be a port number 0-65535'
        in result.stderr
    )
    assert (
        'lambdatx: configuration error: MAX_CONCURRENCY="0": must be an integer >= 1'
        in result.stderr
    )


def test_tap_options():
    """twistd options become load_config overrides; the command follows --."""
    options = Options()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "environ", {"PATH": "/bin", "PORT": "1"})
        options.parseOptions(
            ["--port", "2", "--no-json-validation", "--handler", "f.h",
             "--runtime-api-address", "127.0.0.1:0", "--", "/bin/true", "-x"]
        )  # fmt: skip
    config = options.config
    assert (config.port, config.validate_json, config.handler) == (2, False, "f.h")
    assert (config.runtime_api_port, config.command) == (0, ("/bin/true", "-x"))
    assert (config.function_name, config.function_name_source) == ("f", "handler")


FAKE_DAEMON = textwrap.dedent("""
    import sys
    from twisted.internet.defer import Deferred, succeed
    from lambdatx.cli import main

    class Service:
        def __init__(self):
            self.stopped = Deferred()
        def startService(self):
            print("started", flush=True)
        def stopService(self):
            print("stopping", flush=True)
            return self.stopped
        def when_ready(self):
            # Called once the reactor runs, after lambdatx installed its signal handlers.
            print("ready", flush=True)
            return succeed(None)
        def when_finished(self):
            return Deferred()
        def skip_grace(self):
            print("grace skipped", flush=True)
            self.stopped.callback(None)

    sys.exit(main(make_service=lambda config, reactor: Service()))
    """)


def test_real_signals(tmp_path):
    """On the real reactor SIGHUP is ignored, SIGTERM stops, a second SIGTERM skips the grace."""
    env = {"PATH": os.environ["PATH"], "AWS_LAMBDA_FUNCTION_NAME": "f"}
    process = subprocess.Popen([sys.executable, "-c", FAKE_DAEMON, "/bin/true"], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        assert process.stdout.readline() == "started\n"
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGHUP)
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline() == "stopping\n"
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline() == "grace skipped\n"
        assert process.wait(timeout=30) == 0
        assert "shutting down signal=SIGTERM" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
