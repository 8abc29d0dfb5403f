"""RS-232 display control profiles: a device family's commands, expected replies and parsing rules, in YAML.

A profile (``drivers/display_serial/profiles/<name>.yaml``, or an absolute path) says how to talk to one
family of panels or projectors over a serial line, as the Modbus device profiles do for registers:

- ``baudrate`` (8N1 unless ``parity``/``stopbits`` say otherwise) and ``reply_end``, the character(s) that
  end one reply (``x`` for LG, the ``:`` prompt for Epson, ``#`` for BenQ);
- ``poll``: queries sent every poll, each with the bytes to ``send``, the ``reply`` regex (its group
  ``value`` is the value), how to read it (``type``: str, int, float, hex; or a ``map`` of raw values),
  and optionally ``on_values``, which makes it the power query (``power_on`` in telemetry);
- ``identity``: queries asked once per connection (model, serial, firmware) -> a ``device_info`` event;
- ``commands``: command name -> {argument value -> bytes to send, ``ok``: regex of the success reply};
- ``error``: a regex of the reply that means the device refused.

``{set_id}`` in any text is replaced by the device's ``set_id`` (LG panels: 01 unless changed).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edugate.contract.records import VALUE_NAME_PATTERN

BUILTIN_PROFILES = Path(__file__).resolve().parent / "profiles"
Raw = int | float | str | bool


def _regex(value: str) -> str:
    try:
        re.compile(value.replace("{set_id}", "01"))
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
    return value


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", pattern=r"^$|" + VALUE_NAME_PATTERN)
    send: str = Field(min_length=1, max_length=128)
    reply: str = Field(min_length=1, description="Regex of the answer; its group 'value' is the value.")
    type: Literal["str", "int", "float", "hex"] = "str"
    map: dict[str, Raw] | None = None
    on_values: list[Raw] | None = None

    _check_reply = field_validator("reply")(classmethod(lambda cls, v: _regex(v)))

    @model_validator(mode="after")
    def _has_value_group(self) -> Query:
        if "(?P<value>" not in self.reply:
            raise ValueError(f"reply {self.reply!r} needs a group (?P<value>...) for the value")
        return self


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    make: str = ""
    description: str = ""
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    reply_end: str = Field(min_length=1, max_length=4)
    error: str | None = None
    poll: list[Query] = Field(min_length=1)
    identity: dict[str, Query] = Field(default_factory=dict)
    commands: dict[str, dict[str, str]] = Field(default_factory=dict)

    _check_error = field_validator("error")(classmethod(lambda cls, v: v if v is None else _regex(v)))

    @model_validator(mode="after")
    def _check(self) -> Profile:
        names = [q.name for q in self.poll]
        if "" in names:
            raise ValueError("every poll query needs a name (the telemetry value it gives)")
        if len(names) != len(set(names)):
            raise ValueError("poll query names must be unique")
        for name, values in self.commands.items():
            if "ok" not in values or len(values) < 2:
                raise ValueError(f"command {name!r} needs 'ok' (the success reply's regex) and at least one value")
            _regex(values["ok"])
        return self


def find_profile(ref: str) -> Path:
    if os.path.isabs(ref):
        return Path(ref)
    path = BUILTIN_PROFILES / f"{ref}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in BUILTIN_PROFILES.glob("*.yaml")))
        raise ValueError(f"unknown display profile {ref!r} (known: {known}; or an absolute path to a .yaml)")
    return path


@lru_cache(maxsize=32)
def _load(path: Path, _mtime_ns: int) -> Profile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"display profile {path} cannot be read: {exc}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"display profile {path} is invalid: {where}: {msg}{more}") from None


def load_profile(ref: str) -> Profile:
    path = find_profile(ref)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ValueError(f"display profile {path} cannot be read: {exc.strerror}") from None
    return _load(path.resolve(), mtime)


def parse_value(query: Query, raw: str) -> Raw:
    """The raw text of the ``value`` group -> the telemetry value (``map``, else ``type``)."""
    if query.map is not None:
        for key, value in query.map.items():
            if key.lower() == raw.lower():
                return value
        raise ValueError(f"{query.name}: {raw!r} is not one of {', '.join(query.map)}")
    try:
        if query.type == "int":
            return int(raw)
        if query.type == "float":
            return float(raw)
        if query.type == "hex":
            return int(raw, 16)
    except ValueError:
        raise ValueError(f"{query.name}: {raw!r} is not a {query.type} number") from None
    return raw
