"""Library RFID security gates: pass or alarm decided from the library system, and visitor counts.

The gate's RFID reader and its people counter talk to the gateway over one
serial line in the station line protocol (:mod:`drivers.station_lines`)::

    gate -> gateway   TAG <item-id> AFI=<hh>     an item tag in the gate (ISO 28560: item id + AFI byte)
                      IN [n] | OUT [n]           the people counter: n persons (default 1) walked in / out
                      HB                         heartbeat (optional)
    gateway -> gate   ALARM | PASS               the decision for the last tag

For each item (once per ``tag_debounce_s``) the gateway asks the library
system (SIP2 item information) within ``sip2.timeout_s`` (400 ms by default:
a walking person gives about a second): charged (on loan) -> pass, anything
else -> alarm. When the library system cannot answer in time, the tag's own
security state decides (AFI 07 secured -> alarm, C2 deactivated -> pass) and
the decision is marked ``offline``.

What leaves the gateway: a ``gate_alarm`` event per alarm (no patron: a gate
does not know who walks through; the item as a keyed pseudonym, so that
nobody upstream can tell which book someone carried), and every
``count_interval_s`` one reading with ``visitors_in``, ``visitors_out``,
``tags``, ``alarms``, ``offline_decisions`` (counts in that interval) and
``ils_online``, ``reader_online`` (0/1). Item ids are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from edugate.contract.records import Emit, Event, Reading, Rejected
from edugate.drivers.library.sip2 import Sip2Client, SIP2Error, Sip2Settings
from edugate.drivers.library.sip2_codec import ItemInfo
from edugate.drivers.library.station_device import StationConfig, StationDriver

log = logging.getLogger(__name__)

ITEM_PREFIX = b"library-item:"
"""Item pseudonyms are keyed hashes of this prefix + the item id: never equal to a card's pseudonym."""


class GateSip2Settings(Sip2Settings):
    """SIP2 for a gate: short timeout, no retries (the person is walking), quick reconnects."""

    timeout_s: float = Field(0.4, gt=0, le=10, description="Answer time allowed for an item lookup; past it the "
                             "tag's security bit decides (offline).")
    retries: int = Field(0, ge=0, le=2, description="Lookups sent again after a timeout (0: decide offline).")
    reconnect_max_s: float = Field(10.0, ge=0.1, le=3600, description="Longest wait between reconnect attempts.")


class LibraryGateConfig(StationConfig):
    """An RFID security gate with a people counter, on a serial line (docs/library.md)."""

    driver: Literal["library-gate"]
    sip2: GateSip2Settings = Field(description="The library system (SIP2 server).")
    charged_statuses: list[str] = Field(["04", "05"], min_length=1, description="SIP2 circulation statuses that "
                                        "let an item pass (04 charged, 05 charged/not to be recalled).")
    afi_secured: list[str] = Field(["07"], description="AFI values of a secured tag (in the library): alarm offline.")
    afi_deactivated: list[str] = Field(["C2"], description="AFI values of a checked-out tag: pass offline.")
    unknown_afi: Literal["alarm", "pass"] = Field("alarm", description="Offline decision for any other AFI value.")
    tag_debounce_s: float = Field(3.0, ge=0, le=600, description="An item read again within this time (the tag "
                                  "stays in the field) is decided once.")
    count_interval_s: float = Field(60.0, ge=1, le=3600, description="Period of the visitor count reading.")
    status_interval_s: float = Field(30.0, ge=1, le=3600, description="Ask the library system for its status "
                                     "this often (keeps the connection warm; shows whether it is up).")
    heartbeat_timeout_s: float = Field(0, ge=0, le=3600, description="If > 0, the reader counts as down when no "
                                       "line came within this time (gates that send HB).")

    @field_validator("charged_statuses")
    @classmethod
    def _statuses(cls, v: list[str]) -> list[str]:
        for i, s in enumerate(v):
            if len(s) != 2 or not s.isdigit():
                raise ValueError(f"[{i}]: {s!r} is not a 2-digit SIP2 circulation status (e.g. '04')")
        return v

    @field_validator("afi_secured", "afi_deactivated")
    @classmethod
    def _afis(cls, v: list[str]) -> list[str]:
        out = []
        for i, s in enumerate(v):
            if len(s) != 2 or any(c not in "0123456789abcdefABCDEF" for c in s):
                raise ValueError(f"[{i}]: {s!r} is not an AFI byte as 2 hex digits (e.g. '07', 'C2')")
            out.append(s.upper())
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    alarm: bool
    reason: str  # "charged" | "not_charged" | "unknown_item" | "secured_tag" | "deactivated_tag" | "unknown_afi"
    source: Literal["ils", "tag"]
    offline: bool
    circulation: str | None = None


