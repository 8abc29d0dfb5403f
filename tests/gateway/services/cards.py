"""Cards and taps shared by the service tests: pseudonyms under a fixed school key, and a tap event."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from edugate.common.privacy import Pseudonymizer, normalise_uid
from edugate.contract.records import Event

TZ = "Asia/Ho_Chi_Minh"
KEY = bytes(range(32))
P = Pseudonymizer(KEY)
ALICE, BOB = P(normalise_uid("04:A2:2B:1C")), P(normalise_uid("0412345678AB90"))
CAROL = P(normalise_uid("0499887766"))


def tap(device: str, card: str, role: str, direction: str = "in", ts: float | None = None) -> Event:
    return Event(device, "card_tap", {"card": card, "role": role, "direction": direction}, ts=ts)


def local(h: int, m: int, day: int = 23) -> dt.datetime:  # 2026-11-23 is a Monday
    return dt.datetime(2026, 11, day, h, m, tzinfo=ZoneInfo(TZ))
