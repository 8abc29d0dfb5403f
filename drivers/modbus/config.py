"""Configuration of Modbus devices: register maps, device profiles, and the device entry.

A *profile* is a YAML file describing one sensor model's register map (see
``drivers/modbus/profiles/*.yaml`` and ``docs/drivers/modbus.md``). A device entry in
the gateway config names a profile, or lists its registers inline, and says
how to reach the device. Every check happens here, at load time, so that
``edugate check`` reports a bad map with its path, e.g.
``devices[0].registers[3].address``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from edugate.drivers.base import DeviceConfig
from edugate.drivers.modbus.codec import WIDTH, Function, Point, RegisterType, WordOrder

BUILTIN_PROFILES = Path(__file__).resolve().parent / "profiles"
PROFILE_PATH_ENV = "EDUGATE_PROFILE_PATH"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
PROFILE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _problem(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("modbus_config", message), loc=loc, input=value)


def _raise(title: str, problems: list[InitErrorDetails]) -> None:
    """Raise the problems as one ValidationError; pydantic keeps each one's own path."""
    if problems:
        raise ValidationError.from_exception_data(title, problems)


class SimHint(_Strict):
    """Where the simulator keeps this value (engineering units). Drivers ignore it."""

    min: float
    max: float
    start: float | None = Field(None, description="Initial value; the middle of min..max if not given.")
    step: float | None = Field(None, ge=0, description="Random-walk step per update; 0.5 % of the range if not given.")
    daily: float = Field(0.0, ge=0, description="Amplitude of the daily sinusoid.")
    kind: Literal["walk", "counter"] = Field("walk", description="'walk': wanders within min..max; "
                                             "'counter': only grows, by about 'step' per update (energy).")

    @model_validator(mode="after")
    def _ordered(self) -> SimHint:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


class Register(_Strict):
    """One value of a device's register map."""

    name: str = Field(description="Value name in readings, e.g. 'temperature'.",
                      json_schema_extra={"pattern": NAME_PATTERN})
    address: int = Field(ge=0, le=65535, description="Register address as sent on the wire (0-based).")
    function: Function = Field("holding", description="'holding' (function 3) or 'input' (function 4).")
    type: RegisterType = Field("uint16", description="int16, uint16 (1 register); int32, uint32, float32 (2).")
    word_order: WordOrder = Field("big", description="32-bit types: 'big' = high word first (ABCD), "
                                  "'little' = low word first (CDAB).")
    scale: float = Field(1.0, allow_inf_nan=False, description="value = raw * scale + offset")
    offset: float = Field(0.0, allow_inf_nan=False)
    decimals: int | None = Field(None, ge=0, le=9, description="Round to this many places "
                                 "(default: as many as scale and offset have).")
    unit: str | None = Field(None, max_length=16, description="Unit of the scaled value, e.g. '°C', 'ppm'.")
    description: str | None = Field(None, max_length=200)
    sim: SimHint | None = Field(None, description="Simulator only: realistic range of the value.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(NAME_PATTERN, v):
            raise ValueError(f"{v!r} is not a valid register name: use lower-case letters, digits and '_', "
                             "starting with a letter (at most 64)")
        return v

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be 0")
        return v

    @model_validator(mode="after")
    def _fits(self) -> Register:
        width = WIDTH[self.type]
        if self.address + width - 1 > 65535:
            _raise("Register", [_problem(("address",), f"{self.type} needs {width} registers from {self.address}, "
                                         "past the last address 65535", self.address)])
        return self

    def point(self) -> Point:
        return Point(self.name, self.address, self.type, self.function, self.word_order, self.scale, self.offset,
                     self.decimals)


class RegisterOverride(_Strict):
    """Per-device changes to one register of a profile (calibration, units, or leaving it out)."""

    scale: float | None = Field(None, allow_inf_nan=False)
    offset: float | None = Field(None, allow_inf_nan=False, description="E.g. -0.4 to correct a sensor that "
                                 "reads 0.4 °C high.")
    decimals: int | None = Field(None, ge=0, le=9)
    unit: str | None = Field(None, max_length=16)
    enabled: bool = Field(True, description="false = do not read this register.")

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float | None) -> float | None:
        if v == 0:
            raise ValueError("scale must not be 0")
        return v