def decide(info: ItemInfo | None, afi: str, cfg: LibraryGateConfig) -> Decision:
    """Pass or alarm. ``info`` None: the library system did not answer (offline: the tag decides)."""
    if info is not None and info.found:
        charged = info.circulation_status in cfg.charged_statuses
        return Decision(not charged, "charged" if charged else "not_charged", "ils", False, info.circulation_status)
    offline = info is None
    circulation = None if info is None else info.circulation_status
    if afi in cfg.afi_secured:
        return Decision(True, "secured_tag" if offline else "unknown_item", "tag", offline, circulation)
    if afi in cfg.afi_deactivated:
        return Decision(False, "deactivated_tag" if offline else "unknown_item", "tag", offline, circulation)
    return Decision(cfg.unknown_afi == "alarm", "unknown_afi", "tag", offline, circulation)


class BadCommand(ValueError):
    """A well-framed line the gate should not send. The message names no item id."""


def parse_gate_line(body: str) -> tuple[str, str, str] | tuple[str, int] | tuple[str]:
    """``("TAG", item, afi)``, ``("IN", n)``, ``("OUT", n)`` or ``("HB",)``; raises :class:`BadCommand`."""
    words = body.split(" ")
    cmd = words[0]
    if cmd == "TAG":
        if len(words) != 3 or not words[1] or not words[2].startswith("AFI="):
            raise BadCommand(f"TAG needs '<item-id> AFI=<hh>' ({len(words) - 1} words after TAG)")
        item, afi = words[1], words[2][4:]
        if len(item) > 64 or "|" in item:
            raise BadCommand(f"TAG item id of {len(item)} characters: at most 64, no '|'")
        if len(afi) != 2 or any(c not in "0123456789abcdefABCDEF" for c in afi):
            raise BadCommand("TAG AFI is not 2 hex digits")
        return ("TAG", item, afi.upper())
    if cmd in ("IN", "OUT"):
        if len(words) == 1:
            return (cmd, 1)
        if len(words) == 2 and words[1].isdigit() and 1 <= int(words[1]) <= 100:
            return (cmd, int(words[1]))
        raise BadCommand(f"{cmd} takes an optional count 1..100")
    if cmd == "HB" and len(words) == 1:
        return ("HB",)
    raise BadCommand(f"unknown or malformed command (a line of {len(body)} characters; expected TAG, IN, OUT "
                     "or HB)")


