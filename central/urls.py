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


def check_store_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` of the store's InfluxDB-compatible API; returned without a trailing /."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the store URL must start with http:// or https://")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query string or fragment, please")
    return url.rstrip("/")
