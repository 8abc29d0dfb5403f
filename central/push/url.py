"""The warehouse's URL (central.yaml ``push.url``), checked when the config is read."""

from __future__ import annotations

import urllib.parse


def check_push_url(url: str) -> str:
    """``http(s)://host[:port]/path[?query]``: returned as given; ValueError saying what is wrong otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r}: the push URL must start with https:// (or http:// on a trusted network)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{url!r}: the port must be a number between 1 and 65535") from None
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host name")
    if parts.username or parts.password:
        raise ValueError(f"{url!r}: no credentials in the URL: deliveries are signed with push.secret_file")
    if parts.fragment:
        raise ValueError(f"{url!r}: no fragment, please")
    return url
