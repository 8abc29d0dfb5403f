"""The two URLs central is given: the broker's (``mqtt://host:port``) and the store's (``http://host:8428``)."""

from __future__ import annotations

import urllib.parse

BROKER_SCHEMES = {"mqtt": (1883, False), "tcp": (1883, False), "mqtts": (8883, True), "ssl": (8883, True)}


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` (or ``mqtts://`` for TLS, or bare ``host[:port]``) -> (host, port, tls)."""
    text = url if "://" in url else f"mqtt://{url}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in BROKER_SCHEMES:
        raise ValueError(f"{url!r}: scheme must be one of {', '.join(s + '://' for s in BROKER_SCHEMES)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{url!r}: expected mqtt://host:port with no path, query or credentials")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    default_port, tls = BROKER_SCHEMES[parts.scheme]
    return parts.hostname, port or default_port, tls


def redacted(url: str) -> str:
    """``url`` as a message may show it: a password in it (``http://user:secret@host``) becomes ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "<unparsable URL>"
    if not has_password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _http_url(url: str, schemes: str) -> urllib.parse.SplitResult:
    """The parts of an ``http(s)://host[:port]...`` URL; ValueError saying what is wrong (``schemes``: what the
    message asks for). A message never shows a password of the URL."""
    shown = redacted(url)
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unbalanced '[' of an IPv6 host
        raise ValueError(f"{shown!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{shown!r}: {schemes}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{shown!r}: the port must be a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError(f"{shown!r}: no host name")
    return parts


def check_store_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` of the store's InfluxDB-compatible API; returned without a trailing /.
    No credentials in it: they would show in logs and status lines (use ``store.token_file``)."""
    parts = _http_url(url, "the store URL must start with http:// or https://")
    if parts.username or parts.password:
        raise ValueError(f"{redacted(url)!r}: no credentials in the URL (they would be logged): put the store's "
                         "token in store.token_file (--token-file)")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query string or fragment, please")
    return url.rstrip("/")


def check_push_url(url: str) -> str:
    """The warehouse's ``http(s)://host[:port]/path[?query]`` (central.yaml ``push.url``): returned as given."""
    parts = _http_url(url, "the push URL must start with https:// (or http:// on a trusted network)")
    if parts.username or parts.password:
        raise ValueError(f"{redacted(url)!r}: no credentials in the URL: deliveries are signed with "
                         "push.secret_file")
    if parts.fragment:
        raise ValueError(f"{url!r}: no fragment, please")
    return url
