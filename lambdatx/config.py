"""
Configuration: one frozen :class:`Config`, built from the environment and options.

The field set is the contract between the command lines (``lambdatx.cli``, ``lambdatx.tap``)
and ``lambdatx.service.make_service``. Tests build ``Config`` directly with ``Config(...)``
or ``dataclasses.replace``.

:func:`load_config` implements spec/configuration.md §2-§7: it reads every daemon variable,
lets command-line options win over them, derives the handler, the function name and the
command, and checks everything before anything starts. Every problem found is collected and
raised at once as one :class:`ConfigError`, whose ``lines`` are what the entry points print
before exiting 64. Start-up warnings travel on the returned ``Config.warnings``.

``overrides`` are command-line options keyed by their long name without dashes, exactly as
``usage.Options`` stores them (``{"port": "8081", "no-spawn": True, "handler": "f.h"}``), plus
the aws-lambda-rie flags ``runtime-interface-emulator-address``, ``runtime-api-address``,
``log-level`` and ``enable-init-caching``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass, field, fields
from typing import Callable, Mapping, Sequence

from lambdatx.amqp_uri import AmqpUriError, parse_amqp_uri, uri_warnings
from lambdatx.errors import LambdaTxError

FUNCTION_NAME_PATTERN = "[a-zA-Z0-9-_]{1,64}"
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_FUNCTION_VERSION = re.compile(r"[a-zA-Z0-9$_-]{1,128}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_INTEGER = re.compile(r"\+?[0-9]+")
_SECONDS = re.compile(r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

_BOOLEANS = {
    "true": True, "1": True, "yes": True, "on": True,
    "false": False, "0": False, "no": False, "off": False,
}  # fmt: skip

#: LOG_LEVEL names and aws-lambda-rie aliases -> the canonical level name.
LOG_LEVELS = {
    "DEBUG": "DEBUG", "TRACE": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING", "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL", "FATAL": "CRITICAL", "PANIC": "CRITICAL",
}  # fmt: skip

#: Bootstrap locations tried after ``${LAMBDA_TASK_ROOT}/bootstrap`` (§7).
BOOTSTRAP_CANDIDATES: tuple[str, ...] = (
    "/var/task/bootstrap",
    "/opt/bootstrap",
    "/var/runtime/bootstrap",
)

#: Daemon settings removed from the runtime environment (§8), besides every ``LAMBDATX_*``.
REMOVED_VARIABLES: frozenset[str] = frozenset(
    {
        "AMQP_URI", "AMQP_USERNAME", "AMQP_PASSWORD", "INVOKE_API_HOST", "PORT",
        "RUNTIME_API_HOST", "RUNTIME_API_PORT", "MAX_CONCURRENCY",
        "AWS_LAMBDA_FUNCTION_TIMEOUT", "AWS_LAMBDA_FUNCTION_IDLETIMEOUT", "LOG_LEVEL",
        "USE_STRUCTURED_LOGGING", "PRINT_REPORTS", "ENABLE_OPENFAAS",
        "KUBERNETES_INIT_CONTAINER",
    }
)  # fmt: skip

#: RabbitMQ's default consumer acknowledgement timeout (amqp-rpc.md §6).
AMQP_ACK_TIMEOUT = 1800.0

#: What a secret is shown as (logs, problem lines).
MASK = "***"


def is_removed_variable(name: str) -> bool:
    """True when ``name`` is a daemon setting kept away from runtimes (§8)."""
    return name in REMOVED_VARIABLES or name.startswith("LAMBDATX_")


def pass_env_allowed(name: str) -> bool:
    """True when ``name`` may be listed in ``LAMBDATX_PASS_ENV`` (§4)."""
    return is_removed_variable(name) and not name.startswith("AMQP_")


class ConfigError(LambdaTxError):
    """
    The configuration is unusable; ``lines`` holds one printable line per problem (exit 64).
    """

    def __init__(self, problems: Sequence[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)

    @property
    def lines(self) -> list[str]:
        return self.problems


class ValueProblem(ValueError):
    """A single value does not have the expected syntax; the argument is the reason."""

    @property
    def reason(self) -> str:
        return str(self.args[0])


def problem_line(name: str, value: object, reason: str) -> str:
    """The one-line form of a configuration problem (configuration.md §6)."""
    return f'lambdatx: configuration error: {name}="{value}": {reason}'


# --- value syntax (§2) -------------------------------------------------------------------


def parse_integer(text: str, minimum: int = 0) -> int:
    if not _INTEGER.fullmatch(text) or int(text) < minimum:
        raise ValueProblem(f"must be an integer >= {minimum}")
    return int(text)


def parse_seconds(text: str, positive: bool = False) -> float:
    """A decimal number of seconds without unit; ``positive`` excludes 0."""
    bound = "> 0" if positive else ">= 0"
    if not _SECONDS.fullmatch(text):
        raise ValueProblem(f"must be a number of seconds {bound}, without unit")
    value = float(text)
    if positive and value <= 0:
        raise ValueProblem(f"must be a number of seconds {bound}, without unit")
    return value


def parse_boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueProblem("must be true/false, 1/0, yes/no or on/off") from None


def parse_port(text: str) -> int:
    if not _INTEGER.fullmatch(text) or int(text) > 65535:
        raise ValueProblem("must be a port number 0-65535")
    return int(text)


def parse_host(text: str) -> str:
    """An IPv4 literal, an IPv6 literal (brackets allowed) or a host name."""
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if ":" in candidate:
        try:
            ipaddress.IPv6Address(candidate)
            return candidate
        except ValueError:
            raise ValueProblem("must be an IPv4 address, an IPv6 address or a host name")
    labels = candidate.rstrip(".").split(".") if candidate else [""]
    all_numeric = all(label.isdigit() for label in labels)
    if all_numeric:
        try:
            ipaddress.IPv4Address(candidate)
        except ValueError:
            raise ValueProblem("must be an IPv4 address, an IPv6 address or a host name")
        return candidate
    if len(candidate) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueProblem("must be an IPv4 address, an IPv6 address or a host name")
    return candidate


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` with a bracketed IPv6 host (``[::]:8080``), as aws-lambda-rie takes it."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueProblem("must be HOST:PORT (IPv6 hosts in brackets: [::]:8080)")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueProblem("must be HOST:PORT (IPv6 hosts in brackets: [::]:8080)")
    try:
        return parse_host(host), parse_port(port)
    except ValueProblem as problem:
        raise ValueProblem(f"must be HOST:PORT: {problem.reason}") from None


def parse_log_level(text: str) -> str:
    try:
        return LOG_LEVELS[text.upper()]
    except KeyError:
        raise ValueProblem(
            "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL "
            "(or the aliases TRACE, WARN, FATAL, PANIC)"
        ) from None


def _matching(pattern: re.Pattern[str], shown: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueProblem(f"must match {shown}")
        return text

    return parse


#: ``AWS_REGION``, ``AWS_ACCOUNT_ID`` (the daemon's and the gateway's).
parse_region = _matching(_REGION, "[a-z]{2}(-[a-z]+)+-[0-9]+")
parse_account_id = _matching(_ACCOUNT_ID, "12 digits")


def _integer_at_least(minimum: int) -> Callable[[str], int]:
    return lambda text: parse_integer(text, minimum)


def _seconds(positive: bool) -> Callable[[str], float]:
    return lambda text: parse_seconds(text, positive)


def parse_amqp_uri_text(text: str) -> str:
    """``AMQP_URI`` is checked here, with everything else, and kept as text."""
    try:
        parse_amqp_uri(text)
    except AmqpUriError as error:
        raise ValueProblem(str(error)) from None
    return text


def mask_uri(uri: str) -> str:
    """``uri`` with the password of its user info replaced by ``***``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    # The user info ends at the last '@' before the query: an unencoded '/' or '@' in the
    # password must not leave part of it visible. Over-masking an odd URI is acceptable.
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, cut)
    if at < 0:
        return uri
    user, colon, _password = rest[:at].partition(":")
    if not colon:
        return uri
    return f"{scheme}://{user}:{MASK}@{rest[at + 1:]}"


