"""
``twistd lambdatx``: options in, one :class:`~lambdatx.config.Config` out, then the service.

Options are the long options of spec/configuration.md §3-§4 plus the aws-lambda-rie flags and
``--handler``; the runtime command follows ``--``. There are no options for the AMQP
credentials (command lines are visible to other users). Under twistd the runner owns logging,
signals and exit codes, except that configuration errors exit 64 as the console script does.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.application.service import IService

from lambdatx.config import OPTION_FLAGS, OPTION_PARAMETERS, Config, load_config
from lambdatx.entrypoint import ConfigOptions, option_lists

_PARAMETERS, _FLAGS = option_lists(OPTION_PARAMETERS, OPTION_FLAGS)


class Options(ConfigOptions):
    synopsis = "[options] [-- COMMAND [ARGS...]]"
    longdesc = (
        "Every option overrides the environment variable named in its help; the command after "
        "'--' runs verbatim (--handler is not appended to it)."
    )

    optParameters = _PARAMETERS + [
        ["runtime-interface-emulator-address", None, None,
         "HOST:PORT of the Invoke API (aws-lambda-rie flag)."],
        ["runtime-api-address", None, None,
         "HOST:PORT of the shared Runtime API (aws-lambda-rie flag)."],
        ["handler", None, None, "The handler exported to runtimes as _HANDLER (default: "
         "AWS_LAMBDA_FUNCTION_HANDLER, _HANDLER, or the command's last argument)."],
    ]  # fmt: skip
    optFlags = _FLAGS + [
        ["no-json-validation", None, "Pass any request bytes (LAMBDATX_VALIDATE_JSON=false)."],
        ["enable-init-caching", None, "Accepted and ignored (aws-lambda-rie flag)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self.command: tuple[str, ...] = ()

    def parseArgs(self, *command: str) -> None:
        self.command = command

    def load(self, environ: Mapping[str, str], overrides: dict[str, object]) -> Config:
        return load_config(environ, overrides, self.command)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from lambdatx.service import make_service

    assert options.config is not None
    service: Any = make_service(options.config, reactor)
    return service
