"""
The gateway's configuration (spec/configuration.md §5): one frozen :class:`GatewayConfig`.

:func:`load_gateway_config` reads the gateway's variables, lets options (``twistd
lambdatx-server --port …``) win over them, checks every value with the daemon's parsers
(:mod:`lambdatx.config`) and raises one :class:`~lambdatx.config.ConfigError` listing every
problem (exit 64). An empty variable counts as unset. Start-up warnings travel on
``GatewayConfig.warnings``.

``LAMBDATX_GATEWAY_TIMEOUT`` is the fail-safe wait for a reply and the ``expiration`` of published
requests. The Go daemon's gateway read ``AWS_LAMBDA_FUNCTION_TIMEOUT`` for it, so that variable is
accepted in its place, with a warning: in an env file shared with daemons it would be their T.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping

from lambdatx.amqp_uri import uri_warnings
from lambdatx.config import (
    MASK,
    Config,
    ConfigError,
    SettingsReader,
    ValueProblem,
    check_credentials,
    mask_uri,
    parse_account_id,
    parse_amqp_uri_text,
    parse_boolean,
    parse_host,
    parse_integer,
    parse_log_level,
    parse_port,
    parse_region,
    parse_seconds,
)

#: The Go daemon's gateway default without its ``heartbeat=0`` (which lambdatx would honour).
DEFAULT_AMQP_URI = "amqp://localhost:5672/?connection_attempts=20&retry_delay=10"
#: RabbitMQ's default consumer ack timeout: no function can be held longer than this.
DEFAULT_TIMEOUT = 1800.0


@dataclass(frozen=True)
class GatewayConfig:
    invoke_api_host: str = "0.0.0.0"
    port: int = 8080
    amqp_uri: str = DEFAULT_AMQP_URI
    amqp_username: str | None = None
    amqp_password: str | None = None
    #: Seconds: fail-safe reply wait and request ``expiration``.
    timeout: float = DEFAULT_TIMEOUT
    region: str = "us-east-1"
    account_id: str = "000000000000"
    log_level: str = "INFO"
    structured_logging: bool = False
    enable_openfaas: bool = False
    max_request_bytes: int = 6291456
    max_event_bytes: int = 1048576
    #: Start-up warnings found while loading (logged at start; not compared).
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def partition(self) -> str:
        return self.daemon_view.partition

    def function_arn(self, name: str) -> str:
        return f"arn:{self.partition}:lambda:{self.region}:{self.account_id}:function:{name}"

    @cached_property
    def daemon_view(self) -> Config:
        """
        The daemon ``Config`` fields the shared helpers read (body limits, ARN scope, log
        settings), so ``lambdatx.invoke_api``, ``lambdatx.validate`` and ``lambdatx.cli``
        helpers serve the gateway unchanged.
        """
        return Config(
            invoke_api_host=self.invoke_api_host,
            port=self.port,
            region=self.region,
            account_id=self.account_id,
            max_request_bytes=self.max_request_bytes,
            max_event_bytes=self.max_event_bytes,
            log_level=self.log_level,
            structured_logging=self.structured_logging,
            enable_openfaas=self.enable_openfaas,
            validate_json=False,
        )

    def settings(self) -> dict[str, object]:
        """The configuration as logged at start, secrets masked."""
        return {
            "invoke_api_host": self.invoke_api_host,
            "port": self.port,
            "amqp_uri": mask_uri(self.amqp_uri),
            "amqp_username": self.amqp_username,
            "amqp_password": None if self.amqp_password is None else MASK,
            "timeout": self.timeout,
            "region": self.region,
            "account_id": self.account_id,
            # "log_*" keys belong to twisted.logger, which would overwrite this one.
            "daemon_log_level": self.log_level,
            "structured_logging": self.structured_logging,
            "enable_openfaas": self.enable_openfaas,
            "max_request_bytes": self.max_request_bytes,
            "max_event_bytes": self.max_event_bytes,
        }


def _positive_seconds(text: str) -> float:
    return parse_seconds(text, positive=True)


def _bytes_limit(text: str) -> int:
    return parse_integer(text, 1)


#: (variable, option, field, parser, secret). Options are those of ``twistd lambdatx-server``.
SETTINGS: tuple[tuple[str, str | None, str, Callable[[str], object], bool], ...] = (
    ("INVOKE_API_HOST", "invoke-api-host", "invoke_api_host", parse_host, False),
    ("PORT", "port", "port", parse_port, False),
    ("AMQP_URI", "amqp-uri", "amqp_uri", parse_amqp_uri_text, True),
    ("AMQP_USERNAME", None, "amqp_username", str, False),
    ("AMQP_PASSWORD", None, "amqp_password", str, True),
    ("LAMBDATX_GATEWAY_TIMEOUT", "timeout", "timeout", _positive_seconds, False),
    ("AWS_REGION", "region", "region", parse_region, False),
    ("AWS_ACCOUNT_ID", "account-id", "account_id", parse_account_id, False),
    ("LOG_LEVEL", "log-level", "log_level", parse_log_level, False),
    ("USE_STRUCTURED_LOGGING", "structured-logging", "structured_logging", parse_boolean, False),
    ("ENABLE_OPENFAAS", "enable-openfaas", "enable_openfaas", parse_boolean, False),
    ("LAMBDATX_MAX_REQUEST_BYTES", "max-request-bytes", "max_request_bytes", _bytes_limit, False),
    ("LAMBDATX_MAX_EVENT_BYTES", "max-event-bytes", "max_event_bytes", _bytes_limit, False),
)
#: The Go daemon's name for the fail-safe, read when LAMBDATX_GATEWAY_TIMEOUT is unset.
LEGACY_TIMEOUT = "AWS_LAMBDA_FUNCTION_TIMEOUT"


def option_table() -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(option, variable, default) of the valued options and (option, variable) of the flags."""
    defaults = GatewayConfig()
    parameters, flags = [], []
    for variable, option, name, parse, _secret in SETTINGS:
        if option is None:
            continue
        if parse is parse_boolean:
            flags.append((option, variable))
        else:
            value = getattr(defaults, name)
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            parameters.append((option, variable, shown))
    return parameters, flags