class LibraryGateDriver(StationDriver[LibraryGateConfig]):
    """Decides pass/alarm for each item through the gate; counts visitors."""

    config_model = LibraryGateConfig

    def __init__(self, config: LibraryGateConfig) -> None:
        super().__init__(config)
        self.client = Sip2Client(config.sip2, name=config.id)
        self._recent: dict[str, float] = {}
        self.counts = dict.fromkeys(("visitors_in", "visitors_out", "tags", "alarms", "offline_decisions"), 0)
        self.last_decision_ms: float | None = None

    # ------------------------------------------------------------------ lines

    async def on_line(self, body: str, emit: Emit) -> None:
        try:
            parsed = parse_gate_line(body)
        except BadCommand as exc:
            self._problem("command", str(exc))
            return
        if parsed[0] == "TAG":
            _, item, afi = parsed  # type: ignore[misc]  # a TAG tuple has 3 items; mypy cannot narrow on [0]
            await self.tag(str(item), str(afi), emit)
        elif parsed[0] in ("IN", "OUT"):
            key = "visitors_in" if parsed[0] == "IN" else "visitors_out"
            self.counts[key] += int(parsed[1])  # type: ignore[misc]  # IN/OUT tuples have 2 items (see above)

    async def tag(self, item: str, afi: str, emit: Emit) -> Decision | None:
        """One item tag in the gate: decide, signal the gate, record an alarm. None if debounced."""
        now = time.monotonic()
        last = self._recent.get(item)
        self._recent[item] = now
        if last is not None and now - last < self.config.tag_debounce_s:
            self.health.count("tags_repeated")
            return None
        if len(self._recent) > 5000:
            horizon = self.config.tag_debounce_s
            self._recent = {k: t for k, t in self._recent.items() if now - t < horizon}
        started = time.monotonic()
        info: ItemInfo | None = None
        try:  # the lock may be busy (a keepalive reconnecting): the deadline covers the wait too
            async with asyncio.timeout(self.config.sip2.timeout_s * (1 + self.config.sip2.retries)):
                info = await self.client.item_information(item, connect=False)
        except (SIP2Error, TimeoutError) as exc:
            why = str(exc) or "the library system connection is busy"
            self.health.error(f"{self.where}: library system unavailable, deciding from the tag: {why}",
                              offline=False)
        decision = decide(info, afi, self.config)
        self.last_decision_ms = round((time.monotonic() - started) * 1000, 1)
        self.send("ALARM" if decision.alarm else "PASS")  # the person is walking: signal first, then record
        self.counts["tags"] += 1
        self.health.count("alarms" if decision.alarm else "passes")
        if decision.offline:
            self.counts["offline_decisions"] += 1
            self.health.count("offline_decisions")
        if decision.alarm:
            self.counts["alarms"] += 1
            await self._record_alarm(item, decision, emit)
        return decision

    async def _record_alarm(self, item: str, decision: Decision, emit: Emit) -> None:
        data: dict[str, Any] = {"item": self.ctx.pseudonymize(ITEM_PREFIX + item.encode("utf-8")),
                                "decision": "alarm", "reason": decision.reason, "source": decision.source,
                                "offline": decision.offline}
        if decision.circulation is not None:
            data["circulation"] = decision.circulation
        try:
            await emit(Event(self.device_id, "gate_alarm", data))
        except (Rejected, OSError) as exc:
            self.health.error(f"{self.where}: alarm not recorded: {exc}", offline=False)
            log.error("%s: alarm not recorded: %s", self.where, exc)

    # ------------------------------------------------------------------ background

    def background(self, emit: Emit) -> list[Coroutine[Any, Any, None]]:
        return [self._count_loop(emit), self._keepalive_loop()]

    @property
    def reader_online(self) -> bool:
        if not self.port_open:
            return False
        hb = self.config.heartbeat_timeout_s
        return not hb or (self.last_line_at is not None and time.monotonic() - self.last_line_at < hb)

    async def _count_loop(self, emit: Emit) -> None:
        """One reading per interval, stamped at the interval's end (aligned to the wall clock)."""
        interval = self.config.count_interval_s
        while True:
            end = (time.time() // interval + 1) * interval
            await asyncio.sleep(max(0.0, end - time.time()))
            values = {**self.counts, "ils_online": int(self.client.online),
                      "reader_online": int(self.reader_online)}
            try:
                await emit(Reading(self.device_id, values, ts=end))
            except (Rejected, OSError) as exc:
                log.error("%s: visitor counts not recorded (kept for the next interval): %s", self.where, exc)
                continue
            for key in self.counts:
                self.counts[key] -= values[key]

    async def _keepalive_loop(self) -> None:
        """Keep the library system connected: item lookups never connect (no time for it), this loop does,
        within half a second of a drop (respecting the client's back-off), and asks for its status."""
        last = -float("inf")
        while True:
            if not self.client.connected or time.monotonic() - last >= self.config.status_interval_s:
                last = time.monotonic()
                try:
                    await self.client.sc_status()
                except SIP2Error as exc:
                    log.debug("%s: SC status: %s", self.where, exc)
            await asyncio.sleep(0.5 if not self.client.connected else 1.0)

    async def close(self) -> None:
        await super().close()
        await self.client.close()

    def status(self) -> dict[str, Any]:
        """Local view of this gate (for tests and the status page)."""
        return {"reader_online": self.reader_online, "ils": self.client.status(),
                "last_decision_ms": self.last_decision_ms, **self.counts}
