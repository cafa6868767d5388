"""
Configuration: one frozen :class:`Config`, built from the environment and options.

The field set is the contract between the command lines (``lambdatx.cli``, ``lambdatx.tap``)
and ``lambdatx.service.make_service``. Tests build ``Config`` directly with ``Config(...)``
or ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Config:
    # Listeners
    invoke_api_host: str = "0.0.0.0"
    port: int = 8080
    runtime_api_host: str = "127.0.0.1"
    runtime_api_port: int = 9001

    # Function identity
    function_name: str = "test_function"
    #: How the name was found: "variable", "handler" or "default" (logged at start).
    function_name_source: str = "default"
    function_version: str = "$LATEST"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    memory_size: int = 3008

    # Runtime command
    #: Absolute argv of the runtime (empty with no_spawn).
    command: tuple[str, ...] = ()
    handler: str | None = None
    task_root: str = "."
    runtime_dir: str = "/var/runtime"
    #: The container environment the runtime environment is built from (configuration.md §8).
    environ: Mapping[str, str] = field(default_factory=dict)
    #: Daemon settings passed to runtimes anyway (LAMBDATX_PASS_ENV).
    pass_env: tuple[str, ...] = ()

    # Pool and clocks (seconds)
    max_concurrency: int = 1
    #: AWS_LAMBDA_MAX_CONCURRENCY: invocations one instance may hold; None = classic.
    runtime_max_concurrency: int | None = None
    timeout: float = 3.0
    idle_timeout: float = 1800.0
    #: LAMBDATX_INIT_TIMEOUT; None = max(10, timeout). Use :attr:`init_budget`.
    init_timeout: float | None = None
    shutdown_grace: float = 7.0
    queue_limit: int = 1000
    no_spawn: bool = False

    # Limits
    max_request_bytes: int = 6291456
    max_event_bytes: int = 1048576
    max_response_bytes: int = 6291556
    validate_json: bool = True

    # Logging and extras
    log_level: str = "INFO"
    structured_logging: bool = False
    print_reports: bool = False
    enable_openfaas: bool = False

    # AMQP (None = disabled). Parsed by lambdatx.amqp_uri.
    amqp_uri: str | None = None
    amqp_username: str | None = None
    amqp_password: str | None = None

    @property
    def init_budget(self) -> float:
        return self.init_timeout if self.init_timeout is not None else max(10.0, self.timeout)

    @property
    def capacity(self) -> int:
        """Invocations the daemon can run at once (the AMQP prefetch)."""
        return self.max_concurrency * (self.runtime_max_concurrency or 1)

    @property
    def partition(self) -> str:
        if self.region.startswith("cn-"):
            return "aws-cn"
        if self.region.startswith("us-gov-"):
            return "aws-us-gov"
        return "aws"

    @property
    def function_arn(self) -> str:
        return (
            f"arn:{self.partition}:lambda:{self.region}:{self.account_id}:function:"
            f"{self.function_name}"
        )
