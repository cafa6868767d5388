"""
``AMQP_URI``: parsing, credentials and a display form with the password masked (amqp-rpc.md §1).

Syntax: ``amqp://[user[:password]@]host[:port][/vhost][?query]`` or ``amqps://…`` (TLS). The user
info and the vhost are percent-decoded (``%2F`` is the vhost ``/``), the host may be a name, an
IPv4 address or a bracketed IPv6 address. Known query parameters are ``heartbeat``,
``connection_attempts``, ``retry_delay``, ``connection_timeout`` and, for ``amqps``, the TLS
parameters; a malformed value of one of them is an error, any other parameter is ignored with a
warning (URIs written for other clients keep working).

txAMQP's own ``AMQEndpoint.from_uri`` gets most of this wrong (``../shared/NOTES.md``), hence this
module. It is shared by the daemon (``lambdatx.amqp_rpc``) and the gateway; it imports nothing
from ``lambdatx.config`` so that ``config`` can call it while validating.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
DEFAULT_HEARTBEAT = 60
DEFAULT_RETRY_DELAY = 2.0
DEFAULT_CONNECTION_TIMEOUT_MS = 30000.0
#: RabbitMQ's default user, accepted only from localhost.
GUEST = ("guest", "guest")

_INTEGER = re.compile(r"\+?[0-9]+")
_DECIMAL = re.compile(r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)")
# Host names as resolvers take them; underscores appear in container names.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_TLS_PARAMETERS = ("cacertfile", "certfile", "keyfile", "server_name_indication", "verify")
_VERIFY = {"verify_peer": True, "verify_none": False}
_MASK = "***"


class AmqpUriError(ValueError):
    """``AMQP_URI`` is unusable; the message says why and never contains the password."""


@dataclass(frozen=True)
class AmqpUri:
    """A parsed ``AMQP_URI``; ``username``/``password`` are None when the URI has no user info."""

    tls: bool
    host: str
    port: int
    vhost: str = "/"
    username: str | None = None
    password: str | None = None
    heartbeat: int = DEFAULT_HEARTBEAT
    #: Consecutive failed attempts before giving up; 0 = never.
    connection_attempts: int = 0
    #: Seconds: the first delay between attempts.
    retry_delay: float = DEFAULT_RETRY_DELAY
    #: Seconds for TCP connect + AMQP handshake (the URI gives milliseconds).
    connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT_MS / 1000
    cacertfile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    server_name_indication: str | None = None
    verify: bool = True
    #: Start-up warnings: ignored parameters.
    warnings: tuple[str, ...] = ()

    @property
    def scheme(self) -> str:
        return "amqps" if self.tls else "amqp"

    def display(self) -> str:
        """The URI for logs: the password shown as ``***``, parameters left out."""
        user = ""
        if self.username is not None:
            user = quote(self.username, safe="")
            if self.password is not None:
                user += ":" + _MASK
            user += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{user}{host}:{self.port}/{quote(self.vhost, safe='')}"

    def credentials(
        self, username: str | None = None, password: str | None = None
    ) -> tuple[str, str]:
        """
        Login and password: the URI's user info, else ``AMQP_USERNAME``/``AMQP_PASSWORD`` (passed
        here, both or neither), else ``guest``/``guest``.
        """
        if self.username is not None:
            return self.username, self.password or ""
        if username is not None and password is not None:
            return username, password
        return GUEST


def parse_amqp_uri(text: str) -> AmqpUri:
    """Parse ``AMQP_URI``; raises :class:`AmqpUriError` with the reason."""
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise AmqpUriError("must start with amqp:// or amqps://")
    rest, _, query = rest.partition("?")
    if "#" in rest or "#" in query:
        raise AmqpUriError("must not contain a fragment (#); percent-encode # as %23")
    authority, slash, path = rest.partition("/")
    if "@" in path:
        raise AmqpUriError("the user info must be percent-encoded (/ as %2F, @ as %40)")
    userinfo, at, hostport = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = _decode(user, "the user name")
        password = _decode(secret, "the password") if colon else None
    host, port = _host_port(hostport, DEFAULT_PORTS[scheme])
    vhost = _decode(path, "the vhost") if path else "/"
    settings, warnings = _parameters(query, tls=scheme == "amqps")
    return AmqpUri(
        tls=scheme == "amqps",
        host=host,
        port=port,
        vhost=vhost,
        username=username,
        password=password,
        warnings=tuple(warnings),
        **settings,
    )


def uri_warnings(text: str, env_credentials: bool) -> list[str]:
    """
    Start-up warnings for a valid ``AMQP_URI``: ignored parameters, and user info that wins
    over ``AMQP_USERNAME``/``AMQP_PASSWORD`` (``env_credentials``: both variables are set).
    """
    uri = parse_amqp_uri(text)
    warnings = list(uri.warnings)
    if env_credentials and uri.username is not None:
        warnings.append("AMQP_URI has user info: AMQP_USERNAME and AMQP_PASSWORD are ignored")
    return warnings


def _decode(text: str, what: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise AmqpUriError(f"{what} is not valid percent-encoded UTF-8") from None


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AmqpUriError("an IPv6 host must be enclosed in [ ]")
        host, after = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AmqpUriError(f"invalid IPv6 address [{host}]") from None
        if after and not after.startswith(":"):
            raise AmqpUriError("expected :port after the IPv6 host")
        port_text = after[1:]
    else:
        host, colon, port_text = text.partition(":")
        if ":" in port_text:
            raise AmqpUriError("an IPv6 host must be enclosed in [ ]")
        if not host:
            raise AmqpUriError("the host is missing")
        _check_host(host)
    if not port_text:
        return host, default_port
    if not _INTEGER.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise AmqpUriError(f'port "{port_text}" must be an integer 1-65535')
    return host, int(port_text)


def _check_host(host: str) -> None:
    labels = host.rstrip(".").split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
            return
        except ValueError:
            raise AmqpUriError(f'invalid IPv4 address "{host}"') from None
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise AmqpUriError(f'invalid host "{host}"')


def _parameters(query: str, tls: bool) -> tuple[dict[str, Any], list[str]]:
    settings: dict[str, Any] = {}
    warnings: list[str] = []
    for item in filter(None, query.split("&")):
        raw_name, _, raw_value = item.partition("=")
        name, value = _decode(raw_name, "a parameter name"), _decode(raw_value, "a parameter")
        if name in _TLS_PARAMETERS and not tls:
            warnings.append(f"AMQP_URI parameter {name} is ignored: it applies to amqps:// only")
        elif name in _TLS_PARAMETERS:
            if name == "verify":
                if value not in _VERIFY:
                    raise AmqpUriError("verify must be verify_peer or verify_none")
                settings["verify"] = _VERIFY[value]
            elif not value:
                raise AmqpUriError(f"{name} must not be empty")
            else:
                settings[name] = value
        elif name in ("heartbeat", "connection_attempts"):
            if not _INTEGER.fullmatch(value):
                raise AmqpUriError(f'{name}="{value}" must be an integer >= 0')
            settings[name] = int(value)
        elif name == "retry_delay":
            settings[name] = _positive(name, value, "seconds")
        elif name == "connection_timeout":
            settings[name] = _positive(name, value, "milliseconds") / 1000
        else:
            warnings.append(f"AMQP_URI parameter {name} is not used by lambdatx and is ignored")
    return settings, warnings


def _positive(name: str, value: str, unit: str) -> float:
    if not _DECIMAL.fullmatch(value) or float(value) <= 0:
        raise AmqpUriError(f'{name}="{value}" must be a number of {unit} > 0')
    return float(value)
