"""
What the entry points of the daemon (``lambdatx``, ``twistd lambdatx``) and of the gateway
(``lambdatx-server``, ``twistd lambdatx-server``) share.

* Exit statuses: 0 clean shutdown, 1 internal error, 64 configuration error (:data:`EX_USAGE`,
  every problem on its own line), 69 a listener could not be opened or AMQP gave up
  (:data:`EX_UNAVAILABLE`).
* ``--help`` and ``--version``, recognised only as the sole argument.
* :class:`Daemon`: the console scripts' run loop. It owns what twistd would otherwise own:
  signals (the first SIGTERM/SIGINT starts the graceful stop, a second one skips the grace,
  SIGHUP is ignored) and the exit status.
* :class:`ConfigOptions`: twistd options that override the environment, loaded into one config
  before twistd starts anything; a configuration error exits 64 there too.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import IO, Any, Callable, Mapping, Sequence

from twisted.internet.defer import maybeDeferred
from twisted.logger import ILogObserver, LogLevel, Logger, globalLogBeginner
from twisted.python import usage
from twisted.python.failure import Failure

from lambdatx.config import ConfigError
from lambdatx.errors import ListenError

EX_USAGE = 64
EX_UNAVAILABLE = 69

log = Logger(namespace="lambdatx")


# --- before anything runs -------------------------------------------------------------------


def version() -> str:
    """The installed lambdatx version."""
    try:
        from importlib.metadata import version as installed_version

        return installed_version("lambdatx")
    except Exception:  # not installed: running from a source tree
        return "unknown"


def help_or_version(argv: Sequence[str]) -> str | None:
    """``"help"`` or ``"version"`` when ``argv`` is only that flag, else None."""
    if len(argv) == 1 and argv[0] in ("-h", "--help"):
        return "help"
    if len(argv) == 1 and argv[0] == "--version":
        return "version"
    return None


def print_help_or_version(action: str, program: str, usage_text: str, stdout: IO[str]) -> int:
    """Answer ``--help`` or ``--version`` on ``stdout``; the exit status is 0."""
    stdout.write(usage_text if action == "help" else f"{program} {version()}\n")
    return 0


def report_problems(stream: IO[str], problems: Sequence[str]) -> int:
    """Print every configuration problem, one a line; the exit status is 64."""
    stream.write("".join(line + "\n" for line in problems))
    stream.flush()
    return EX_USAGE


def report_listen_error(stream: IO[str], error: ListenError) -> int:
    """Print the one line of a listener that cannot be opened; the exit status is 69."""
    stream.write(f"lambdatx: cannot listen on {error.address}: {error.reason}\n")
    stream.flush()
    return EX_UNAVAILABLE


def begin_logging(observer: ILogObserver) -> None:
    # stdout carries the runtimes' output and platform lines: never redirect it into the log.
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


# --- running --------------------------------------------------------------------------------


def serve(
    start: Callable[[], tuple[Any, Any]],
    stderr: IO[str],
    set_signal: Callable[[int, Any], Any],
    crash_log: Logger,
) -> int:
    """
    Run the service ``start()`` builds, returned as ``(reactor, service)``, until it ends; the
    exit status, 1 when a bug ends it (logged on ``crash_log``).
    """
    try:
        reactor, service = start()
        return Daemon(reactor, service, stderr, set_signal).run()
    except Exception:
        crash_log.failure("unexpected error", level=LogLevel.critical)
        return 1


class Daemon:
    """Runs one service on the reactor and turns what happens into an exit status."""

    def __init__(
        self,
        reactor: Any,
        service: Any,
        stderr: IO[str],
        set_signal: Callable[[int, Any], Any],
    ):
        self.reactor = reactor
        self.service = service
        self.stderr = stderr
        self.set_signal = set_signal
        self.exit_code = 0
        self.stopping = False

    def run(self) -> int:
        self.service.startService()
        self.reactor.addSystemEventTrigger("before", "shutdown", self._stop_service)
        self.reactor.callWhenRunning(self._running)
        self.reactor.run()
        return self.exit_code

    def _running(self) -> None:
        # Installed after the reactor's own handlers (which twistd would install the same way),
        # so a second signal can skip the grace instead of being ignored.
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.set_signal(signum, self._signal_received)
        # A Python no-op, not SIG_IGN: ignored dispositions are inherited by the runtimes.
        self.set_signal(signal.SIGHUP, lambda signum, frame: None)
        self.service.when_ready().addErrback(self._not_ready)
        self.service.when_finished().addCallbacks(self._finished, self._crashed)

    def _signal_received(self, signum: int, frame: object) -> None:
        self.reactor.callFromThread(self.on_signal, signum)

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.stopping:
            log.info("shutting down", signal=name)
            self._end(0)
        else:
            log.info("second {signal}: skipping the shutdown grace period", signal=name)
            self.service.skip_grace()

    def _not_ready(self, failure: Failure) -> None:
        if failure.check(ListenError):
            self._end(report_listen_error(self.stderr, failure.value))
        else:
            self._crashed(failure)

    def _finished(self, code: int) -> None:
        if not self.stopping:
            self._end(code)

    def _crashed(self, failure: Failure) -> None:
        log.failure("unexpected error", failure, level=LogLevel.critical)
        self._end(1)

    def _end(self, code: int) -> None:
        if self.stopping:
            return
        self.exit_code = code
        self.stopping = True
        self.reactor.stop()

    def _stop_service(self) -> Any:
        def failed(failure: Failure) -> None:
            log.failure("unexpected error while stopping", failure)
            self.exit_code = 1

        return maybeDeferred(self.service.stopService).addErrback(failed)


# --- twistd ---------------------------------------------------------------------------------


def option_lists(
    parameters: Sequence[tuple[str, str, str]], flags: Sequence[tuple[str, str]]
) -> tuple[list[list[Any]], list[list[Any]]]:
    """``optParameters`` and ``optFlags`` for settings given as (option, variable[, default])."""
    return (
        [
            [option, None, None, f"Overrides {variable} (default: {default})."]
            for option, variable, default in parameters
        ],
        [[option, None, f"Overrides {variable} (presence = true)."] for option, variable in flags],
    )


class ConfigOptions(usage.Options):
    """twistd options overriding the environment; ``postOptions`` leaves the loaded ``config``."""

    def __init__(self) -> None:
        super().__init__()
        self.config: Any = None

    def overrides(self) -> dict[str, object]:
        """The options given, in the form the configuration loaders take."""
        return {key: value for key, value in self.items() if value not in (None, 0, False)}

    def load(self, environ: Mapping[str, str], overrides: dict[str, object]) -> Any:
        """The configuration from ``environ`` and ``overrides``; raises ``ConfigError``."""
        raise NotImplementedError

    def postOptions(self) -> None:
        try:
            self.config = self.load(os.environ, self.overrides())
        except ConfigError as error:
            # twistd turns UsageError into exit 1; the contract is 64 (EX_USAGE).
            raise SystemExit(report_problems(sys.stderr, error.problems))
