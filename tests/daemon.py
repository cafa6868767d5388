"""Run the whole daemon in-process (make_service on port 0) and call it with real clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
from twisted.internet import reactor, threads

from lambdatx.config import Config
from lambdatx.service import make_service

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
RT = HERE / "bootstraps" / "rt.py"
BASH_ECHO = EXAMPLES / "echo" / "custom-runtime"
PY_ECHO = EXAMPLES / "echo" / "python"


def config(**overrides) -> Config:
    """A test Config: loopback listeners on port 0, the test runtime, the test's environment."""
    base = Config(
        invoke_api_host="127.0.0.1",
        port=0,
        runtime_api_port=0,
        function_name="echo",
        function_name_source="variable",
        command=(sys.executable, str(RT)),
        task_root=str(HERE),
        environ=dict(os.environ),
        idle_timeout=0,
    )
    return replace(base, **overrides)


def bash_echo(**overrides) -> Config:
    settings = dict(
        command=(str(BASH_ECHO / "bootstrap"),), handler="function.handler", task_root=str(BASH_ECHO)
    )
    return config(**{**settings, **overrides})


def python_echo(**overrides) -> Config:
    settings = dict(
        command=(sys.executable, "-m", "awslambdaric", "echo.handler"),
        handler="echo.handler",
        task_root=str(PY_ECHO),
    )
    return config(**{**settings, **overrides})


class Daemon:
    def __init__(self, service):
        self.service = service
        self.port = service.invoke_port.getHost().port
        self.runtime_port = service.runtime_port.getHost().port
        self.url = f"http://127.0.0.1:{self.port}"

    def invoke_url(self, name: str = "function") -> str:
        return f"{self.url}/2015-03-31/functions/{name}/invocations"

    async def stop(self) -> None:
        await self.service.stopService()


async def start(cfg: Config, **parts) -> Daemon:
    """The daemon, listening; ``parts`` replace its ``stdout``/``stderr`` sinks."""
    service = make_service(cfg, reactor, **parts)
    service.startService()
    await service.when_ready()
    return Daemon(service)


def _curl(args: list[str]) -> tuple[int, dict[str, str], bytes]:
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "60", *args], capture_output=True, timeout=90
    )
    assert out.returncode == 0, out.stderr
    raw = out.stdout
    # Skip "100 Continue" interim answers.
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    """Run curl in a thread (the reactor keeps serving); returns status, headers, body."""
    return await threads.deferToThread(_curl, list(args))


async def invoke_json(daemon: Daemon, event, name: str = "function", *extra: str):
    status, headers, body = await curl("-XPOST", daemon.invoke_url(name), "-d", json.dumps(event), *extra)
    return status, headers, json.loads(body) if body else None


def boto3_client(daemon: Daemon, read_timeout: int = 30):
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "lambda",
        endpoint_url=daemon.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=BotoConfig(read_timeout=read_timeout, retries={"max_attempts": 0}),
    )


async def in_thread(f, *args, **kwargs):
    return await threads.deferToThread(f, *args, **kwargs)


# --- processes (blocking: call these through in_thread) -------------------------------------


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    return wait_for(lambda: not alive(pid), timeout)
