"""
``twistd lambdatx-server``: options in, one :class:`~lambdatx.gateway_config.GatewayConfig` out,
then the gateway service.

Options are the long options of spec/configuration.md §5; there are none for the AMQP
credentials (command lines are visible to other users). Under twistd the runner owns logging and
signals; configuration errors still exit 64, and a port that cannot be bound exits 69 with one
line, because the listener is opened here, before twistd starts the reactor.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

from twisted.application.service import IService

from lambdatx.entrypoint import ConfigOptions, option_lists, report_listen_error
from lambdatx.errors import ListenError
from lambdatx.gateway_config import GatewayConfig, load_gateway_config, option_table

_PARAMETERS, _FLAGS = option_lists(*option_table())


class Options(ConfigOptions):
    synopsis = "[options]"
    longdesc = (
        "The Invoke API for every function name, routed through RabbitMQ. Every option overrides "
        "the environment variable named in its help."
    )

    optParameters = _PARAMETERS
    optFlags = _FLAGS

    def load(self, environ: Mapping[str, str], overrides: dict[str, object]) -> GatewayConfig:
        return load_gateway_config(environ, overrides)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from lambdatx.gateway import make_gateway_service

    assert options.config is not None
    service: Any = make_gateway_service(options.config, reactor)
    try:
        service.listen()
    except ListenError as error:
        raise SystemExit(report_listen_error(sys.stderr, error))
    return service
