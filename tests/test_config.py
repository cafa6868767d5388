"""Unit tests for lambdatx.config (configuration.md §2-§7) and lambdatx.environment (§8)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lambdatx import config as config_module
from lambdatx.config import (
    Config,
    ConfigError,
    effective_settings,
    load_config,
    mask_uri,
    parse_boolean,
    parse_host,
    parse_host_port,
    parse_integer,
    parse_port,
    parse_seconds,
    ValueProblem,
)
from lambdatx.environment import RuntimeEnvironment, runtime_environment

TRUE = "/bin/true"


def make_executable(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


@pytest.fixture
def load(tmp_path, monkeypatch):
    """load_config in an isolated working directory with no fixed bootstrap locations."""
    monkeypatch.setattr(config_module, "BOOTSTRAP_CANDIDATES", ())

    def load(env=None, overrides=None, command=(TRUE,), cwd=None):
        environ = {"PATH": "/usr/bin:/bin", **(env or {})}
        return load_config(environ, overrides, command, cwd=str(cwd or tmp_path))

    return load


def problems_of(load, *args, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(*args, **kwargs)
    return caught.value.problems


# --- value syntax -------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("1", 1), ("+5", 5), ("007", 7), ("65536", 65536)])
def test_integer_accepted(text, value):
    """Decimal digits with an optional leading + are integers."""
    assert parse_integer(text, 1) == value


@pytest.mark.parametrize("text", ["128.9", "1e3", "0x10", " 5", "5 ", "-1", "0", "", "٣", "5\n"])
def test_integer_rejected(text):
    """Floats, exponents, hex, spaces, signs, small values and non-ASCII digits are rejected."""
    with pytest.raises(ValueProblem, match="must be an integer >= 1"):
        parse_integer(text, 1)


@pytest.mark.parametrize("text, value", [("3", 3.0), ("0.5", 0.5), ("2.25", 2.25), ("0", 0.0)])
def test_seconds_accepted(text, value):
    """Seconds are decimal numbers without unit."""
    assert parse_seconds(text) == value


@pytest.mark.parametrize("text", ["3s", "-1", "nan", "inf", "1e3", "", " 3"])
def test_seconds_rejected(text):
    """Units, negative numbers, nan and exponents are not seconds."""
    with pytest.raises(ValueProblem, match="seconds >= 0"):
        parse_seconds(text)


def test_seconds_positive_rejects_zero():
    """A positive duration (timeouts) rejects 0."""
    with pytest.raises(ValueProblem, match="seconds > 0"):
        parse_seconds("0", positive=True)


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("on", True),
     ("false", False), ("0", False), ("no", False), ("OFF", False)],
)  # fmt: skip
def test_boolean_accepted(text, value):
    """true/false, 1/0, yes/no and on/off are booleans in any case."""
    assert parse_boolean(text) is value


@pytest.mark.parametrize("text", ["enabled", "2", "", "y"])
def test_boolean_rejected(text):
    """Other words are not booleans."""
    with pytest.raises(ValueProblem):
        parse_boolean(text)


@pytest.mark.parametrize("text, value", [("0", 0), ("8080", 8080), ("65535", 65535)])
def test_port_accepted(text, value):
    """Ports are integers 0-65535."""
    assert parse_port(text) == value


@pytest.mark.parametrize("text", ["65536", "-1", "80a", ""])
def test_port_rejected(text):
    """Ports outside 0-65535 or not integers are rejected."""
    with pytest.raises(ValueProblem, match="0-65535"):
        parse_port(text)


@pytest.mark.parametrize(
    "text, host",
    [("0.0.0.0", "0.0.0.0"), ("::", "::"), ("[::1]", "::1"), ("fe80::1", "fe80::1"),
     ("localhost", "localhost"), ("my-host.example.com", "my-host.example.com")],
)  # fmt: skip
def test_host_accepted(text, host):
    """IPv4 and IPv6 literals and host names are hosts."""
    assert parse_host(text) == host


@pytest.mark.parametrize("text", ["", "bad host", "1.2.3.999", "-x", "a_b", "::g", "x..y"])
def test_host_rejected(text):
    """Malformed addresses and names are not hosts."""
    with pytest.raises(ValueProblem):
        parse_host(text)


@pytest.mark.parametrize(
    "text, expected",
    [("0.0.0.0:8080", ("0.0.0.0", 8080)), ("[::]:9000", ("::", 9000)), ("h:0", ("h", 0))],
)
def test_host_port(text, expected):
    """HOST:PORT takes IPv4, bracketed IPv6 and host names."""
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["8080", "::1:80", "[::1]80", "h:x", ":80"])
def test_host_port_rejected(text):
    """A missing port, an unbracketed IPv6 host or a bad part is rejected."""
    with pytest.raises(ValueProblem, match="HOST:PORT"):
        parse_host_port(text)


# --- variables, precedence, problems ------------------------------------------------------


def test_defaults(load, tmp_path):
    """With no variables every field has its documented default."""
    config = load(command=(TRUE, "app.handler"))
    assert config == Config(
        function_name="app",
        function_name_source="handler",
        command=(TRUE, "app.handler"),
        handler="app.handler",
        task_root=str(tmp_path),
        environ={"PATH": "/usr/bin:/bin"},
    )


def test_every_variable(load, tmp_path):
    """Every daemon variable of §3 and §4 reaches its field."""
    env = {
        "INVOKE_API_HOST": "127.0.0.1", "PORT": "8081", "RUNTIME_API_HOST": "::1",
        "RUNTIME_API_PORT": "9002", "AMQP_URI": "amqp://broker/", "AMQP_USERNAME": "u",
        "AMQP_PASSWORD": "p", "MAX_CONCURRENCY": "4", "AWS_LAMBDA_MAX_CONCURRENCY": "8",
        "AWS_LAMBDA_FUNCTION_NAME": "fn", "AWS_LAMBDA_FUNCTION_VERSION": "7",
        "AWS_LAMBDA_FUNCTION_TIMEOUT": "2.5", "AWS_LAMBDA_FUNCTION_IDLETIMEOUT": "0",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "AWS_REGION": "eu-west-1",
        "LOG_LEVEL": "warn", "USE_STRUCTURED_LOGGING": "yes", "PRINT_REPORTS": "on",
        "ENABLE_OPENFAAS": "1", "AWS_ACCOUNT_ID": "123456789012", "LAMBDATX_QUEUE_LIMIT": "0",
        "LAMBDATX_INIT_TIMEOUT": "20", "LAMBDATX_SHUTDOWN_GRACE": "1.5",
        "LAMBDATX_MAX_REQUEST_BYTES": "10", "LAMBDATX_MAX_EVENT_BYTES": "11",
        "LAMBDATX_MAX_RESPONSE_BYTES": "12", "LAMBDATX_VALIDATE_JSON": "false",
        "LAMBDATX_PASS_ENV": "LOG_LEVEL, PORT", "_HANDLER": "h.x",
        "LAMBDA_TASK_ROOT": str(tmp_path), "LAMBDA_RUNTIME_DIR": "/rt",
    }  # fmt: skip
    config = load(env)
    assert config == Config(
        invoke_api_host="127.0.0.1", port=8081, runtime_api_host="::1", runtime_api_port=9002,
        amqp_uri="amqp://broker/", amqp_username="u", amqp_password="p", max_concurrency=4,
        runtime_max_concurrency=8, function_name="fn", function_name_source="variable",
        function_version="7", timeout=2.5, idle_timeout=0.0, memory_size=512,
        region="eu-west-1", log_level="WARNING", structured_logging=True, print_reports=True,
        enable_openfaas=True, account_id="123456789012", queue_limit=0, init_timeout=20.0,
        shutdown_grace=1.5, max_request_bytes=10, max_event_bytes=11, max_response_bytes=12,
        validate_json=False, pass_env=("LOG_LEVEL", "PORT"), handler="h.x",
        task_root=str(tmp_path), runtime_dir="/rt", command=(TRUE,),
        environ={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip
    assert config.capacity == 32


def test_empty_counts_as_unset(load):
    """An empty variable gives the default instead of an error."""
    config = load(
        {"PORT": "", "MAX_CONCURRENCY": "", "AWS_LAMBDA_FUNCTION_NAME": "", "_HANDLER": ""}
    )
    assert (config.port, config.max_concurrency, config.function_name) == (
        8080,
        1,
        "test_function",
    )


def test_option_beats_variable(load):
    """A command-line option wins over its variable, which wins over the default."""
    env = {"PORT": "1", "RUNTIME_API_PORT": "2", "MAX_CONCURRENCY": "3", "LOG_LEVEL": "error"}
    config = load(env, {"port": "10", "log-level": "debug", "no-spawn": True})
    assert (config.port, config.runtime_api_port, config.max_concurrency) == (10, 2, 3)
    assert (config.log_level, config.no_spawn) == ("DEBUG", True)


def test_rie_addresses(load):
    """The aws-lambda-rie HOST:PORT flags set both hosts and ports; specific options win."""
    config = load(
        {"PORT": "1"},
        {"runtime-interface-emulator-address": "[::]:9000",
         "runtime-api-address": "127.0.0.2:9009", "runtime-api-port": "9010"},
    )  # fmt: skip
    assert (config.invoke_api_host, config.port) == ("::", 9000)
    assert (config.runtime_api_host, config.runtime_api_port) == ("127.0.0.2", 9010)


def test_no_json_validation_flag(load):
    """--no-json-validation turns JSON validation off whatever the variable says."""
    assert (
        load({"LAMBDATX_VALIDATE_JSON": "true"}, {"no-json-validation": True}).validate_json
        is False
    )


@pytest.mark.parametrize(
    "text, level",
    [("debug", "DEBUG"), ("TRACE", "DEBUG"), ("Info", "INFO"), ("warning", "WARNING"),
     ("WARN", "WARNING"), ("error", "ERROR"), ("critical", "CRITICAL"), ("fatal", "CRITICAL"),
     ("panic", "CRITICAL")],
)  # fmt: skip
def test_log_levels(load, text, level):
    """LOG_LEVEL accepts the five names and aws-lambda-rie's aliases, in any case."""
    assert load({"LOG_LEVEL": text}).log_level == level


