"""
The ``lambdatx`` console script: aws-lambda-rie's command line (spec/configuration.md §1).

It is the production entry point and owns what twistd would otherwise own: exit codes (0, 1, 64,
69), daemon logging on stderr (§10) and signals (lifecycle.md §5-§6: the first SIGTERM/SIGINT
starts the graceful shutdown, a second one skips the grace, SIGHUP is ignored).

The run loop and what the gateway's console script shares are in :mod:`lambdatx.entrypoint`. The
reactor, the service factory, the streams and the way log observers and signal handlers are
installed can all be injected, so tests drive :func:`main` without a real daemon.
"""

from __future__ import annotations

import json
import os
import signal
import string
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, Mapping, Sequence

from twisted.logger import (
    ILogFilterPredicate,
    PredicateResult,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    formatEvent,
)
from zope.interface import provider

from lambdatx import entrypoint
from lambdatx.config import ConfigError, Config, effective_settings, load_config, problem_line

LogEvent = Dict[str, Any]

#: aws-lambda-rie flags taking a value, recognised anywhere before ``--``.
VALUE_FLAGS = ("--runtime-interface-emulator-address", "--runtime-api-address", "--log-level")
#: Where Lambda layers put extensions, which lambdatx does not run yet.
EXTENSIONS_DIR = "/opt/extensions"

USAGE = """\
usage: lambdatx [RIE-FLAGS] [--] [COMMAND [ARGS...]]
       lambdatx --help | --version

Run an unmodified AWS Lambda function: serve the Invoke API (default 0.0.0.0:8080) and the
Lambda Runtime API to runtimes spawned from COMMAND (default: the first executable bootstrap
of $LAMBDA_TASK_ROOT/bootstrap, /var/task/bootstrap, /opt/bootstrap, /var/runtime/bootstrap).

RIE-FLAGS (aws-lambda-rie compatible; recognised anywhere before "--", also as --flag=value):
  --runtime-interface-emulator-address HOST:PORT   Invoke API address (INVOKE_API_HOST, PORT)
  --runtime-api-address HOST:PORT                  shared Runtime API address
                                                   (RUNTIME_API_HOST, RUNTIME_API_PORT)
  --log-level LEVEL        DEBUG, INFO, WARNING, ERROR or CRITICAL (LOG_LEVEL)
  --enable-init-caching    accepted and ignored
  --                       everything after it is the command, verbatim

Everything else is configured by environment variables (MAX_CONCURRENCY,
AWS_LAMBDA_FUNCTION_TIMEOUT, AWS_LAMBDA_FUNCTION_NAME, AMQP_URI, LAMBDATX_*, ...): see
spec/configuration.md. Exit status: 0 clean shutdown, 64 configuration error, 69 a listener
could not be opened or AMQP gave up, 1 internal error.
"""


# --- argv ---------------------------------------------------------------------------------


@dataclass
class RieArgs:
    """The command line split the aws-lambda-rie way."""

    #: "run", "help" or "version".
    action: str = "run"
    #: Options for :func:`lambdatx.config.load_config`, keyed by long name without dashes.
    overrides: dict[str, object] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_argv(argv: Sequence[str]) -> RieArgs:
    """Split ``argv`` (without the program name) into rie flags and the runtime command."""
    action = entrypoint.help_or_version(argv)
    if action is not None:
        return RieArgs(action=action)
    parsed = RieArgs()
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, equals, value = arg.partition("=")
        if arg == "--":
            parsed.command.extend(argv[index + 1 :])
            break
        if name in VALUE_FLAGS:
            if not equals:
                if index + 1 == len(argv):
                    parsed.problems.append(problem_line(name, "", "needs a value"))
                    break
                index += 1
                value = argv[index]
            parsed.overrides[name[2:]] = value
        elif arg == "--enable-init-caching":
            parsed.overrides["enable-init-caching"] = True
        else:
            parsed.command.append(arg)
        index += 1
    return parsed


# --- logging (configuration.md §10) ---------------------------------------------------------

_LEVELS = {
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARNING": LogLevel.warn,
    "ERROR": LogLevel.error,
    "CRITICAL": LogLevel.critical,
}
_LEVEL_NAMES = {level: name for name, level in _LEVELS.items()}
#: Event keys that are bookkeeping, never printed as key=value fields.
_HIDDEN_KEYS = frozenset({"message", "isError", "system", "format", "time", "why", "failure"})


def _timestamp(when: float) -> str:
    millis = int(when * 1000)
    seconds, millis = divmod(millis, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _fields(event: LogEvent) -> dict[str, Any]:
    """The event's fields that its format string does not already show."""
    used = set()
    for _text, name, _spec, _conversion in string.Formatter().parse(event.get("log_format") or ""):
        if name:
            used.add(name.split(".")[0].split("[")[0].rstrip("!()"))
    return {
        key: value
        for key, value in event.items()
        if not key.startswith("log_") and key not in _HIDDEN_KEYS and key not in used
    }


def _text_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), default=str, separators=(",", ":"))
    text = value if isinstance(value, str) else str(value)
    if text and not any(c.isspace() or c in '"=' for c in text):
        return text
    return json.dumps(text)


