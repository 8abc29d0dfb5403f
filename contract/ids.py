"""Ids: school, gateway and device ids end up in MQTT topic levels and series labels."""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import Field

ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Ids end up in MQTT topics and series labels: lower-case letters, digits, '-' and '_'."""

ID_RE: Final = re.compile(ID_PATTERN)

Id = Annotated[str, Field(pattern=ID_PATTERN)]
"""A school, gateway or device id (pydantic type)."""


def is_id(text: str) -> bool:
    """True when ``text`` is a valid id."""
    return ID_RE.fullmatch(text) is not None


COMMAND_NAME_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,30}(\.[a-z][a-z0-9_-]{0,30}){0,4}$"
"""Command names: dotted lower-case words, e.g. ``ping``, ``device.command``, ``access.allowlist.set``
(here, not in :mod:`edugate.contract.commands`, so that registering a command needs no cryptography)."""