def test_all_problems_at_once(load):
    """Every problem is reported in one ConfigError, one line per problem, in the fixed form."""
    env = {
        "MAX_CONCURRENCY": "0", "PORT": "65536", "AWS_LAMBDA_FUNCTION_TIMEOUT": "3s",
        "USE_STRUCTURED_LOGGING": "enabled", "LOG_LEVEL": "loud", "AWS_REGION": "mars",
        "AWS_ACCOUNT_ID": "123", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128.9",
        "AWS_LAMBDA_FUNCTION_NAME": "bad name", "LAMBDA_TASK_ROOT": "/nonexistent/dir",
    }  # fmt: skip
    problems = problems_of(load, env, command=("/nonexistent/bootstrap",))
    assert (
        'lambdatx: configuration error: MAX_CONCURRENCY="0": must be an integer >= 1' in problems
    )
    names = [re.match(r'lambdatx: configuration error: ([A-Z_]+)="', p).group(1) for p in problems]
    assert sorted(names) == sorted([*env, "COMMAND"])
    assert any("DEBUG, INFO, WARNING, ERROR, CRITICAL" in p for p in problems)


def test_option_problem_names_the_option(load):
    """A bad option value is reported under the option's name."""
    assert problems_of(load, {}, {"port": "x", "runtime-api-address": "nohost"}) == [
        'lambdatx: configuration error: --runtime-api-address="nohost": '
        "must be HOST:PORT (IPv6 hosts in brackets: [::]:8080)",
        'lambdatx: configuration error: --port="x": must be a port number 0-65535',
    ]