def _logger_name(event: LogEvent) -> str:
    namespace = event.get("log_namespace", "lambdatx")
    # Twisted's own legacy-log messages ("Main loop terminated.") carry no useful namespace.
    return "twisted" if namespace == "log_legacy" else namespace


def format_text(event: LogEvent) -> str:
    """``2026-03-02T09:15:01.204Z [INFO] (lambdatx) message key=value ...`` (+ traceback)."""
    level = _LEVEL_NAMES.get(event.get("log_level", LogLevel.info), "INFO")
    parts = [
        _timestamp(event.get("log_time", time.time())),
        f"[{level}]",
        f"({_logger_name(event)})",
        formatEvent(event),
    ]
    parts += [f"{key}={_text_value(value)}" for key, value in _fields(event).items()]
    line = " ".join(part for part in parts if part)
    failure = event.get("log_failure")
    if failure is not None:
        line += "\n" + failure.getTraceback().rstrip("\n")
    return line + "\n"


def format_json(event: LogEvent) -> str:
    """One JSON object: ``time``, ``level`` (lowercase), ``logger``, ``message`` and fields."""
    level = _LEVEL_NAMES.get(event.get("log_level", LogLevel.info), "INFO")
    record: dict[str, Any] = {
        "time": _timestamp(event.get("log_time", time.time())),
        "level": level.lower(),
        "logger": _logger_name(event),
        "message": formatEvent(event),
    }
    for key, value in _fields(event).items():
        record.setdefault(key, value)
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=str) + "\n"


def make_observer(config: Config, stream: IO[str]) -> Any:
    """The daemon's log observer on ``stream``, filtered at ``config.log_level``."""
    formatter = format_json if config.structured_logging else format_text

    @provider(ILogObserver)
    def write(event: LogEvent) -> None:
        stream.write(formatter(event))
        stream.flush()

    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[config.log_level])
    return FilteringLogObserver(write, [_quiet_ports, predicate])  # type: ignore[list-item]


@provider(ILogFilterPredicate)
def _quiet_ports(event: LogEvent) -> Any:
    """twisted.internet's "<Factory> starting on <port>" lines: our own "listening" says it."""
    if event.get("log_namespace") == "log_legacy":
        text = event.get("log_text") or ""
        if " starting on " in text or text.startswith("(TCP Port "):
            return PredicateResult.no
    return PredicateResult.maybe


# --- running --------------------------------------------------------------------------------


log = Logger(namespace="lambdatx")


def _log_startup(config: Config) -> None:
    for warning in config.warnings:
        log.warn("{warning}", warning=warning)
    settings = effective_settings(config)
    # "log_*" keys belong to twisted.logger (log_level would be overwritten): rename ours.
    settings["daemon_log_level"] = settings.pop("log_level", config.log_level)
    log.info("configuration", **settings)
    log.info(
        "function {function} (name from {source}), command: {command}",
        function=config.function_name,
        source=config.function_name_source,
        command=" ".join(config.command) if config.command else "(none: external runtimes only)",
    )
    try:
        extensions = os.listdir(EXTENSIONS_DIR)
    except OSError:
        extensions = []
    if extensions:
        log.warn(
            "extensions are not run yet: {directory} is ignored",
            directory=EXTENSIONS_DIR,
            extensions=sorted(extensions),
        )


def _start(
    config: Config, reactor: Any, make_service: Callable[[Config, Any], Any] | None
) -> tuple[Any, Any]:
    """Log the start-up lines, then build the service (on the global reactor unless given one)."""
    _log_startup(config)
    if reactor is None:
        from twisted.internet import reactor

        # Orphans of runtimes are re-parented to us and reaped (lifecycle.md §5).
        from lambdatx.reaper import become_subreaper

        if os.getpid() != 1:
            become_subreaper()
    if make_service is None:
        from lambdatx.service import make_service as default_factory

        make_service = default_factory
    return reactor, make_service(config, reactor)


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
    make_service: Callable[[Config, Any], Any] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    begin_logging: Callable[[ILogObserver], None] = entrypoint.begin_logging,
    set_signal: Callable[[int, Any], Any] = signal.signal,
) -> int:
    """Run the daemon; return the exit status (the console script passes it to ``sys.exit``)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parsed = parse_argv(argv)
    if parsed.action != "run":
        return entrypoint.print_help_or_version(parsed.action, "lambdatx", USAGE, stdout)
    try:
        problems = parsed.problems
        config = load_config(environ, parsed.overrides, parsed.command)
    except ConfigError as error:
        problems = problems + error.problems
    if problems:
        return entrypoint.report_problems(stderr, problems)
    begin_logging(make_observer(config, stderr))
    return entrypoint.serve(lambda: _start(config, reactor, make_service), stderr, set_signal, log)


if __name__ == "__main__":
    sys.exit(main())
