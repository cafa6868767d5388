"""AMQP_URI parsing (amqp-rpc.md §1): pure unit tests."""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest

from lambdatx.amqp_uri import AmqpUri, AmqpUriError, parse_amqp_uri, uri_warnings


def test_defaults_for_a_bare_host():
    """A host alone gives port 5672, vhost /, no user info and the documented defaults."""
    uri = parse_amqp_uri("amqp://rabbit")
    assert uri == AmqpUri(tls=False, host="rabbit", port=5672)
    assert (uri.heartbeat, uri.connection_attempts, uri.retry_delay) == (60, 0, 2.0)
    assert uri.connection_timeout == 30.0
    assert uri.credentials() == ("guest", "guest")


def test_amqps_defaults_to_port_5671_and_verification():
    """amqps means TLS on port 5671 with the server certificate verified."""
    uri = parse_amqp_uri("amqps://broker.example.com/")
    assert (uri.tls, uri.port, uri.verify, uri.vhost) == (True, 5671, True, "/")


@pytest.mark.parametrize(
    "text, user, password, vhost",
    [
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "guest", "guest", "/"),
        ("amqp://u%40x:p%3Aw%2Fd%25@h/v", "u@x", "p:w/d%", "v"),
        ("amqp://user@h", "user", None, "/"),
        ("amqp://h/", None, None, "/"),
        ("amqp://h/%2Fprod", None, None, "/prod"),
        ("amqp://h/caf%C3%A9", None, None, "café"),
    ],
)
def test_user_info_and_vhost_are_percent_decoded(text, user, password, vhost):
    """User, password and vhost are percent-decoded; an empty path is the vhost /."""
    uri = parse_amqp_uri(text)
    assert (uri.username, uri.password, uri.vhost) == (user, password, vhost)


def test_percent_encoding_round_trips_for_arbitrary_text():
    """Any user, password and vhost survive percent-encoding and parsing unchanged."""
    rng = random.Random(4)
    alphabet = "azAZ09:/@%?#&= é€\u00ff-_."
    for _ in range(300):
        user, password, vhost = (
            "".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(3)
        )
        text = (
            f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@h/{quote(vhost, safe='')}"
        )
        uri = parse_amqp_uri(text)
        assert (uri.username, uri.password, uri.vhost) == (user, password, vhost)


@pytest.mark.parametrize(
    "text, host, port",
    [
        ("amqp://[::1]:5673/", "::1", 5673),
        ("amqp://[fe80::1]", "fe80::1", 5672),
        ("amqps://10.0.0.7", "10.0.0.7", 5671),
        ("AMQP://rabbit_mq.local:15672", "rabbit_mq.local", 15672),
    ],
)
def test_hosts(text, host, port):
    """Names, IPv4 and bracketed IPv6 hosts are accepted, with or without a port."""
    uri = parse_amqp_uri(text)
    assert (uri.host, uri.port) == (host, port)


def test_query_parameters():
    """The known parameters are parsed; connection_timeout is in milliseconds."""
    uri = parse_amqp_uri(
        "amqp://h/?heartbeat=0&connection_attempts=20&retry_delay=0.5&connection_timeout=1500"
    )
    assert (uri.heartbeat, uri.connection_attempts, uri.retry_delay) == (0, 20, 0.5)
    assert uri.connection_timeout == 1.5
    assert uri.warnings == ()


def test_tls_parameters():
    """amqps takes the CA, certificate, key, SNI and verify parameters."""
    uri = parse_amqp_uri(
        "amqps://h/?cacertfile=/ca.pem&certfile=/c.pem&keyfile=/k.pem"
        "&server_name_indication=rabbit&verify=verify_none"
    )
    assert (uri.cacertfile, uri.certfile, uri.keyfile) == ("/ca.pem", "/c.pem", "/k.pem")
    assert (uri.server_name_indication, uri.verify) == ("rabbit", False)


def test_unknown_and_misplaced_parameters_warn():
    """Unknown parameters, and TLS parameters on amqp://, are ignored with a warning."""
    uri = parse_amqp_uri("amqp://h/?channel_max=10&verify=verify_none&heartbeat=5")
    assert uri.heartbeat == 5 and uri.verify is True
    assert len(uri.warnings) == 2
    assert "channel_max" in uri.warnings[0] and "amqps:// only" in uri.warnings[1]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("http://h", "must start with amqp:// or amqps://"),
        ("h:5672", "must start with amqp:// or amqps://"),
        ("amqp://", "the host is missing"),
        ("amqp://u:p@:5672", "the host is missing"),
        ("amqp://h:0", "port"),
        ("amqp://h:65536", "port"),
        ("amqp://h:x", "port"),
        ("amqp://::1", "enclosed in [ ]"),
        ("amqp://[::g]", "invalid IPv6"),
        ("amqp://999.1.1.1", "invalid IPv4"),
        ("amqp://bad host", "invalid host"),
        ("amqp://h/?heartbeat=-1", "heartbeat"),
        ("amqp://h/?heartbeat=1.5", "heartbeat"),
        ("amqp://h/?connection_attempts=x", "connection_attempts"),
        ("amqp://h/?retry_delay=0", "retry_delay"),
        ("amqp://h/?retry_delay=2s", "retry_delay"),
        ("amqp://h/?connection_timeout=nan", "connection_timeout"),
        ("amqps://h/?verify=yes", "verify"),
        ("amqps://h/?cacertfile=", "cacertfile"),
        ("amqp://u:p/x@h", "percent-encoded"),
        ("amqp://h/v#frag", "fragment"),
        ("amqp://u:%FF@h", "the password"),
    ],
)
def test_malformed_uris_are_errors(text, reason):
    """A malformed URI or known parameter is an error that says why."""
    with pytest.raises(AmqpUriError) as info:
        parse_amqp_uri(text)
    assert reason in str(info.value)


def test_errors_never_contain_the_password():
    """No error message repeats the password."""
    for text in ("amqp://u:s3cret@h:x", "amqp://u:s3cret@h/?heartbeat=no", "amqp://u:s3cret@"):
        with pytest.raises(AmqpUriError) as info:
            parse_amqp_uri(text)
        assert "s3cret" not in str(info.value)


def test_display_masks_the_password():
    """The display form shows the user but never the password."""
    uri = parse_amqp_uri("amqp://bob:s3cr%40t@[::1]:5673/%2F?heartbeat=3")
    assert uri.display() == "amqp://bob:***@[::1]:5673/%2F"
    assert parse_amqp_uri("amqps://h/vh").display() == "amqps://h:5671/vh"


def test_credentials_precedence():
    """The URI's user info wins, then AMQP_USERNAME/AMQP_PASSWORD, then guest/guest."""
    assert parse_amqp_uri("amqp://a:b@h").credentials("x", "y") == ("a", "b")
    assert parse_amqp_uri("amqp://a@h").credentials("x", "y") == ("a", "")
    assert parse_amqp_uri("amqp://h").credentials("x", "y") == ("x", "y")
    assert parse_amqp_uri("amqp://h").credentials() == ("guest", "guest")


def test_uri_warnings_mention_ignored_variables():
    """User info in the URI together with the credential variables is warned about."""
    assert uri_warnings("amqp://a:b@h", env_credentials=True) == [
        "AMQP_URI has user info: AMQP_USERNAME and AMQP_PASSWORD are ignored"
    ]
    assert uri_warnings("amqp://h?x=1", env_credentials=True)[0].startswith("AMQP_URI parameter x")
    assert uri_warnings("amqp://a:b@h", env_credentials=False) == []