def test_secrets_never_echoed(load):
    """AMQP_PASSWORD and the password inside AMQP_URI never appear in problems or settings."""
    problems = problems_of(load, {"AMQP_PASSWORD": "hunter2", "AMQP_URI": "amqp://u:hunter2@h:0/"})
    assert problems and not any("hunter2" in p for p in problems)
    assert any('AMQP_PASSWORD="***": AMQP_USERNAME must be set too' in p for p in problems)
    config = load({"AMQP_URI": "amqp://u:hunter2@h/?heartbeat=5", "AWS_LAMBDA_FUNCTION_NAME": "f",
                   "AMQP_USERNAME": "x", "AMQP_PASSWORD": "hunter2"})  # fmt: skip
    assert "hunter2" not in repr(effective_settings(config))
    assert effective_settings(config)["amqp_uri"] == "amqp://u:***@h/?heartbeat=5"


def test_username_alone(load):
    """AMQP_USERNAME without AMQP_PASSWORD is a problem."""
    assert problems_of(load, {"AMQP_USERNAME": "bob"}) == [
        'lambdatx: configuration error: AMQP_USERNAME="bob": AMQP_PASSWORD must be set too'
    ]


@pytest.mark.parametrize(
    "uri, masked",
    [("amqp://u:p@h/", "amqp://u:***@h/"), ("amqp://u:p/x@h:1/v", "amqp://u:***@h:1/v"),
     ("amqp://h/v?x=1", "amqp://h/v?x=1"), ("amqp://u@h/", "amqp://u@h/")],
)  # fmt: skip
def test_mask_uri(uri, masked):
    """mask_uri hides the whole password, even with an unencoded '/' in it."""
    assert mask_uri(uri) == masked