# --- the settings table (§3, §4) ---------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    variable: str
    option: str | None
    field: str
    parse: Callable[[str], object]
    secret: bool = False


_SETTINGS: tuple[_Setting, ...] = (
    _Setting("INVOKE_API_HOST", "invoke-api-host", "invoke_api_host", parse_host),
    _Setting("PORT", "port", "port", parse_port),
    _Setting("RUNTIME_API_HOST", "runtime-api-host", "runtime_api_host", parse_host),
    _Setting("RUNTIME_API_PORT", "runtime-api-port", "runtime_api_port", parse_port),
    _Setting("AMQP_URI", "amqp-uri", "amqp_uri", parse_amqp_uri_text, secret=True),
    _Setting("AMQP_USERNAME", None, "amqp_username", str),
    _Setting("AMQP_PASSWORD", None, "amqp_password", str, secret=True),
    _Setting("MAX_CONCURRENCY", "max-concurrency", "max_concurrency", _integer_at_least(1)),
    _Setting("AWS_LAMBDA_MAX_CONCURRENCY", None, "runtime_max_concurrency", _integer_at_least(1)),
    _Setting(
        "AWS_LAMBDA_FUNCTION_VERSION",
        "function-version",
        "function_version",
        _matching(_FUNCTION_VERSION, "[a-zA-Z0-9$_-]{1,128}"),
    ),
    _Setting("AWS_LAMBDA_FUNCTION_TIMEOUT", "timeout", "timeout", _seconds(True)),
    _Setting("AWS_LAMBDA_FUNCTION_IDLETIMEOUT", "idle-timeout", "idle_timeout", _seconds(False)),
    _Setting(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "memory-size", "memory_size", _integer_at_least(1)
    ),
    _Setting("AWS_REGION", "region", "region", parse_region),
    _Setting("LOG_LEVEL", "log-level", "log_level", parse_log_level),
    _Setting("USE_STRUCTURED_LOGGING", "structured-logging", "structured_logging", parse_boolean),
    _Setting("PRINT_REPORTS", "print-reports", "print_reports", parse_boolean),
    _Setting("ENABLE_OPENFAAS", "enable-openfaas", "enable_openfaas", parse_boolean),
    _Setting("AWS_ACCOUNT_ID", "account-id", "account_id", parse_account_id),
    _Setting("LAMBDATX_QUEUE_LIMIT", "queue-limit", "queue_limit", _integer_at_least(0)),
    _Setting("LAMBDATX_INIT_TIMEOUT", "init-timeout", "init_timeout", _seconds(True)),
    _Setting("LAMBDATX_SHUTDOWN_GRACE", "shutdown-grace", "shutdown_grace", _seconds(False)),
    _Setting(
        "LAMBDATX_MAX_REQUEST_BYTES",
        "max-request-bytes",
        "max_request_bytes",
        _integer_at_least(1),
    ),
    _Setting(
        "LAMBDATX_MAX_EVENT_BYTES", "max-event-bytes", "max_event_bytes", _integer_at_least(1)
    ),
    _Setting(
        "LAMBDATX_MAX_RESPONSE_BYTES",
        "max-response-bytes",
        "max_response_bytes",
        _integer_at_least(1),
    ),
    _Setting("LAMBDATX_VALIDATE_JSON", None, "validate_json", parse_boolean),
    _Setting("LAMBDATX_NO_SPAWN", "no-spawn", "no_spawn", parse_boolean),
    _Setting("LAMBDA_RUNTIME_DIR", None, "runtime_dir", str),
)


