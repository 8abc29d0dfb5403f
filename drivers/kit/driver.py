"""Lab kits on the kit link: readings into the pipeline, commands and signed firmware updates to the kit.

One serial line, one kit. The driver opens the port (reopening it with back-off when the kit is unplugged),
asks the kit to introduce itself and, once it has, turns each READINGS frame into a
``Reading(device, {sensor name: value})``; the kit gets its ACK only after the reading is durable. A kit that
speaks a protocol version this gateway does not is refused with a message naming the versions it speaks;
one that resets is welcomed again (counted); bad frames are counted per kind and logged at a bounded rate.

Each HELLO becomes an event ``kit_hello`` with the kit's board, firmware version, node id and slot (the
asset list's evidence of what runs in the lab). Commands (``device.command``): ``<actuator>`` with
``{"value": "on"}``, and ``firmware-update`` with ``{"image": "<name>.bin"}`` from ``firmware_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Emit, Event, Reading, Rejected
from edugate.drivers.base import CommandError, DeviceHealth, Driver, Outage
from edugate.drivers.kit.config import KitConfig
from edugate.drivers.serial_link import PortLost, ReopeningPort, SerialLink
from edugate.firmware_bridge.host.session import KitRefused, KitSession, NoAnswer
from edugate.firmware_bridge.protocol import Ack, Command, Frame, Hello, Log, Nack, Readings, Reason

log = logging.getLogger(__name__)

T = TypeVar("T")
HELLO_RETRY_S = 10.0
"""After a refused or unanswered handshake, ask again this often (the kit may be reflashed meanwhile)."""


@dataclass
class KitHealth(DeviceHealth):
    """The device health, with what the kit said of itself in its latest HELLO (on the status page's row)."""

    about: str = ""
    """E.g. ``microbit-v2 mb-5f3a9c01, firmware 1.1.0 (slot B)``; empty until the kit has introduced itself."""

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {"about": self.about}


def describe(hello: Hello) -> str:
    """One line for people: board, node id, firmware version and slot."""
    slot = "AB"[hello.slot] if hello.slot in (0, 1) else str(hello.slot)
    return f"{hello.board} {hello.node_id}, firmware {hello.firmware} (slot {slot})"


def one_line(text: str) -> str:
    """What a kit sent, safe for one log line: a line break or control character becomes '?' (a kit's firmware is
    student code: it must not forge journal lines), at most 200 characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:200])


class KitDriver(Driver[KitConfig]):
    config_model = KitConfig

    def __init__(self, config: KitConfig) -> None:
        super().__init__(config)
        self.kit_health = KitHealth()
        self.health = self.kit_health
        self.where = f"{config.id} (kit on {config.port})"
        self.outage = Outage(self.health, log, self.where, down_text="{where}: {message}; retrying",
                             up_text="{where}: back online after {down:.1f} s", counter="disconnects")
        self.port = ReopeningPort(config.port, config.baudrate, reopen_max_s=config.reopen_max_s,
                                  down=self._down, lost="kit disconnected")
        self.session: KitSession | None = None
        self.hello: Hello | None = None
        """The kit's latest HELLO (board, firmware version, capabilities); None while it is not linked."""
        self._limiter = LogLimiter(burst=5, window_s=60.0)
        self._update_lock = asyncio.Lock()

    def _down(self, message: str) -> None:
        self.hello = None
        self.outage.down(message)

    def _problem(self, kind: str, message: str) -> None:
        self.health.count("bad_frames" if kind != "version" else "refused")
        self.health.count(f"bad_frames_{kind}" if kind != "version" else "refused_version")
        self.health.error(f"{self.where}: {message}", offline=False)
        held = self._limiter.allow(kind)
        if held is not None:
            log.warning("%s: %s%s", self.where, message, f" ({held} more since the last report)" if held else "")

    # ---------------------------------------------------------------- the line

    async def run(self, emit: Emit) -> None:
        while True:
            async with self.port.session() as link:
                await self._serve(link, emit)

    async def _serve(self, link: SerialLink, emit: Emit) -> None:
        session = KitSession(link, on_problem=self._problem)
        pump = asyncio.create_task(session.pump())
        self.session = session
        try:
            await self._race(self._link_up(session), pump)
            self.port.working()
            while True:
                frame = await self._race(session.incoming.get(), pump)
                await self._handle(session, frame, emit)
        finally:
            self.session = None
            self.hello = None
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump

    @staticmethod
    async def _race(work: Awaitable[T], pump: asyncio.Task[None]) -> T:
        """``work``'s result, unless the line's reader ends first (PortLost: unplugged), which is raised."""
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait({task, pump}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        pump.result()  # raises the reader's exception (PortLost: unplugged)
        raise PortLost("the kit's line reader stopped")

    async def _link_up(self, session: KitSession) -> None:
        cfg = self.config
        while True:
            try:
                await session.handshake(cfg.hello_timeout_s)
                return  # the HELLO is on session.incoming; _handle announces it
            except KitRefused as exc:
                self.health.count("errors")
                self._down(str(exc))
            except NoAnswer:
                self.health.count("errors")
                self._down(f"the kit does not answer (no HELLO within {cfg.hello_timeout_s:g} s): is the EduGate kit "
                           f"firmware on it, at {cfg.baudrate} bit/s?")
            before = session.hellos
            with contextlib.suppress(NoAnswer, KitRefused):  # the kit may introduce itself on its own meanwhile
                await session.wait_hello(HELLO_RETRY_S, after=before)
                if session.hello is not None:
                    return

    async def _handle(self, session: KitSession, frame: Frame, emit: Emit) -> None:
        message = frame.message
        if isinstance(message, Hello):
            await self._hello(message, frame.seq == 0, emit)
        elif isinstance(message, Readings):
            await self._readings(session, frame.seq, message, emit)
        elif isinstance(message, Log):
            self.health.count("kit_log_lines")
            if self._limiter.allow("log") is not None:
                log.log(message.level if 10 <= message.level <= 50 else logging.WARNING, "%s says: %s", self.where,
                        one_line(message.text))

    async def _hello(self, hello: Hello, booted: bool, emit: Emit) -> None:
        """A HELLO: the first on this line, a kit that restarted (``seq`` 0), or a repeat (ACKed, not recorded)."""
        before = self.hello
        self.hello = hello
        if before is not None and booted:
            self.health.count("kit_restarts")
            log.info("%s: the kit restarted (firmware %s)", self.where, one_line(hello.firmware))
        elif before == hello:
            return
        self.kit_health.about = describe(hello)
        if self.outage.up() is None and before is None:
            log.info("%s: %s %s, firmware %s, sensors %s", self.where, one_line(hello.board), one_line(hello.node_id),
                     one_line(hello.firmware), one_line(", ".join(c.name for c in hello.sensors) or "none"))
        try:
            await emit(Event(self.device_id, "kit_hello", {
                "node_id": hello.node_id, "board": hello.board, "firmware": hello.firmware, "slot": hello.slot,
                "sensors": [c.name for c in hello.sensors], "actuators": [c.name for c in hello.actuators]}))
        except Rejected as exc:
            self._problem("rejected", f"the kit_hello event was refused by the gateway: {exc}")

    async def _readings(self, session: KitSession, seq: int, readings: Readings, emit: Emit) -> None:
        hello = self.hello
        if hello is None:
            return
        values: dict[str, float] = {}
        for channel, value in readings.values:
            cap = hello.capabilities[channel] if channel < len(hello.capabilities) else None
            if cap is None or cap not in hello.sensors:
                self._problem("channel", f"reading for channel {channel}, which is not a sensor in the kit's HELLO "
                                         f"({len(hello.capabilities)} capabilities)")
                continue
            if not math.isfinite(value):
                self._problem("value", f"{cap.name} is {value} (a sensor fault?); dropped")
                continue
            values[cap.name] = value
        if not values:
            session.send(Nack(seq, Reason.BAD_VALUE, "no usable values"))
            return
        try:
            await emit(Reading(self.device_id, values))
        except Rejected as exc:
            self._problem("rejected", f"reading refused by the gateway: {exc}")
            session.send(Nack(seq, Reason.BAD_VALUE, str(exc)[:200]))
            return
        self.health.ok()
        self.health.count("readings")
        session.send(Ack(seq))  # durable now

    # ---------------------------------------------------------------- commands

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        session, hello = self.session, self.hello
        if session is None or hello is None:
            why = self.health.last_error or "not connected yet"
            raise CommandError(f"kit {self.device_id!r} is not linked: {why}")
        if name == "firmware-update":
            return await self._firmware_update(session, args)
        actuators = [c.name for c in hello.actuators]
        if name not in actuators:
            raise CommandError(f"kit {self.device_id!r} has no actuator {name!r} (it has: "
                               f"{', '.join(actuators) or 'none'}; or 'firmware-update')")
        value = args.get("value", "")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise CommandError(f"'value' must be text or a number, not {type(value).__name__}")
        try:
            answer = await session.request(Command(name, str(value)), self.config.answer_timeout_s)
        except OSError as exc:  # no answer in time, the kit restarted, or its port is gone
            raise CommandError(f"kit {self.device_id!r}: {exc}") from None
        if isinstance(answer, Nack):
            raise CommandError(f"kit {self.device_id!r} refused {name}={value}: {answer.reason_name}: {answer.detail}")
        detail = answer.detail if isinstance(answer, Ack) else ""
        return {"actuator": name, "value": str(value), "done": detail}

    async def _firmware_update(self, session: KitSession, args: Mapping[str, Any]) -> Mapping[str, Any]:
        from edugate.firmware_bridge.update.manifest import (
            SignedManifest,
            UpdateRefused,
            load_public_key,
            manifest_path,
        )
        from edugate.firmware_bridge.update.sender import UpdateSettings, send_update

        cfg = self.config
        if cfg.firmware_dir is None or cfg.firmware_key is None:
            raise CommandError(f"kit {self.device_id!r} has no firmware_dir and firmware_key configured")
        image_name = args.get("image")
        if not isinstance(image_name, str) or not image_name or "/" in image_name or image_name.startswith("."):
            raise CommandError("'image' must name a file in the kit's firmware_dir, e.g. 'kit-1.2.0.bin'")
        image_path = Path(cfg.firmware_dir) / image_name
        try:
            image = image_path.read_bytes()
            signed = SignedManifest.from_json(manifest_path(image_path).read_text(encoding="utf-8"))
            key = load_public_key(Path(cfg.firmware_key))
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot load the update: {exc}") from None
        except UpdateRefused as exc:
            raise CommandError(f"{exc.reason}: {exc}") from None
        if self._update_lock.locked():
            raise CommandError(f"kit {self.device_id!r} is already being updated")
        async with self._update_lock:
            settings = UpdateSettings(chunk_size=cfg.chunk_size, answer_s=cfg.answer_timeout_s,
                                      reboot_s=cfg.hello_timeout_s * 2)
            result = await send_update(session, signed, image, key, settings)
        self.health.count("firmware_updates" if result.ok else "firmware_updates_failed")
        if not result.ok:
            log.warning("%s: firmware update with %s failed: %s: %s", self.where, image_name, result.reason,
                        result.detail)
            raise CommandError(f"{result.reason}: {result.detail}")
        log.info("%s: firmware updated: %s", self.where, result.detail)
        return {"result": "ok", "firmware": result.version, "resumed_from": result.resumed_from,
                "bytes_sent": result.bytes_sent}
