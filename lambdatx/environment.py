"""
The environment given to a spawned runtime (spec/configuration.md §8).

Three layers, later ones winning: defaults, the container's own environment minus the daemon's
settings and secrets, and the values lambdatx must set. Everything that does not change between
spawns is computed once per :class:`Config`; a spawn only adds the Runtime API address, the slot
number and a fresh log stream name.
"""

from __future__ import annotations

import os
import time

from lambdatx.config import Config, is_removed_variable

#: Never exported by lambdatx: the runtime sets it for each invocation.
_NEVER = frozenset({"_X_AMZN_TRACE_ID"})


class RuntimeEnvironment:
    """The static part of a runtime's environment, built once from a :class:`Config`."""

    def __init__(self, config: Config):
        self.config = config
        defaults = {
            "AWS_DEFAULT_REGION": config.region,
            "LAMBDA_RUNTIME_DIR": config.runtime_dir,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.function_name}",
            "TZ": ":UTC",
        }
        kept = {name for name in config.pass_env if not name.startswith("AMQP_")}
        container = {
            name: value
            for name, value in config.environ.items()
            if name not in _NEVER and (name in kept or not is_removed_variable(name))
        }
        always = {
            "LAMBDA_TASK_ROOT": config.task_root,
            "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": config.function_version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_size),
            "AWS_REGION": config.region,
            "AWS_LAMBDA_INITIALIZATION_TYPE": (
                "on-demand"
                if config.runtime_max_concurrency is None
                else "lambda-managed-instances"
            ),
            "PWD": config.task_root,
        }
        base = {**defaults, **container, **always}
        # Passed only when set: an empty value means classic mode, for the runtime too.
        if config.runtime_max_concurrency is None:
            base.pop("AWS_LAMBDA_MAX_CONCURRENCY", None)
        else:
            base["AWS_LAMBDA_MAX_CONCURRENCY"] = str(config.runtime_max_concurrency)
        if config.handler is not None:
            base["_HANDLER"] = config.handler
        else:
            base.pop("_HANDLER", None)
        #: Whether the container chose its own log stream name (it then wins, layer 2).
        self._stream_from_container = "AWS_LAMBDA_LOG_STREAM_NAME" in container
        self._stream_prefix = f"[{config.function_version}]"
        self._base = base

    def for_spawn(self, api_address: str, slot: int, now: float | None = None) -> dict[str, str]:
        """
        The environment of one new instance: ``api_address`` is the advertised ``host:port``
        of its Runtime API listener, ``slot`` its ``_INSTANCE`` number, ``now`` the spawn time.
        """
        env = dict(self._base)
        if not self._stream_from_container:
            day = time.strftime("%Y/%m/%d", time.gmtime(time.time() if now is None else now))
            stream = f"{day}/{self._stream_prefix}{os.urandom(16).hex()}"
            env["AWS_LAMBDA_LOG_STREAM_NAME"] = stream
        env["AWS_LAMBDA_RUNTIME_API"] = api_address
        env["_INSTANCE"] = str(slot)
        return env


_cached: RuntimeEnvironment | None = None


def runtime_environment(
    config: Config, api_address: str, slot: int, now: float | None = None
) -> dict[str, str]:
    """The environment of a runtime spawned for ``config`` (see :class:`RuntimeEnvironment`)."""
    global _cached
    cached = _cached
    if cached is None or cached.config is not config:
        cached = _cached = RuntimeEnvironment(config)
    return cached.for_spawn(api_address, slot, now)
