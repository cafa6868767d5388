"""The ``twistd lambdatx-server`` plugin: only a ServiceMaker; the wiring is ``lambdatx.gateway_tap``."""

from twisted.application.service import ServiceMaker

lambdatx_server = ServiceMaker(
    "lambdatx-server",
    "lambdatx.gateway_tap",
    "The Invoke API gateway: any function name, routed through RabbitMQ (AMQP-RPC).",
    "lambdatx-server",
)
