"""
``twistd lambdatx-server``: options in, one :class:`~lambdatx.gateway_config.GatewayConfig` out,
then the gateway service.

Options are the long options of spec/configuration.md §5; there are none for the AMQP
credentials (command lines are visible to other users). Under twistd the runner owns logging and
signals; configuration errors still exit 64, and a port that cannot be bound exits 69 with one
line, because the listener is opened here, before twistd starts the reactor.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from lambdatx.config import ConfigError
from lambdatx.errors import ListenError
from lambdatx.gateway_config import GatewayConfig, load_gateway_config, option_table

_PARAMETERS, _FLAGS = option_table()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "The Invoke API for every function name, routed through RabbitMQ. Every option overrides "
        "the environment variable named in its help."
    )

    optParameters = [
        [option, None, None, f"Overrides {variable} (default: {default})."]
        for option, variable, default in _PARAMETERS
    ]
    optFlags = [
        [option, None, f"Overrides {variable} (presence = true)."] for option, variable in _FLAGS
    ]

    def __init__(self) -> None:
        super().__init__()
        self.config: GatewayConfig | None = None

    def overrides(self) -> dict[str, object]:
        return {key: value for key, value in self.items() if value not in (None, 0, False)}

    def postOptions(self) -> None:
        try:
            self.config = load_gateway_config(os.environ, self.overrides())
        except ConfigError as error:
            sys.stderr.write("".join(line + "\n" for line in error.problems))
            sys.stderr.flush()
            # twistd turns UsageError into exit 1; the contract is 64 (EX_USAGE).
            raise SystemExit(64)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from lambdatx.gateway import make_gateway_service

    assert options.config is not None
    service: Any = make_gateway_service(options.config, reactor)
    try:
        service.listen()
    except ListenError as error:
        sys.stderr.write(f"lambdatx: cannot listen on {error.address}: {error.reason}\n")
        sys.stderr.flush()
        raise SystemExit(69)
    return service