def _option_table() -> tuple[tuple[tuple[str, str, str], ...], tuple[tuple[str, str], ...]]:
    defaults = {f.name: f.default for f in fields(Config)}
    shown = {"amqp_uri": "empty: AMQP disabled", "init_timeout": "max(10, timeout)"}
    parameters = tuple(
        (s.option, s.variable, shown.get(s.field, str(defaults[s.field])))
        for s in _SETTINGS
        if s.option is not None and s.parse is not parse_boolean
    ) + (
        ("function-name", "AWS_LAMBDA_FUNCTION_NAME", "derived from the handler"),
        ("pass-env", "LAMBDATX_PASS_ENV", "empty"),
    )
    flags = tuple(
        (s.option, s.variable)
        for s in _SETTINGS
        if s.option is not None and s.parse is parse_boolean
    )
    return parameters, flags


class SettingsReader:
    """
    Reads settings (the daemon's and the gateway's): option over variable over default; empty
    counts as unset. Collects the problems, secrets masked.
    """

    def __init__(self, environ: Mapping[str, str], overrides: Mapping[str, object]):
        self.environ = environ
        self.overrides = overrides
        self.problems: list[str] = []

    def raw(self, variable: str | None, option: str | None) -> tuple[str, object] | None:
        if option is not None:
            value = self.overrides.get(option)
            if value is not None and value is not False and value != "":
                return f"--{option}", value
        if variable is not None and self.environ.get(variable):
            return variable, self.environ[variable]
        return None

    def get(self, variable: str | None, option: str | None, parse: Callable[[str], object],
            secret: bool = False) -> object:  # fmt: skip
        found = self.raw(variable, option)
        if found is None:
            return None
        label, value = found
        if isinstance(value, bool):
            return value
        try:
            return parse(str(value))
        except ValueProblem as problem:
            self.problem(label, value, problem.reason, secret)
            return None

    def problem(self, label: str, value: object, reason: str, secret: bool = False) -> None:
        if secret:
            value = mask_uri(str(value)) if label in ("AMQP_URI", "--amqp-uri") else MASK
        self.problems.append(problem_line(label, value, reason))


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

    #: Start-up warnings found while loading (logged by the entry point; not compared).
    warnings: tuple[str, ...] = field(default=(), compare=False)

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


