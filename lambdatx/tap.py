"""
``twistd lambdatx``: options in, one :class:`~lambdatx.config.Config` out, then the service.

Options are the long options of spec/configuration.md §3-§4 plus the aws-lambda-rie flags and
``--handler``; the runtime command follows ``--``. There are no options for the AMQP
credentials (command lines are visible to other users). Under twistd the runner owns logging,
signals and exit codes, except that configuration errors exit 64 as the console script does.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from lambdatx.config import OPTION_FLAGS, OPTION_PARAMETERS, Config, ConfigError, load_config


class Options(usage.Options):
    synopsis = "[options] [-- COMMAND [ARGS...]]"
    longdesc = (
        "Every option overrides the environment variable named in its help; the command after "
        "'--' runs verbatim (--handler is not appended to it)."
    )

    optParameters = [
        [option, None, None, f"Overrides {variable} (default: {default})."]
        for option, variable, default in OPTION_PARAMETERS
    ] + [
        ["runtime-interface-emulator-address", None, None,
         "HOST:PORT of the Invoke API (aws-lambda-rie flag)."],
        ["runtime-api-address", None, None,
         "HOST:PORT of the shared Runtime API (aws-lambda-rie flag)."],
        ["handler", None, None, "The handler exported to runtimes as _HANDLER (default: "
         "AWS_LAMBDA_FUNCTION_HANDLER, _HANDLER, or the command's last argument)."],
    ]  # fmt: skip
    optFlags = [
        [option, None, f"Overrides {variable} (presence = true)."]
        for option, variable in OPTION_FLAGS
    ] + [
        ["no-json-validation", None, "Pass any request bytes (LAMBDATX_VALIDATE_JSON=false)."],
        ["enable-init-caching", None, "Accepted and ignored (aws-lambda-rie flag)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.command: tuple[str, ...] = ()
        self.config: Config | None = None

    def parseArgs(self, *command: str) -> None:
        self.command = command

    def overrides(self) -> dict[str, object]:
        """The options given, in the form :func:`~lambdatx.config.load_config` takes."""
        return {key: value for key, value in self.items() if value not in (None, 0, False)}

    def postOptions(self) -> None:
        try:
            self.config = load_config(os.environ, self.overrides(), self.command)
        except ConfigError as error:
            sys.stderr.write("".join(line + "\n" for line in error.problems))
            sys.stderr.flush()
            # twistd turns UsageError into exit 1; the contract is 64 (EX_USAGE).
            raise SystemExit(64)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from lambdatx.service import make_service

    assert options.config is not None
    service: Any = make_service(options.config, reactor)
    return service