@pytest.mark.parametrize(
    "invoke_host, runtime_host, clash",
    [("0.0.0.0", "127.0.0.1", True), ("127.0.0.1", "127.0.0.1", True), ("::", "127.0.0.1", True),
     ("127.0.0.2", "127.0.0.1", False), ("0.0.0.0", "::1", False)],
)  # fmt: skip
def test_port_clash(load, invoke_host, runtime_host, clash):
    """Equal non-zero ports on overlapping hosts are a problem."""
    env = {"PORT": "9001", "INVOKE_API_HOST": invoke_host, "RUNTIME_API_HOST": runtime_host}
    if clash:
        assert problems_of(load, env)[0].startswith('lambdatx: configuration error: PORT="9001"')
    else:
        assert load(env).port == 9001


def test_port_zero_never_clashes(load):
    """Two ephemeral ports never clash."""
    assert load({"PORT": "0", "RUNTIME_API_PORT": "0"}).port == 0


def test_pass_env_allowed_list(load):
    """LAMBDATX_PASS_ENV takes removed daemon settings, but neither AMQP_* nor other names."""
    assert load({"LAMBDATX_PASS_ENV": "PORT,LAMBDATX_QUEUE_LIMIT"}).pass_env == (
        "PORT",
        "LAMBDATX_QUEUE_LIMIT",
    )
    (problem,) = problems_of(load, {"LAMBDATX_PASS_ENV": "AMQP_PASSWORD,HOME,PORT"})
    assert problem.startswith(
        'lambdatx: configuration error: LAMBDATX_PASS_ENV="AMQP_PASSWORD,HOME,PORT": '
        "cannot pass AMQP_PASSWORD, HOME"
    )


def test_amqp_uri_checked(load):
    """A malformed AMQP_URI is reported, masked, with the others."""
    (problem,) = problems_of(load, {"AMQP_URI": "http://u:pw@h/", "AWS_LAMBDA_FUNCTION_NAME": "f"})
    assert problem == (
        'lambdatx: configuration error: AMQP_URI="http://u:***@h/": '
        "must start with amqp:// or amqps://"
    )


def test_amqp_needs_a_name(load):
    """AMQP with the fallback name test_function is a start-up error."""
    (problem,) = problems_of(load, {"AMQP_URI": "amqp://h/"})
    assert problem.startswith(
        'lambdatx: configuration error: AWS_LAMBDA_FUNCTION_NAME="": must be set'
    )


# --- warnings -----------------------------------------------------------------------------


def test_warnings(load):
    """T > 900, memory outside 128-10240, init caching and AMQP ack timeouts warn."""
    env = {"AWS_LAMBDA_FUNCTION_TIMEOUT": "901", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "64",
           "AMQP_URI": "amqp://h/?bogus=1", "AWS_LAMBDA_FUNCTION_NAME": "f"}  # fmt: skip
    warnings = load(env, {"enable-init-caching": True}).warnings
    assert any("above the AWS maximum of 900" in w for w in warnings)
    assert any("outside the AWS range 128-10240" in w for w in warnings)
    assert any("--enable-init-caching" in w for w in warnings)
    assert any("consumer ack timeout" in w for w in warnings)
    assert any("bogus" in w for w in warnings)


