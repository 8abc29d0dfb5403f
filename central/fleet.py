"""Which gateways are online: parsed from the retained ``.../state`` messages.

The document's fields are the wire contract's (:mod:`edugate.contract.state`).

Every ingest worker subscribes to all state topics (not shared), so each one
holds the whole table. :meth:`FleetTable.snapshot` is what the central status
page will show.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from edugate.contract.state import CARD_RULE_FINGERPRINT_CHARS, HEALTHY_DEVICE_STATES, GatewayStatus

MAX_FUTURE_MS = 86_400_000
"""A state stamped further ahead is refused: the table keeps the newest state, so it would hide every later one."""


class InvalidState(ValueError):
    """A state payload that is not a state document; the message says why."""


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """One entry of a state document's ``devices``, as central keeps it."""

    device: str
    state: str  # a contract DeviceState value (kept as text: a newer gateway may report a state we do not know)
    error_count: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class CardRule:
    """A state document's ``card_rule``: the card identity rule's version and fingerprint (no key, no card)."""

    version: int
    fingerprint: str

    def __str__(self) -> str:
        return f"version {self.version} ({self.fingerprint})"


@dataclass(frozen=True, slots=True)
class StateDoc:
    """One ``.../state`` document (birth, periodic republish, clean shutdown or last will)."""

    online: bool
    ts: int | None  # None for the last will: the broker publishes it, nobody stamps it
    reason: str | None = None
    version: str | None = None
    started_at: int | None = None
    devices: tuple[DeviceReport, ...] = ()
    card_rule: CardRule | None = None  # None: not reported (a gateway from before issue 22, or the last will)


def parse_state(payload: bytes) -> tuple[StateDoc | None, list[str]]:
    """Parse a state payload; return the document (None for an empty payload: the retained
    state was cleared) and the problems found in its optional parts (devices)."""
    if not payload:
        return None, []
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidState(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidState("a state document must be a JSON object")
    status = doc.get("status")
    if status not in (GatewayStatus.ONLINE, GatewayStatus.OFFLINE):
        raise InvalidState(f"'status' must be 'online' or 'offline', got {status!r}")
    ts = doc.get("ts")
    if ts is not None and (type(ts) is not int or ts <= 0):
        raise InvalidState(f"'ts' must be a positive integer (ms since the epoch), got {ts!r}")
    if ts is not None and ts > time.time() * 1000 + MAX_FUTURE_MS:  # would hide every later, true state
        raise InvalidState(f"'ts' {ts} is more than {MAX_FUTURE_MS // 1000} s in the future")
    started_at = doc.get("started_at")
    reason = doc.get("reason")
    version = doc.get("version")
    devices, problems = _devices(doc.get("devices"))
    card_rule, rule_problems = _card_rule(doc.get("card_rule"))
    problems += rule_problems
    return StateDoc(
        online=status == GatewayStatus.ONLINE,
        ts=ts,
        reason=reason if isinstance(reason, str) else None,
        version=version if isinstance(version, str) else None,
        started_at=started_at if type(started_at) is int else None,
        devices=devices,
        card_rule=card_rule,
    ), problems


def _card_rule(raw: Any) -> tuple[CardRule | None, list[str]]:
    if raw is None:
        return None, []
    version = raw.get("version") if isinstance(raw, dict) else None
    fingerprint = raw.get("fingerprint") if isinstance(raw, dict) else None
    if (type(version) is not int or version < 0 or not isinstance(fingerprint, str)
            or len(fingerprint) != CARD_RULE_FINGERPRINT_CHARS
            or any(c not in "0123456789abcdef" for c in fingerprint)):
        return None, [f"'card_rule' must be {{\"version\": <integer >= 0>, \"fingerprint\": "
                      f"<{CARD_RULE_FINGERPRINT_CHARS} lower-case hex digits>}}; card_rule ignored"]
    return CardRule(version, fingerprint), []


def _devices(raw: Any) -> tuple[tuple[DeviceReport, ...], list[str]]:
    if raw is None:
        return (), []
    if not isinstance(raw, dict):
        return (), [f"'devices' must be an object, got {type(raw).__name__}; devices ignored"]
    out: list[DeviceReport] = []
    problems: list[str] = []
    for name, info in raw.items():
        if not isinstance(info, dict) or not isinstance(info.get("state"), str):
            problems.append(f"devices[{name!r}] must be an object with a string 'state'; ignored")
            continue
        count = info.get("error_count", 0)
        last_error = info.get("last_error")
        out.append(DeviceReport(name, info["state"], count if type(count) is int else 0,
                               last_error if isinstance(last_error, str) else None))
    return tuple(out), problems


@dataclass
class _Entry:
    school: str
    gateway: str
    online: bool
    since: int  # ms: when the current status was first seen
    last_seen: int | None  # ms: ts of the newest document the gateway stamped itself
    reason: str | None = None
    version: str | None = None
    started_at: int | None = None
    devices: tuple[DeviceReport, ...] = field(default_factory=tuple)
    card_rule: CardRule | None = None  # the last one reported (kept while the gateway is offline)
    updated_at: int = 0  # ms: ts (or receive time) of the document applied last


class FleetTable:
    """Thread-safe table of gateway states, newest document wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}

    def apply(self, school: str, gateway: str, doc: StateDoc, received_ms: int) -> int:
        """Record ``doc``; return the timestamp to store it at (its ``ts``, or ``received_ms``
        for the last will). A document older than the one already applied is ignored here."""
        at = doc.ts if doc.ts is not None else received_ms
        with self._lock:
            entry = self._entries.get((school, gateway))
            if entry is None:
                entry = self._entries[(school, gateway)] = _Entry(school, gateway, doc.online, at, None)
            elif at < entry.updated_at:
                return at
            if entry.online != doc.online:
                entry.online = doc.online
                entry.since = at
            if doc.ts is not None:
                entry.last_seen = doc.ts
            entry.updated_at = at
            entry.reason = doc.reason
            if doc.online or doc.devices:
                entry.version = doc.version or entry.version
                entry.started_at = doc.started_at or entry.started_at
                entry.devices = doc.devices
                entry.card_rule = doc.card_rule or entry.card_rule
        return at

    def forget(self, school: str, gateway: str) -> None:
        """The retained state was cleared (gateway decommissioned)."""
        with self._lock:
            self._entries.pop((school, gateway), None)

    def snapshot(self) -> list[dict[str, Any]]:
        """One dict per gateway, sorted by school and gateway (times in ms since the epoch)."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: (e.school, e.gateway))
            return [
                {
                    "school": e.school,
                    "gateway": e.gateway,
                    "status": "online" if e.online else "offline",
                    "since": e.since,
                    "last_seen": e.last_seen,
                    "reason": e.reason,
                    "version": e.version,
                    "started_at": e.started_at,
                    "devices_total": len(e.devices),
                    "devices_in_error": [
                        {"device": d.device, "state": d.state, "error_count": d.error_count,
                         "last_error": d.last_error}
                        for d in e.devices if d.state not in HEALTHY_DEVICE_STATES
                    ],
                    "card_rule": None if e.card_rule is None else {"version": e.card_rule.version,
                                                                  "fingerprint": e.card_rule.fingerprint},
                }
                for e in entries
            ]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