def register_map_problems(registers: Sequence[Register],
                          loc: tuple[str | int, ...] = ("registers",)) -> list[InitErrorDetails]:
    """Duplicate names, and registers whose addresses overlap (same function), each at its own path."""
    problems: list[InitErrorDetails] = []
    names: dict[str, int] = {}
    for i, reg in enumerate(registers):
        if reg.name in names:
            problems.append(_problem((*loc, i, "name"), f"duplicate register name {reg.name!r} "
                                     f"(first used by {loc[-1]}[{names[reg.name]}])", reg.name))
        else:
            names[reg.name] = i
    taken: dict[tuple[str, int], int] = {}
    for i, reg in enumerate(registers):
        for addr in range(reg.address, reg.address + WIDTH[reg.type]):
            first = taken.get((reg.function, addr))
            if first is not None:
                other = registers[first]
                problems.append(_problem((*loc, i, "address"), f"{reg.name!r} ({reg.type} at {reg.address}) overlaps "
                                         f"{other.name!r} ({other.type} at {other.address}, {loc[-1]}[{first}]) "
                                         f"in the {reg.function} registers", reg.address))
                break
        else:
            for addr in range(reg.address, reg.address + WIDTH[reg.type]):
                taken[(reg.function, addr)] = i
    return problems


class Profile(_Strict):
    """A device profile file: the register map of one sensor model."""

    description: str = Field(max_length=300, description="What device this is, e.g. 'RS485 CO2/T/RH transmitter'.")
    models: list[str] = Field(default_factory=list, description="Device models known to use this map.")
    max_gap: int = Field(0, ge=0, le=124, description="Default for the device's max_gap (see there).")
    registers: list[Register] = Field(min_length=1)

    @model_validator(mode="after")
    def _map(self) -> Profile:
        _raise("Profile", register_map_problems(self.registers))
        return self


# ---------------------------------------------------------------- finding and loading profiles


