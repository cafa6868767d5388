"""
The ``lambdatx-server`` console script: the Invoke API gateway (amqp-rpc.md §9), configured by
environment variables only (spec/configuration.md §5).

Like ``lambdatx`` it owns what twistd would otherwise own: exit codes (0 after SIGTERM/SIGINT,
64 configuration error with every problem listed, 69 port not bound or AMQP gave up, 1 internal
error), logging on stderr (text, or JSON with ``USE_STRUCTURED_LOGGING``) and signals (the first
starts the graceful stop, a second one skips the grace). The run loop is the daemon's
(:class:`lambdatx.entrypoint.Daemon`); reactor, service factory, streams, logging and signal
installation can be injected for tests.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import IO, Any, Callable, Mapping, Sequence

from twisted.logger import ILogObserver, Logger

from lambdatx import entrypoint
from lambdatx.cli import make_observer
from lambdatx.config import ConfigError, problem_line
from lambdatx.gateway_config import GatewayConfig, load_gateway_config

USAGE = """\
usage: lambdatx-server [--help | --version]

Serve the Lambda Invoke API for every function name and route each call through RabbitMQ to
the lambdatx daemons consuming the queue named after the function (AMQP-RPC).

Configured by environment variables:
  INVOKE_API_HOST, PORT        listen address (default 0.0.0.0:8080)
  AMQP_URI                     broker (default amqp://localhost:5672/?connection_attempts=20
                               &retry_delay=10); AMQP_USERNAME, AMQP_PASSWORD
  LAMBDATX_GATEWAY_TIMEOUT     seconds to wait for a reply (default 1800)
  AWS_REGION, AWS_ACCOUNT_ID   ARN matching (default us-east-1, 000000000000)
  LOG_LEVEL, USE_STRUCTURED_LOGGING, ENABLE_OPENFAAS,
  LAMBDATX_MAX_REQUEST_BYTES, LAMBDATX_MAX_EVENT_BYTES

Exit status: 0 clean shutdown, 64 configuration error, 69 the port could not be opened or the
broker gave up, 1 internal error. Equivalent to `twistd -n lambdatx-server`.
"""

log = Logger(namespace="lambdatx.gateway")


def _start(
    config: GatewayConfig, reactor: Any, make_service: Callable[[GatewayConfig, Any], Any] | None
) -> tuple[Any, Any]:
    """The gateway service (on the global reactor unless given one)."""
    if reactor is None:
        from twisted.internet import reactor
    if make_service is None:
        from lambdatx.gateway import make_gateway_service

        make_service = make_gateway_service
    return reactor, make_service(config, reactor)


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
    make_service: Callable[[GatewayConfig, Any], Any] | None = None,
    *,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    begin_logging: Callable[[ILogObserver], None] = entrypoint.begin_logging,
    set_signal: Callable[[int, Any], Any] = signal.signal,
) -> int:
    """Run the gateway; return the exit status (the console script passes it to ``sys.exit``)."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    action = entrypoint.help_or_version(argv)
    if action is not None:
        return entrypoint.print_help_or_version(action, "lambdatx-server", USAGE, stdout)
    problems = [
        problem_line("argument", arg, "lambdatx-server takes no arguments (use the environment)")
        for arg in argv
    ]
    try:
        config = load_gateway_config(environ)
    except ConfigError as error:
        problems += error.problems
    if problems:
        return entrypoint.report_problems(stderr, problems)
    begin_logging(make_observer(config.daemon_view, stderr))
    return entrypoint.serve(lambda: _start(config, reactor, make_service), stderr, set_signal, log)


if __name__ == "__main__":
    sys.exit(main())