def load_gateway_config(
    environ: Mapping[str, str], overrides: Mapping[str, object] | None = None
) -> GatewayConfig:
    """
    Build the gateway's configuration from ``environ`` and ``overrides`` (long option names
    without dashes, as ``usage.Options`` stores them), or raise ``ConfigError`` with every
    problem.
    """
    reader = SettingsReader(environ, overrides or {})
    values: dict[str, object] = {}
    for variable, option, name, parse, secret in SETTINGS:
        value = reader.get(variable, option, parse, secret)
        if value is not None:
            values[name] = value
    warnings: list[str] = []
    legacy = environ.get(LEGACY_TIMEOUT)
    if legacy and reader.raw("LAMBDATX_GATEWAY_TIMEOUT", "timeout") is None:
        try:
            values["timeout"] = _positive_seconds(legacy)
            warnings.append(
                f"{LEGACY_TIMEOUT}={legacy} is used as the gateway's fail-safe reply timeout; "
                "set LAMBDATX_GATEWAY_TIMEOUT instead (a daemon's T would be too short here)"
            )
        except ValueProblem as problem:
            reader.problem(LEGACY_TIMEOUT, legacy, problem.reason)
    check_credentials(reader, values)
    if reader.problems:
        raise ConfigError(reader.problems)
    config = GatewayConfig(**values)  # type: ignore[arg-type]
    both = config.amqp_username is not None and config.amqp_password is not None
    warnings.extend(uri_warnings(config.amqp_uri, both))
    return GatewayConfig(**values, warnings=tuple(warnings))  # type: ignore[arg-type]
