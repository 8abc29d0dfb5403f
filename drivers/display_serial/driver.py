"""Panels and projectors without a network port, controlled over RS-232 (driver ``display-serial``).

The device family's protocol comes from a YAML profile (:mod:`.profile`; LG panels, Epson ESC/VP21 and
BenQ projectors ship in ``profiles/``). Every ``poll_interval_s`` the driver sends the profile's poll queries and
emits one reading of the values parsed from the replies (``power_on`` from the query with ``on_values``);
the identity queries (model, serial) become a ``device_info`` event once per connection, for the asset
registry. Commands (``power``, ``input``, any the profile names) send the profile's bytes and check the
success reply. A device that does not answer is OFFLINE (one warning, retried), a reply that matches
nothing is counted (``garbled``) and skipped, an unplugged adapter is reopened with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Emit, Event, Reading, Rejected, Value
from edugate.drivers.base import CommandError, DeviceConfig, DeviceState, Driver, Outage, SerialPortPath
from edugate.drivers.display_serial.profile import Profile, load_profile, parse_value
from edugate.drivers.serial_link import PortLost, ReopeningPort, SerialLink

log = logging.getLogger(__name__)


class DisplaySerialConfig(DeviceConfig):
    """A panel or projector on an RS-232 line (a USB-serial adapter, often with a null-modem cable)."""

    # old names, still read (issue 19)
    renamed: ClassVar[Mapping[str, str]] = {"poll_s": "poll_interval_s"}

    driver: Literal["display-serial"]
    port: SerialPortPath
    profile: str = Field(description="The device family: lg-panel, epson-escvp21, benq-projector (in "
                         "drivers/display_serial/profiles/), or an absolute path to your own profile.")
    set_id: str = Field("01", pattern=r"^[0-9a-fA-F]{2}$", description="The display's set id, for protocols that "
                        "address several displays on one line (LG: 01 unless changed in its menu).")
    poll_interval_s: float = Field(30.0, ge=1, le=3600, description="Seconds between status polls.")
    reply_timeout_s: float = Field(2.0, ge=0.05, le=30, description="A reply not complete within this is missing "
                                   "(some projectors answer slowly while warming up).")
    reopen_max_s: float = Field(30.0, ge=0.1, le=3600, description="An unplugged adapter is reopened after 0.5 s, "
                                "then twice as long each time, up to this many seconds apart.")

    @field_validator("set_id", mode="before")
    @classmethod
    def _set_id_number(cls, value: object) -> object:
        """``set_id: 1`` (YAML reads 01 as a number) means the display whose menu says 1: ``01``."""
        return f"{value:02x}" if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 256 \
            else value

    @field_validator("profile")
    @classmethod
    def _known(cls, ref: str) -> str:
        load_profile(ref)
        return ref


class NoReply(Exception):
    """Nothing that matched within the reply timeout."""


class DisplaySerialDriver(Driver[DisplaySerialConfig]):
    config_model = DisplaySerialConfig

    def __init__(self, config: DisplaySerialConfig) -> None:
        super().__init__(config)
        self.profile: Profile = load_profile(config.profile)
        self.where = f"{config.id} ({self.profile.name} on {config.port})"
        self.outage = Outage(self.health, log, self.where)
        self.port = ReopeningPort(config.port, self.profile.baudrate, reopen_max_s=config.reopen_max_s,
                                  down=self.outage.down)
        self._limiter = LogLimiter()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._buffer = b""
        self.info: dict[str, Any] | None = None

    def _text(self, template: str) -> str:
        return template.replace("{set_id}", self.config.set_id)

    async def run(self, emit: Emit) -> None:
        while True:
            async with self.port.session() as link:
                self._buffer = b""
                identified = False
                while True:
                    async with self._lock:
                        values = await self._poll(link)
                        info = await self._identity(link) if values and not identified else None
                    if values:
                        self.port.working()
                        self.outage.up()
                        if not identified:
                            identified = True
                            if info != self.info and await self._emit(emit, Event(self.config.id, "device_info",
                                                                                  info or {})):
                                self.info = info
                        if await self._emit(emit, Reading(self.config.id, values)):
                            self.health.ok()
                    else:
                        identified = False
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.poll_interval_s):
                            await self._wake.wait()
                    self._wake.clear()

    async def _emit(self, emit: Emit, item: Reading | Event) -> bool:
        try:
            await emit(item)
        except Rejected as exc:
            self.health.count("rejected")
            log.warning("%s: %s rejected: %s", self.where, type(item).__name__.lower(), exc)
            return False
        return True

    async def _poll(self, link: SerialLink) -> dict[str, Value]:
        """One round of the profile's poll queries. Empty when the device answered none (it is offline)."""
        values: dict[str, Value] = {}
        answered = False
        for query in self.profile.poll:
            try:
                raw = await self._ask(link, query.send, query.reply)
            except NoReply as exc:
                self.health.count(f"unanswered.{query.name}")
                if str(exc):
                    answered = True  # it said no: it is there
                continue
            answered = True
            try:
                value = parse_value(query, raw)
            except ValueError as exc:
                self._garbled(str(exc))
                continue
            values[query.name] = value
            if query.on_values is not None:
                values["power_on"] = value in query.on_values
        if not answered:
            self.outage.down(f"no reply within {self.config.reply_timeout_s:g} s (is it powered, the cable a "
                             "null-modem one, the baud rate right?)", key="silent")
        return values

    async def _identity(self, link: SerialLink) -> dict[str, Any]:
        info: dict[str, Any] = {"protocol": self.profile.name}
        if self.profile.make:
            info["make"] = self.profile.make
        for key, query in self.profile.identity.items():
            with contextlib.suppress(NoReply):
                info[key] = await self._ask(link, query.send, query.reply)
        return info

    async def _ask(self, link: SerialLink, send: str, reply: str) -> str:
        """Send, then read reply units (ended by the profile's ``reply_end``) until one matches ``reply``
        (its ``value`` group is returned) or the profile's ``error`` (NoReply with the reply). Echoes and
        other units are skipped; garbage is counted."""
        want = re.compile(self._text(reply))
        error = re.compile(self._text(self.profile.error)) if self.profile.error else None
        end = self.profile.reply_end.encode()
        self._buffer = b""
        link.write(self._text(send).encode("latin-1"))
        deadline = time.monotonic() + self.config.reply_timeout_s
        skipped: list[bytes] = []
        while True:
            while (i := self._buffer.find(end)) >= 0:
                unit, self._buffer = self._buffer[:i], self._buffer[i + len(end):]
                text = unit.decode("latin-1").strip("\r\n \x00")
                if (m := want.search(text)) is not None:
                    return m.groupdict().get("value") or ""
                if error is not None and error.search(text):
                    self.health.count("refused")
                    raise NoReply(text[:40])
                if text:
                    skipped.append(unit)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._buffer += await link.read(left)
            if len(self._buffer) > 4096:
                self._buffer = self._buffer[-256:]
        garbage = [u for u in [*skipped, self._buffer] if u.strip(b"\r\n \x00") and not _is_echo(u, send)]
        if garbage:
            self._garbled(f"reply to {send.strip()!r} not understood: {garbage[-1][:24]!r}")
            raise NoReply("garbled")
        raise NoReply()

    def _garbled(self, message: str) -> None:
        self.health.count("garbled")
        self.health.error(f"{self.where}: {message}", offline=False)
        held = self._limiter.allow("garbled")
        if held is not None:
            log.warning("%s: %s%s", self.where, message, f" ({held} more not logged)" if held else "")

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        action = self.profile.commands.get(name)
        if action is None:
            raise CommandError(f"{self.device_id} ({self.profile.name}) accepts {', '.join(self.profile.commands)}, "
                               f"not {name!r}")
        value = str(args.get("value", ""))
        choices = [k for k in action if k != "ok"]
        if value not in choices:
            raise CommandError(f"{self.device_id}: {name} takes {', '.join(choices)}, not {value!r}")
        link = self.port.link
        if link is None or self.health.state is not DeviceState.ONLINE:
            raise CommandError(f"{self.where} is not reachable: {self.health.last_error or 'not connected yet'}")
        try:
            async with self._lock:
                await self._ask(link, action[value], action["ok"])
        except NoReply as exc:
            raise CommandError(f"{self.where} refused {name} {value}: {exc or 'no reply'}") from None
        except PortLost as exc:
            raise CommandError(f"{self.where}: {exc}") from None
        self.health.count("commands")
        self._wake.set()
        return {"command": name, "value": value, "result": "ok"}

    async def close(self) -> None:
        self.port.close()
        self.health.state = DeviceState.STOPPED


def _is_echo(unit: bytes, send: str) -> bool:
    text = unit.strip(b"\r\n ")
    return bool(text) and text in send.encode("latin-1")