def profile_dirs() -> list[Path]:
    """Where profile names are looked up: ``$EDUGATE_PROFILE_PATH`` (':'-separated) first, then the built-ins."""
    extra = [Path(p) for p in os.environ.get(PROFILE_PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, BUILTIN_PROFILES]


def available_profiles() -> list[str]:
    names = {p.stem for d in profile_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def find_profile(ref: str) -> Path:
    """The file of a profile given by name (``lab-th``) or absolute path; ValueError says what exists."""
    if "/" in ref or ref.endswith((".yaml", ".yml")):
        path = Path(ref)
        if not path.is_absolute():
            raise ValueError(f"profile {ref!r}: give a profile name or an absolute path to a .yaml file")
        if not path.is_file():
            raise ValueError(f"profile file {ref} does not exist")
        return path
    for d in profile_dirs():
        path = d / f"{ref}.yaml"
        if path.is_file():
            return path
    known = ", ".join(available_profiles()) or "none"
    searched = ", ".join(str(d) for d in profile_dirs())
    raise ValueError(f"unknown profile {ref!r} (known: {known}; searched {searched})")


def _format_loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@lru_cache(maxsize=64)
def _load_profile_cached(path: Path, _mtime_ns: int) -> Profile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"profile {path} cannot be read: {exc}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        msg = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"profile {path} is invalid: {_format_loc(first['loc'])}: {msg}{more}") from None


def load_profile(ref: str) -> Profile:
    """Find and validate a profile (cached while the file is unchanged)."""
    path = find_profile(ref)
    return _load_profile_cached(path.resolve(), path.stat().st_mtime_ns)


# ---------------------------------------------------------------- the device entry


class ModbusDeviceConfig(DeviceConfig):
    """One Modbus device (one unit id) reached over TCP or over an RS485 serial line (RTU)."""

    driver: Literal["modbus"]
    transport: Literal["tcp", "rtu"] = Field("tcp", description="'tcp' (Modbus/TCP, also TCP-to-RS485 gateways) "
                                             "or 'rtu' (RS485 through a serial port, e.g. a USB adapter).")
    host: str | None = Field(None, min_length=1, max_length=253, description="tcp: device or gateway address.")
    port: int = Field(502, ge=1, le=65535, description="tcp: TCP port.")
    tcp_connections: int = Field(1, ge=1, le=16, description="tcp: connections to this host:port shared by its "
                                 "devices (many TCP-to-RS485 gateways accept only 1).")
    serial_port: str | None = Field(None, min_length=1, max_length=256, description="rtu: serial device, "
                                    "e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: Literal[1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200] = Field(
        9600, description="rtu: line speed in bit/s; the same for every device on one bus.")
    parity: Literal["N", "E", "O"] = Field("N", description="rtu: N(one), E(ven) or O(dd).")
    stopbits: Literal[1, 2] = Field(1, description="rtu: 1 or 2.")
    bytesize: Literal[7, 8] = Field(8, description="rtu: data bits.")
    unit: int = Field(1, ge=1, le=247, description="Modbus unit id (slave address) of the device, 1..247.")
    profile: str | None = Field(None,
                                description="Register map: a profile name (drivers/modbus/profiles/<name>.yaml or "
                                f"${PROFILE_PATH_ENV}) or an absolute path to a profile file.")
    registers: list[Register] | None = Field(None, description="Register map given inline instead of a profile.")
    overrides: dict[str, RegisterOverride] = Field(default_factory=dict, description="Per-register changes "
                                                   "(scale, offset, unit, decimals, enabled), by register name.")
    poll_interval_s: float = Field(1.0, ge=0.01, le=86400, description="Time between polls of this device.")
    timeout_s: float = Field(1.0, gt=0, le=60, description="Time to wait for each answer (and to connect).")
    max_gap: int | None = Field(None, ge=0, le=124, description="Read registers separated by at most this many "
                                "unused ones in one request (default: the profile's, else 0). Raise it only if "
                                "the device answers reads that span unused addresses.")
    backoff_max_s: float = Field(30.0, ge=0.1, le=3600, description="Longest wait between retries of a failing "
                                 "device.")
    identify: bool = Field(False, description="Ask the device once for its make, model and firmware with Read "
                           "Device Identification (function 43/14) and send them as a device_info event (the asset "
                           "registry's identity). A device that does not support it is asked once, noted, and "
                           "polled as before.")

    _points: tuple[Point, ...] = PrivateAttr(default=())
    _max_gap: int = PrivateAttr(default=0)

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, ref: str | None) -> str | None:
        if ref is not None:
            load_profile(ref)  # raises ValueError naming the known profiles
        return ref

    @model_validator(mode="after")
    def _check(self) -> ModbusDeviceConfig:
        problems = self._transport_problems()
        registers: list[Register] = []
        default_gap, source = 0, "'registers'"
        if self.profile is not None and self.registers is not None:
            problems.append(_problem(("registers",), "give either 'profile' or 'registers', not both", None))
        elif self.profile is None and self.registers is None:
            problems.append(_problem(("profile",), "missing: name a profile or list 'registers' inline", None))
        elif self.registers is not None:
            if not self.registers:
                problems.append(_problem(("registers",), "at least one register is needed", []))
            problems += register_map_problems(self.registers)
            registers = list(self.registers)
        else:
            assert self.profile is not None
            prof = load_profile(self.profile)
            registers, default_gap, source = list(prof.registers), prof.max_gap, f"profile {self.profile!r}"
        names = [r.name for r in registers]
        if registers:
            problems += [_problem(("overrides", name), f"no register {name!r} in {source} (registers: "
                                  f"{', '.join(names)})", name) for name in self.overrides if name not in names]
        _raise("ModbusDeviceConfig", problems)

        points: list[Point] = []
        for reg in registers:
            ov = self.overrides.get(reg.name)
            if ov is not None:
                if not ov.enabled:
                    continue
                changes = {k: getattr(ov, k) for k in ov.model_fields_set
                           if k != "enabled" and getattr(ov, k) is not None}
                reg = reg.model_copy(update=changes)
            points.append(reg.point())
        if not points:
            _raise("ModbusDeviceConfig", [_problem(("overrides",), "every register is disabled: nothing to read",
                                                   None)])
        self._points = tuple(points)
        self._max_gap = default_gap if self.max_gap is None else self.max_gap
        return self

    def _transport_problems(self) -> list[InitErrorDetails]:
        given = self.model_fields_set
        if self.transport == "tcp":
            problems = [_problem((k,), "only used with transport 'rtu'", getattr(self, k))
                        for k in ("serial_port", "baudrate", "parity", "stopbits", "bytesize") if k in given]
            if not self.host:
                problems.insert(0, _problem(("host",), "required for transport 'tcp' (the device's IP address "
                                            "or host name)", None))
            return problems
        problems = [_problem((k,), "only used with transport 'tcp'", getattr(self, k))
                    for k in ("host", "port", "tcp_connections") if k in given]
        if not self.serial_port:
            problems.insert(0, _problem(("serial_port",), "required for transport 'rtu' (e.g. /dev/ttyUSB0)", None))
        return problems

    def __hash__(self) -> int:  # frozen, but holds a list and a dict: hash the canonical JSON instead
        return hash((type(self), self.model_dump_json()))

    @property
    def points(self) -> tuple[Point, ...]:
        """The values this device yields, after profile lookup and overrides."""
        return self._points

    @property
    def effective_max_gap(self) -> int:
        return self._max_gap

    @property
    def endpoint_label(self) -> str:
        """``host:port`` or the serial port, as shown in log messages."""
        return f"{self.host}:{self.port}" if self.transport == "tcp" else str(self.serial_port)

    @property
    def serial_settings(self) -> str:
        """E.g. ``9600 8N1``."""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"