#: Long options of §3-§4 taking a value, as (option, variable, default shown in help).
#: Boolean options (presence = true) as (option, variable); ``--no-json-validation`` apart.
OPTION_PARAMETERS, OPTION_FLAGS = _option_table()


# --- loading -----------------------------------------------------------------------------


def load_config(
    environ: Mapping[str, str],
    overrides: Mapping[str, object] | None = None,
    argv_command: Sequence[str] = (),
    cwd: str | None = None,
) -> Config:
    """
    Build the daemon's :class:`Config` (configuration.md §2-§7), or raise :class:`ConfigError`
    listing every problem. ``argv_command`` is the runtime command as given (unresolved);
    ``cwd`` defaults to the process's working directory.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    overrides, address_problems = _expand_addresses(dict(overrides or {}))
    reader = SettingsReader(environ, overrides)
    reader.problems.extend(address_problems)
    values: dict[str, object] = {}
    for setting in _SETTINGS:
        value = reader.get(setting.variable, setting.option, setting.parse, setting.secret)
        if value is not None:
            values[setting.field] = value
    if overrides.get("no-json-validation"):
        values["validate_json"] = False
    values["pass_env"] = _pass_env(reader)
    values["task_root"] = _task_root(reader, cwd)
    check_credentials(reader, values)
    handler, handler_label = _handler(reader, argv_command)
    values["handler"] = handler
    warnings: list[str] = []
    _function_name(reader, values, handler, handler_label, warnings)
    values["command"] = _command(reader, values, argv_command, environ, cwd, warnings)
    values["environ"] = dict(environ)
    config = Config(**values)  # type: ignore[arg-type]
    _check_ports(reader, config)
    warnings.extend(_warnings(config, environ, overrides))
    if reader.problems:
        raise ConfigError(reader.problems)
    return Config(**{**values, "warnings": tuple(warnings)})  # type: ignore[arg-type]


def _expand_addresses(overrides: dict[str, object]) -> tuple[dict[str, object], list[str]]:
    """Turn the aws-lambda-rie ``HOST:PORT`` flags into host and port options."""
    problems = []
    pairs = (
        ("runtime-interface-emulator-address", "invoke-api-host", "port"),
        ("runtime-api-address", "runtime-api-host", "runtime-api-port"),
    )
    for flag, host_option, port_option in pairs:
        address = overrides.pop(flag, None)
        if address is None or address == "":
            continue
        try:
            host, port = parse_host_port(str(address))
        except ValueProblem as problem:
            problems.append(problem_line(f"--{flag}", address, problem.reason))
            continue
        # A more specific option, when also given, wins over the combined address.
        overrides.setdefault(host_option, host)
        overrides.setdefault(port_option, str(port))
    return overrides, problems


def _pass_env(reader: SettingsReader) -> tuple[str, ...]:
    found = reader.raw("LAMBDATX_PASS_ENV", "pass-env")
    if found is None:
        return ()
    label, value = found
    names = tuple(name.strip() for name in str(value).split(",") if name.strip())
    refused = [name for name in names if not pass_env_allowed(name)]
    if refused:
        reader.problem(
            label,
            value,
            f"cannot pass {', '.join(refused)}: only daemon settings from the removal list "
            "of configuration.md §8, never AMQP_*, may be passed",
        )
    return tuple(name for name in names if name not in refused)


def _task_root(reader: SettingsReader, cwd: str) -> str:
    found = reader.raw("LAMBDA_TASK_ROOT", None)
    if found is None:
        return cwd
    label, value = found
    path = os.path.normpath(os.path.join(cwd, str(value)))
    if not os.path.isdir(path):
        reader.problem(label, value, "must be an existing directory")
    return path


def check_credentials(reader: SettingsReader, values: dict[str, object]) -> None:
    """AMQP_USERNAME and AMQP_PASSWORD come together."""
    user, password = values.get("amqp_username"), values.get("amqp_password")
    if user is not None and password is None:
        reader.problem("AMQP_USERNAME", user, "AMQP_PASSWORD must be set too")
    if password is not None and user is None:
        reader.problem("AMQP_PASSWORD", password, "AMQP_USERNAME must be set too", secret=True)


def _handler(reader: SettingsReader, command: Sequence[str]) -> tuple[str | None, str]:
    """The handler and where it came from (§6, first that applies)."""
    for variable, option in (
        (None, "handler"),
        ("AWS_LAMBDA_FUNCTION_HANDLER", None),
        ("_HANDLER", None),
    ):
        found = reader.raw(variable, option)
        if found is not None:
            label, value = found
            return str(value), label
    if len(command) >= 2:
        last = command[-1]
        if last and "/" not in last and not last.startswith("-"):
            return last, "COMMAND"
    return None, ""


def _function_name(
    reader: SettingsReader,
    values: dict[str, object],
    handler: str | None,
    handler_label: str,
    warnings: list[str],
) -> None:
    found = reader.raw("AWS_LAMBDA_FUNCTION_NAME", "function-name")
    if found is not None:
        label, value = found
        values["function_name"], values["function_name_source"] = str(value), "variable"
        if not _FUNCTION_NAME.fullmatch(str(value)):
            reader.problem(label, value, f"must match {FUNCTION_NAME_PATTERN}")
        return
    if handler is not None:
        name = handler.split(".", 1)[0]
        values["function_name"], values["function_name_source"] = name, "handler"
        if not _FUNCTION_NAME.fullmatch(name):
            reader.problem(
                handler_label,
                handler,
                f'the function name "{name}" inferred from the handler does not match '
                f"{FUNCTION_NAME_PATTERN}; set AWS_LAMBDA_FUNCTION_NAME",
            )
        else:
            warnings.append(
                f'function name inferred from handler: "{name}" (from "{handler}"); '
                "set AWS_LAMBDA_FUNCTION_NAME to choose it"
            )
        return
    values["function_name"], values["function_name_source"] = "test_function", "default"
    if values.get("amqp_uri") is not None:
        reader.problem(
            "AWS_LAMBDA_FUNCTION_NAME",
            "",
            "must be set when AMQP_URI is set: the fallback name test_function would put "
            "unrelated functions on one queue",
        )
    else:
        warnings.append(
            "no function name and no handler: using aws-lambda-rie's default name "
            "test_function; set AWS_LAMBDA_FUNCTION_NAME"
        )


def _command(
    reader: SettingsReader,
    values: dict[str, object],
    command: Sequence[str],
    environ: Mapping[str, str],
    cwd: str,
    warnings: list[str],
) -> tuple[str, ...]:
    if values.get("no_spawn"):
        if command:
            warnings.append(f"LAMBDATX_NO_SPAWN is set: the command {list(command)} is not run")
        return ()
    if command:
        try:
            return (resolve_executable(command[0], environ.get("PATH"), cwd), *command[1:])
        except ValueProblem as problem:
            reader.problem("COMMAND", command[0], problem.reason)
            return tuple(command)
    task_root = str(values["task_root"])
    candidates = (os.path.join(task_root, "bootstrap"), *BOOTSTRAP_CANDIDATES)
    for candidate in candidates:
        if _is_executable_file(candidate):
            return (candidate,)
    reader.problem(
        "COMMAND",
        "",
        "no command given and no executable bootstrap found; tried " + ", ".join(candidates),
    )
    return ()


def _is_executable_file(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and os.access(path, os.X_OK)


def resolve_executable(name: str, path: str | None, cwd: str) -> str:
    """
    The absolute path of a command's ``argv[0]`` (§6): a name containing ``/`` is taken
    against ``cwd``; a bare name is looked up in ``path`` (the runtime's ``PATH``).
    """
    if "/" in name:
        resolved = os.path.normpath(os.path.join(cwd, name))
        try:
            mode = os.stat(resolved).st_mode
        except OSError as error:
            raise ValueProblem(f"cannot run {resolved}: {error.strerror}") from None
        if not stat.S_ISREG(mode):
            raise ValueProblem(f"cannot run {resolved}: not a regular file")
        if not os.access(resolved, os.X_OK):
            raise ValueProblem(f"cannot run {resolved}: not executable")
        return resolved
    search = path if path is not None else os.defpath
    for directory in search.split(os.pathsep):
        candidate = os.path.normpath(os.path.join(cwd, directory or ".", name))
        if _is_executable_file(candidate):
            return candidate
    raise ValueProblem(f"no executable named {name} in PATH ({search})")


def _hosts_overlap(a: str, b: str) -> bool:
    if a == b or "::" in (a, b):
        return True
    if "0.0.0.0" in (a, b):
        other = b if a == "0.0.0.0" else a
        return ":" not in other
    return False


def _check_ports(reader: SettingsReader, config: Config) -> None:
    if config.port == config.runtime_api_port != 0 and _hosts_overlap(
        config.invoke_api_host, config.runtime_api_host
    ):
        reader.problem(
            "PORT",
            config.port,
            f"the Invoke API ({config.invoke_api_host}) and the shared Runtime API "
            f"({config.runtime_api_host}) cannot both listen on port {config.port}; "
            "change PORT or RUNTIME_API_PORT",
        )


#: Variables lambdatx sets for every runtime (§8, layer "always") besides its own inputs.
_ALWAYS_SET = ("AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_INITIALIZATION_TYPE", "_INSTANCE")


def _warnings(
    config: Config, environ: Mapping[str, str], overrides: Mapping[str, object]
) -> list[str]:
    warnings = []
    if config.timeout > 900:
        warnings.append(
            f"AWS_LAMBDA_FUNCTION_TIMEOUT={config.timeout:g} is above the AWS maximum of 900 s"
        )
    if not 128 <= config.memory_size <= 10240:
        warnings.append(
            f"AWS_LAMBDA_FUNCTION_MEMORY_SIZE={config.memory_size} is outside the AWS range "
            "128-10240"
        )
    if config.amqp_uri is not None and 2 * config.timeout + config.init_budget >= AMQP_ACK_TIMEOUT:
        warnings.append(
            f"2 x timeout + init budget = {2 * config.timeout + config.init_budget:g} s reaches "
            f"RabbitMQ's default consumer ack timeout ({AMQP_ACK_TIMEOUT:g} s): a long "
            "invocation may be redelivered"
        )
    if config.amqp_uri is not None:
        both = config.amqp_username is not None and config.amqp_password is not None
        warnings.extend(uri_warnings(config.amqp_uri, both))
    if overrides.get("enable-init-caching"):
        warnings.append("--enable-init-caching is accepted and ignored")
    effective = {
        "_HANDLER": config.handler,
        "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": config.function_version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
        "AWS_REGION": config.region,
    }
    for name in (*_ALWAYS_SET, *effective):
        value = environ.get(name)
        if value and (name in _ALWAYS_SET or value != effective[name]):
            warnings.append(
                f"the container's {name} is ignored: lambdatx sets it for each runtime"
            )
    return warnings


def effective_settings(config: Config) -> dict[str, object]:
    """The configuration as logged at start: secrets masked, the environment left out."""
    shown: dict[str, object] = {}
    for name, value in vars(config).items():
        if name in ("environ", "warnings"):
            continue
        if name == "amqp_password" and value is not None:
            value = MASK
        elif name == "amqp_uri" and value is not None:
            value = mask_uri(value)
        shown[name] = value
    return shown