def test_quiet_defaults(load):
    """A named function with default settings starts without warnings."""
    assert load({"AWS_LAMBDA_FUNCTION_NAME": "f"}).warnings == ()


def test_container_always_values_warn(load):
    """Container values for variables lambdatx always sets are ignored with a warning."""
    env = {"AWS_LAMBDA_RUNTIME_API": "x:1", "_INSTANCE": "3", "AWS_LAMBDA_FUNCTION_NAME": "f"}
    warnings = load(env, {"function-name": "g"}).warnings
    for name in ("AWS_LAMBDA_RUNTIME_API", "_INSTANCE", "AWS_LAMBDA_FUNCTION_NAME"):
        assert any(f"container's {name} is ignored" in w for w in warnings)


# --- handler and function name (§6) -------------------------------------------------------


@pytest.fixture
def bootstrap_dir(tmp_path):
    make_executable(tmp_path / "bootstrap")
    return tmp_path


@pytest.mark.parametrize(
    "env, overrides, command, run, handler, name, source",
    [
        ({}, {}, ["/bin/true", "app.handler"], ["/bin/true", "app.handler"], "app.handler",
         "app", "handler"),
        ({}, {}, ["true", "-m", "awslambdaric", "echo.handler"],
         ["/bin/true", "-m", "awslambdaric", "echo.handler"], "echo.handler", "echo", "handler"),
        ({"_HANDLER": "index.handler"}, {}, ["./bootstrap"], ["{cwd}/bootstrap"],
         "index.handler", "index", "handler"),
        ({}, {}, ["/bin/true", "/srv/rt.py"], ["/bin/true", "/srv/rt.py"], None,
         "test_function", "default"),
        ({}, {"handler": "f.h"}, ["./bootstrap"], ["{cwd}/bootstrap"], "f.h", "f", "handler"),
    ],
)  # fmt: skip
def test_handler_and_name_table(
    load, bootstrap_dir, env, overrides, command, run, handler, name, source
):
    """Each row of the configuration.md §6 table gives its command, handler and name."""
    env = {**env, "PATH": "/bin"}
    config = load(env, overrides, command, cwd=bootstrap_dir)
    assert config.command == tuple(a.format(cwd=bootstrap_dir) for a in run)
    assert (config.handler, config.function_name, config.function_name_source) == (
        handler, name, source,
    )  # fmt: skip


def test_handler_precedence(load):
    """--handler beats AWS_LAMBDA_FUNCTION_HANDLER, which beats _HANDLER, which beats argv."""
    env = {"AWS_LAMBDA_FUNCTION_HANDLER": "b.h", "_HANDLER": "c.h"}
    assert load(env, {"handler": "a.h"}, (TRUE, "d.h")).handler == "a.h"
    assert load(env, {}, (TRUE, "d.h")).handler == "b.h"
    assert load({"_HANDLER": "c.h"}, {}, (TRUE, "d.h")).handler == "c.h"
    assert load({}, {}, (TRUE, "-v")).handler is None
    assert load({}, {}, (TRUE,)).handler is None


def test_name_without_dot(load):
    """A handler without a dot is the whole name, and the inference is a warning."""
    config = load(command=(TRUE, "bootstrap"))
    assert config.function_name == "bootstrap"
    assert any("function name inferred from handler" in w for w in config.warnings)


def test_name_variable_wins(load):
    """AWS_LAMBDA_FUNCTION_NAME beats the handler, and --function-name beats the variable."""
    assert load({"AWS_LAMBDA_FUNCTION_NAME": "v"}, {}, (TRUE, "a.b")).function_name == "v"
    assert load({"AWS_LAMBDA_FUNCTION_NAME": "v"}, {"function-name": "o"}).function_name == "o"


def test_fallback_name_warns(load):
    """The test_function fallback is logged as a warning."""
    assert any("test_function" in w for w in load().warnings)


def test_inferred_name_invalid(load):
    """A handler whose prefix is not a valid name asks for AWS_LAMBDA_FUNCTION_NAME."""
    (problem,) = problems_of(load, {"_HANDLER": "my:app.handler"})
    assert problem.startswith('lambdatx: configuration error: _HANDLER="my:app.handler"')
    assert problem.endswith("set AWS_LAMBDA_FUNCTION_NAME")


# --- command resolution and bootstrap discovery (§6, §7) ----------------------------------


