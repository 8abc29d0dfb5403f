"""What every card reader shares: debounce, pseudonyms, the tap event, feedback after durability.

A reader driver subclasses :class:`CardReaderDriver` and implements only its
protocol: :meth:`~CardReaderDriver.reads` yields :class:`CardRead` values (the
raw UID as bytes), and :meth:`~CardReaderDriver.signal` makes the reader (or
its buzzer/LED) show the outcome. The base class turns the UID into a keyed
pseudonym *immediately* (the raw bytes go no further), drops repeats of the
same card within ``debounce_s``, emits a ``card_tap`` event and signals the
outcome only once the event is durable in the outbox.
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import Field

from edugate.common.card_identity import CardIdentityError, ReaderIdentity
from edugate.contract.records import Emit, Event, Rejected
from edugate.drivers.base import DeviceConfig, Driver

log = logging.getLogger(__name__)

Role = Literal["attendance", "door", "lab", "library", "bus"]
Outcome = Literal["accepted", "allow", "deny", "error"]


class CardReaderConfig(DeviceConfig):
    """Options every card reader has (drivers add their port, wiring...)."""

    role: Role = Field("attendance", description="What a tap means here: 'attendance' (classroom), 'door'/'lab' "
                       "(access decided from the allow-list), 'library', 'bus' (boarding/alighting).")
    direction: Literal["in", "out", "both"] = Field("in", description="Which way the reader faces.")
    debounce_s: float = Field(2.0, ge=0, le=3600, description="The same card counts once until it has been away "
                              "from the reader this long (a held card counts once).")
    card_identity: ReaderIdentity | None = Field(None, description="What this reader's reads are, for the "
                                                 "school's card identity rule (privacy.card_identity): family, "
                                                 "bits, byte_order. See docs/drivers/cards.md.")


@dataclass(frozen=True, slots=True)
class CardRead:
    """One card seen by a reader. ``uid`` is personal data: pseudonymise, never log or store it."""

    uid: bytes
    technology: str  # "em4100", "iso14443a", "wiegand26", "wiegand34", "keyboard", "barcode" (common.card_identity)

    def __repr__(self) -> str:  # keep the UID out of tracebacks and debug logs
        return f"CardRead(technology={self.technology!r}, uid=<{len(self.uid)} bytes>)"


C = TypeVar("C", bound=CardReaderConfig)


class CardReaderDriver(Driver[C]):
    """Base of the card reader drivers (EM4100, PN532, keyboard wedge, Wiegand)."""

    def __init__(self, config: C) -> None:
        super().__init__(config)
        self._last_seen: dict[str, float] = {}

    @abstractmethod
    def reads(self) -> AsyncIterator[CardRead]:
        """Yield cards as the reader sees them, until cancelled. Handle the reader's own errors inside:
        mark the device offline, log once, back off and reopen; never raise for a device problem."""

    async def signal(self, outcome: Outcome) -> None:
        """Show ``outcome`` to the student (beep, LED). The default reader has no way to; override."""

    async def run(self, emit: Emit) -> None:
        async for read in self.reads():
            await self.tap(read, emit)

    async def tap(self, read: CardRead, emit: Emit) -> str | None:
        """Handle one card: pseudonym, debounce, durable event, then feedback. Returns the outcome."""
        try:  # the read mapped to the card's number under the school's rule, then the pseudonym
            card = self.ctx.card_pseudonym(read.uid, read.technology, self.config.card_identity)
        except CardIdentityError as exc:
            del read
            self._unmapped(exc)
            await self._signal("error")
            return "error"
        del read  # the raw UID goes no further than this line
        now = time.monotonic()
        last = self._last_seen.get(card)
        if last is not None and now - last < self.config.debounce_s:
            self._last_seen[card] = now  # a card held to the reader keeps counting as the same tap
            self.health.count("debounced")
            return None
        self._last_seen[card] = now
        if len(self._last_seen) > 10_000:
            self._forget_old(now)
        cfg = self.config
        try:
            record = await emit(Event(cfg.id, "card_tap", {"card": card, "role": cfg.role,
                                                          "direction": cfg.direction}))
        except (Rejected, OSError) as exc:
            self.health.error(f"tap not recorded: {exc}", offline=False)
            await self._signal("error")
            return "error"
        self.health.ok()
        self.health.count("taps")
        decision = (record or {}).get("data", {}).get("decision")
        outcome: Outcome = decision if decision in ("allow", "deny") else "accepted"
        await self._signal(outcome)
        return outcome

    def _unmapped(self, exc: CardIdentityError) -> None:
        self.health.count("unmapped_reads")
        self.health.count(f"unmapped_reads.{exc.reason}")
        self.health.error(f"read not mapped under the card identity rule: {exc}", offline=False)
        log.warning("%s: a card read was not recorded: %s", self.device_id, exc)

    async def _signal(self, outcome: Outcome) -> None:
        try:
            await self.signal(outcome)
        except Exception as exc:  # feedback must never stop the reader: the tap is already recorded
            self.health.count("feedback_errors")
            log.warning("%s: could not signal %s to the reader: %s", self.device_id, outcome, exc)

    def _forget_old(self, now: float) -> None:
        horizon = self.config.debounce_s
        self._last_seen = {c: t for c, t in self._last_seen.items() if now - t < horizon}