def test_relative_command_made_absolute(load, tmp_path):
    """argv[0] with a slash is resolved against the working directory."""
    (tmp_path / "bin").mkdir()
    make_executable(tmp_path / "bin" / "rt")
    assert load(command=("bin/../bin/rt", "x")).command == (str(tmp_path / "bin" / "rt"), "x")


def test_bare_name_uses_path(load, tmp_path):
    """A bare argv[0] is looked up in the runtime's PATH, skipping non-executables."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_executable(tmp_path / "a" / "rt", 0o644)
    make_executable(tmp_path / "b" / "rt")
    config = load({"PATH": f"{tmp_path}/a:{tmp_path}/b"}, command=("rt",))
    assert config.command == (str(tmp_path / "b" / "rt"),)
    (problem,) = problems_of(load, {"PATH": f"{tmp_path}/a"}, command=("rt",))
    assert problem.startswith(
        'lambdatx: configuration error: COMMAND="rt": no executable named rt'
    )


@pytest.mark.parametrize("kind, reason", [("missing", "No such file"),
                                          ("dir", "not a regular file"),
                                          ("plain", "not executable")])  # fmt: skip
def test_command_must_be_executable_file(load, tmp_path, kind, reason):
    """The command must exist, be a regular file and be executable."""
    target = tmp_path / "rt"
    if kind == "dir":
        target.mkdir()
    elif kind == "plain":
        make_executable(target, 0o644)
    if kind == "plain" and os.geteuid() == 0:
        target.chmod(0o644)  # root may execute only files with an x bit: none here
    (problem,) = problems_of(load, command=("./rt",))
    assert problem.startswith('lambdatx: configuration error: COMMAND="./rt": cannot run ')
    assert reason in problem


def test_bootstrap_in_task_root(load, tmp_path):
    """With no command, ${LAMBDA_TASK_ROOT}/bootstrap is found first and run without args."""
    root = tmp_path / "task"
    root.mkdir()
    make_executable(root / "bootstrap")
    config = load({"LAMBDA_TASK_ROOT": str(root)}, command=())
    assert (config.command, config.task_root) == ((str(root / "bootstrap"),), str(root))


def test_bootstrap_candidates_in_order(load, tmp_path, monkeypatch):
    """Non-executable candidates are skipped; the first executable one wins."""
    make_executable(tmp_path / "bootstrap", 0o644)
    (tmp_path / "opt").mkdir()
    (tmp_path / "var").mkdir()
    first = tmp_path / "opt" / "bootstrap"
    second = make_executable(tmp_path / "var" / "bootstrap")
    monkeypatch.setattr(config_module, "BOOTSTRAP_CANDIDATES", (str(first), str(second)))
    assert load(command=()).command == (str(second),)


def test_no_bootstrap(load, tmp_path, monkeypatch):
    """No command and no bootstrap is an error listing every path tried."""
    monkeypatch.setattr(
        config_module, "BOOTSTRAP_CANDIDATES", ("/nonexistent/a", "/nonexistent/b")
    )
    (problem,) = problems_of(load, command=())
    assert problem == (
        'lambdatx: configuration error: COMMAND="": no command given and no executable '
        f"bootstrap found; tried {tmp_path}/bootstrap, /nonexistent/a, /nonexistent/b"
    )


def test_no_spawn_skips_command(load):
    """LAMBDATX_NO_SPAWN needs no command or bootstrap, and ignores a given one."""
    assert load({"LAMBDATX_NO_SPAWN": "true"}, command=()).command == ()
    config = load({"LAMBDATX_NO_SPAWN": "true"}, command=("/nonexistent",))
    assert config.command == () and any("not run" in w for w in config.warnings)


def test_task_root_must_be_directory(load, tmp_path):
    """LAMBDA_TASK_ROOT naming a file is a problem."""
    (problem,) = problems_of(load, {"LAMBDA_TASK_ROOT": TRUE})
    assert (
        problem == f'lambdatx: configuration error: LAMBDA_TASK_ROOT="{TRUE}": '
        "must be an existing directory"
    )


# --- the runtime environment (§8) ---------------------------------------------------------


def make_config(**changes) -> Config:
    environ = {
        "PATH": "/bin", "LANG": "C.UTF-8", "AMQP_URI": "amqp://u:p@h/", "AMQP_PASSWORD": "p",
        "PORT": "8080", "LOG_LEVEL": "debug", "LAMBDATX_QUEUE_LIMIT": "3",
        "KUBERNETES_INIT_CONTAINER": "", "_X_AMZN_TRACE_ID": "Root=1", "WEIRD": "a=b=c",
        "AWS_DEFAULT_REGION": "eu-central-1", "_INSTANCE": "9", "AWS_LAMBDA_RUNTIME_API": "x:1",
        "PWD": "/elsewhere", "AWS_LAMBDA_FUNCTION_NAME": "ignored",
    }  # fmt: skip
    base = dict(function_name="fn", handler="fn.handler", task_root="/task", region="eu-west-1",
                memory_size=256, function_version="3", environ=environ)  # fmt: skip
    return Config(**{**base, **changes})


STREAM = re.compile(r"1970/01/02/\[3\][0-9a-f]{32}")


def test_environment_layers():
    """Defaults, then the container minus daemon settings, then the values lambdatx sets."""
    env = runtime_environment(make_config(), "127.0.0.1:4242", 2, now=86400.5)
    stream = env.pop("AWS_LAMBDA_LOG_STREAM_NAME")
    assert STREAM.fullmatch(stream)
    assert env == {
        "AWS_DEFAULT_REGION": "eu-central-1", "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn", "TZ": ":UTC", "PATH": "/bin",
        "LANG": "C.UTF-8", "WEIRD": "a=b=c", "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:4242",
        "_HANDLER": "fn.handler", "LAMBDA_TASK_ROOT": "/task", "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_VERSION": "3", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_REGION": "eu-west-1", "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_INSTANCE": "2", "PWD": "/task",
    }  # fmt: skip


def test_environment_unique_stream_names():
    """Each spawn gets its own log stream name."""
    environment = RuntimeEnvironment(make_config())
    names = {environment.for_spawn("h:1", 0)["AWS_LAMBDA_LOG_STREAM_NAME"] for _ in range(50)}
    assert len(names) == 50


def test_environment_pass_env_and_no_handler():
    """LAMBDATX_PASS_ENV keeps named settings; no handler means no _HANDLER at all."""
    config = make_config(pass_env=("LOG_LEVEL", "LAMBDATX_QUEUE_LIMIT"), handler=None)
    config.environ["_HANDLER"] = ""
    env = runtime_environment(config, "h:1", 0)
    assert (env["LOG_LEVEL"], env["LAMBDATX_QUEUE_LIMIT"]) == ("debug", "3")
    assert "_HANDLER" not in env and "PORT" not in env and "AMQP_URI" not in env


def test_environment_max_concurrency():
    """AWS_LAMBDA_MAX_CONCURRENCY passes through when set and switches the initialization type."""
    plain = runtime_environment(make_config(), "h:1", 0)
    assert "AWS_LAMBDA_MAX_CONCURRENCY" not in plain
    config = make_config(runtime_max_concurrency=4)
    config.environ["AWS_LAMBDA_MAX_CONCURRENCY"] = "4"
    env = runtime_environment(config, "h:1", 0)
    assert env["AWS_LAMBDA_MAX_CONCURRENCY"] == "4"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "lambda-managed-instances"
    empty = make_config()
    empty.environ["AWS_LAMBDA_MAX_CONCURRENCY"] = ""
    assert "AWS_LAMBDA_MAX_CONCURRENCY" not in runtime_environment(empty, "h:1", 0)


def test_environment_container_stream_name_wins():
    """A container AWS_LAMBDA_LOG_STREAM_NAME (a default-layer variable) is kept."""
    config = make_config()
    config.environ["AWS_LAMBDA_LOG_STREAM_NAME"] = "mine"
    assert runtime_environment(config, "h:1", 0)["AWS_LAMBDA_LOG_STREAM_NAME"] == "mine"


def test_environment_does_not_alias_base():
    """Changing one spawn's environment does not leak into the next."""
    environment = RuntimeEnvironment(make_config())
    environment.for_spawn("h:1", 0)["PATH"] = "changed"
    assert environment.for_spawn("h:1", 1)["PATH"] == "/bin"
