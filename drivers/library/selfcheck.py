"""Library self-check stations: a student taps their card and borrows or returns books over SIP2.

The station (a screen, a card reader, an RFID pad, a receipt printer, e.g. a
small microcontroller board) talks to the gateway in the station line
protocol (:mod:`drivers.station_lines`)::

    station -> gateway   CARD <uid-hex>     a student card on the station's reader: starts a loan session
                         ITEM <item-id>     an item on the RFID pad
                         SCAN <text>        the station's barcode scanner: a library card (matches
                                            ``patron_pattern``) or an item barcode
                         RETURN             the Return button: starts a return session
                         DONE               the Finish button: print the receipt, end the session
                         HB                 heartbeat (optional)
    gateway -> station   SHOW <text>        show this on the screen
                         AFI <item-id> C2|07  set the item tag's security: C2 after a loan, 07 after a return
                         PRINT <text> ... CUT   the receipt, line by line

A USB keyboard-wedge barcode scanner at the station (``scanner:``, for items
without a tag and for library cards) is read through the evdev layer of
:mod:`drivers.wedge` and acts like ``SCAN``.

Privacy: the card UID becomes the school pseudonym at once; the library's
patron barcode is looked up locally from it (``patrons_file``,
:mod:`drivers.library_patrons`) and sent to the library system only. Events
upstream (``library_loan``, ``library_return``, ``library_refused``) carry no
patron and no item: central counts loans, nothing else. Order: the library
system carries out the loan, the event is made durable, then the station is
told.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edugate.common.card_identity import CardIdentityError, ReaderIdentity
from edugate.contract.records import Emit, Event, Rejected
from edugate.drivers.base import Backoff
from edugate.drivers.library.patrons import PatronMap
from edugate.drivers.library.sip2 import Sip2Client, SIP2Error, SIP2OutcomeUnknown, Sip2Settings
from edugate.drivers.library.station_device import StationConfig, StationDriver
from edugate.drivers.wedge.driver import BadRead, EvdevSource, EventSource, KeyDecoder, SourceFactory

log = logging.getLogger(__name__)

Source = Literal["rfid", "barcode"]


class ScannerConfig(BaseModel):
    """A USB keyboard-wedge barcode scanner at the station (read through evdev, like the wedge driver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_path: str = Field(pattern=r"^/", description="The scanner's input device, e.g. "
                             "/dev/input/by-id/usb-<vendor>_<model>-event-kbd.")
    grab: bool = Field(True, description="Take the scanner exclusively (its keystrokes reach no console).")
    key_timeout_s: float = Field(0.5, gt=0, le=10, description="A scan not ended by Enter within this time of "
                                 "its last key is dropped.")


class SelfCheckConfig(StationConfig):
    """A self-check station on a serial line, with an optional barcode scanner (docs/library.md)."""

    driver: Literal["library-selfcheck"]
    sip2: Sip2Settings = Field(description="The library system (SIP2 server).")
    patrons_file: Path = Field(description="library-patrons.csv: card pseudonym -> the library's patron barcode "
                               "(made with 'edugate pseudonym'; stays on the gateway).")
    patron_pattern: str | None = Field(None, max_length=200, description="A regular expression: a scanned code "
                                       "that matches it is a library card (patron barcode), anything else an "
                                       "item, e.g. '^P\\d{5}$'.")
    scanner: ScannerConfig | None = Field(None, description="A keyboard-wedge barcode scanner at the station.")
    card_identity: ReaderIdentity | None = Field(None, description="What the station's card reader reports, for "
                                                 "the school's card identity rule (privacy.card_identity): family, "
                                                 "bits, byte_order (docs/drivers/cards.md).")
    location: str = Field("library", min_length=1, max_length=64, description="Current location sent with "
                          "returns (SIP2 field AP).")
    session_timeout_s: float = Field(60.0, ge=5, le=3600, description="A session with no activity for this long "
                                     "ends (and prints its receipt).")
    set_afi: bool = Field(True, description="Tell the station to set each tag's AFI (C2 on loan, 07 on return), "
                          "so that gates decide right even when the library system is down.")
    receipt_title: str = Field("Library", max_length=60, description="First line of the receipt.")

    @field_validator("patron_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return v


@dataclass
class Session:
    """One patron (or one return) at the station. ``patron`` is a barcode: memory only, never logged."""

    mode: Literal["borrow", "return"]
    patron: str | None = field(default=None, repr=False)
    loans: list[tuple[str, str]] = field(default_factory=list)  # (title, due)
    returns: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set, repr=False)
    last_activity: float = field(default_factory=time.monotonic)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class SelfCheckDriver(StationDriver[SelfCheckConfig]):
    """Borrow and return at a self-check station. ``scanner_factory`` replaces evdev in tests."""

    config_model = SelfCheckConfig

    def __init__(self, config: SelfCheckConfig, *, scanner_factory: SourceFactory | None = None) -> None:
        super().__init__(config)
        self.client = Sip2Client(config.sip2, name=config.id)
        self.patrons = PatronMap(config.patrons_file)
        self.session: Session | None = None
        self._pattern = re.compile(config.patron_pattern) if config.patron_pattern else None
        self._scanner_factory = scanner_factory or self._open_evdev
        self._busy = asyncio.Lock()

    # ------------------------------------------------------------------ station lines

    async def on_line(self, body: str, emit: Emit) -> None:
        cmd, _, arg = body.partition(" ")
        async with self._busy:
            if cmd == "CARD" and arg:
                try:
                    uid = bytes.fromhex(arg)
                except ValueError:
                    self._problem("command", f"CARD with {len(arg)} characters that are not hex")
                    return
                del arg, body
                await self.card(uid, emit)
            elif cmd == "ITEM" and arg and " " not in arg:
                await self.item(arg, "rfid", emit)
            elif cmd == "SCAN" and arg:
                await self.scan(arg, emit)
            elif cmd == "RETURN" and not arg:
                await self._finish()
                self.session = Session("return")
                self.show("Return: place your books on the pad")
            elif cmd == "DONE" and not arg:
                await self._finish()
            elif cmd != "HB":
                self._problem("command", f"unknown or malformed command (a line of {len(body)} characters; "
                              "expected CARD, ITEM, SCAN, RETURN, DONE or HB)")

    def show(self, text: str) -> None:
        self.send(f"SHOW {_short(text, 120)}")

    async def card(self, uid: bytes, emit: Emit) -> None:
        """A student card: pseudonym at once, then the library's patron barcode from the local mapping."""
        try:  # the card's number under the school's rule, then the pseudonym
            pseudonym = self.ctx.card_pseudonym(uid, "station", self.config.card_identity)
        except CardIdentityError as exc:
            del uid
            self._problem("unmapped_card", f"card read not mapped under the card identity rule: {exc}")
            self.show("This card cannot be read here: please see the librarian")
            return
        del uid
        patron = self.patrons.lookup(pseudonym)
        if patron is None:
            await self._refused("unknown_card", emit)
            self.show("This card is not registered with the library: please see the librarian")
            return
        await self.start_borrowing(patron, emit)

    async def scan(self, text: str, emit: Emit) -> None:
        if self._pattern is not None and self._pattern.fullmatch(text):
            await self.start_borrowing(text, emit)  # a library card: the patron barcode itself
        else:
            await self.item(text, "barcode", emit)

    async def start_borrowing(self, patron: str, emit: Emit) -> None:
        await self._finish()
        try:
            status = await self.client.patron_status(patron)
        except SIP2Error:
            await self._refused("ils_unavailable", emit)
            self.show("The library system is not available: please see the librarian")
            return
        if not status.can_borrow:
            await self._refused("patron_blocked", emit)
            self.show(f"You cannot borrow now: {status.screen_message or 'please see the librarian'}")
            return
        self.session = Session("borrow", patron)
        self.show("Hello! Place your books on the pad, then press Finish")

    async def item(self, item: str, source: Source, emit: Emit) -> None:
        session = self.session
        if session is None:
            self.health.count("items_without_session")
            self.show("Tap your card to borrow, or press Return to return books")
            return
        session.last_activity = time.monotonic()
        if item in session.seen:
            return  # still on the pad: read again
        session.seen.add(item)
        if "|" in item or len(item) > 64:
            self._problem("command", f"item id of {len(item)} characters: at most 64, no '|'")
            return
        if session.mode == "borrow":
            await self._borrow(session, item, source, emit)
        else:
            await self._return(session, item, source, emit)

    async def _borrow(self, session: Session, item: str, source: Source, emit: Emit) -> None:
        assert session.patron is not None
        try:
            result = await self.client.checkout(session.patron, item)
        except SIP2OutcomeUnknown:
            await self._refused("outcome_unknown", emit)
            self.show("Please take this book to the librarian (the library system did not answer)")
            return
        except SIP2Error:
            session.seen.discard(item)  # nothing happened: the next read of it may try again
            await self._refused("ils_unavailable", emit)
            self.show("The library system is not available: please see the librarian")
            return
        if not result.ok:
            await self._refused("checkout_refused", emit)
            self.show(f"{_short(result.title or 'This item', 40)}: {result.screen_message or 'cannot be borrowed'}")
            return
        data = {"source": source, "renewal": result.renewal, "recovered": result.confirmed_by != "checkout"}
        if not await self._emit(emit, "library_loan", data):
            self.show("Borrowed, but not recorded here: please tell the librarian")
        if self.config.set_afi:
            self.send(f"AFI {item} C2")
        session.loans.append((result.title or item, result.due_date))
        self.show(f"Borrowed: {_short(result.title or item, 60)}; due {result.due_date or '-'}")

    async def _return(self, session: Session, item: str, source: Source, emit: Emit) -> None:
        try:
            result = await self.client.checkin(item, location=self.config.location)
        except SIP2Error:
            session.seen.discard(item)
            await self._refused("ils_unavailable", emit)
            self.show("The library system is not available: please use the return box")
            return
        if not result.ok:
            await self._refused("checkin_refused", emit)
            self.show(f"{_short(result.title or 'This item', 40)}: {result.screen_message or 'cannot be returned'}")
            return
        await self._emit(emit, "library_return", {"source": source, "alert": result.alert})
        if self.config.set_afi:
            self.send(f"AFI {item} 07")
        session.returns.append(result.title or item)
        self.show(f"Returned: {_short(result.title or item, 60)}")

    async def _refused(self, reason: str, emit: Emit) -> None:
        self.health.count(f"refused_{reason}")
        await self._emit(emit, "library_refused", {"reason": reason})

    async def _emit(self, emit: Emit, kind: str, data: dict[str, Any]) -> bool:
        try:
            await emit(Event(self.device_id, kind, data))
        except (Rejected, OSError) as exc:
            self.health.error(f"{self.where}: {kind} not recorded: {exc}", offline=False)
            log.error("%s: %s not recorded: %s", self.where, kind, exc)
            return False
        self.health.ok()
        self.health.count(kind)
        return True

    async def _finish(self) -> None:
        """End the session: print its receipt (if anything happened) and forget the patron."""
        session, self.session = self.session, None
        if session is None or not (session.loans or session.returns):
            return
        lines = [self.config.receipt_title, dt.datetime.now().strftime("%Y-%m-%d %H:%M")]
        if session.loans:
            lines.append("Borrowed:")
            lines += [f" - {_short(title)} (due {due or '-'})" for title, due in session.loans]
        if session.returns:
            lines.append("Returned:")
            lines += [f" - {_short(title)}" for title in session.returns]
        for line in lines:
            self.send(f"PRINT {line}")
        self.send("CUT")
        self.show("Thank you!")

    # ------------------------------------------------------------------ background: timeout, scanner

    def background(self, emit: Emit) -> list[Coroutine[Any, Any, None]]:
        tasks = [self._expire_sessions()]
        if self.config.scanner is not None:
            tasks.append(self._scanner_loop(emit))
        return tasks

    async def _expire_sessions(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            session = self.session
            if session is not None and time.monotonic() - session.last_activity > self.config.session_timeout_s:
                async with self._busy:
                    if self.session is session:
                        await self._finish()

    def _open_evdev(self, path: str) -> EventSource:
        assert self.config.scanner is not None
        return EvdevSource.open(path, grab=self.config.scanner.grab)

    async def _scanner_loop(self, emit: Emit) -> None:
        scanner = self.config.scanner
        assert scanner is not None
        backoff = Backoff(first=0.5, cap=self.config.reopen_max_s)
        outage: str | None = None
        while True:
            try:
                source = self._scanner_factory(scanner.device_path)
            except (OSError, ImportError) as exc:
                why = f"scanner {scanner.device_path}: {getattr(exc, 'strerror', None) or exc}"
                if why != outage:
                    log.warning("%s: %s (retrying)", self.where, why)
                outage = why
                self.health.error(f"{self.where}: {why}", offline=False)
                await backoff.sleep()
                continue
            outage = None
            backoff.reset()
            try:
                async for text in self._scans(source, scanner.key_timeout_s):
                    async with self._busy:
                        await self.scan(text, emit)
                log.warning("%s: scanner event stream ended", self.where)
            except OSError as exc:
                log.warning("%s: lost the scanner: %s", self.where, exc.strerror or exc)
            finally:
                source.close()
            await backoff.sleep()

    async def _scans(self, source: EventSource, key_timeout_s: float) -> AsyncIterator[str]:
        decoder = KeyDecoder()
        last_key = time.monotonic()
        async for type_, code, value in source:
            now = time.monotonic()
            if decoder.pending and now - last_key > key_timeout_s:
                decoder.reset()
                self._problem("scan", "a scan was not ended by Enter in time and was dropped")
            last_key = now
            try:
                text = decoder.feed(type_, code, value)
            except BadRead as exc:
                self._problem("scan", f"scan rejected: {exc}")
                continue
            if text is not None:
                self.health.count("scans")
                yield text

    async def close(self) -> None:
        await super().close()
        await self.client.close()

    def status(self) -> dict[str, Any]:
        session = self.session
        return {"ils": self.client.status(), "patrons_mapped": len(self.patrons), "patrons_error": self.patrons.error,
                "session": None if session is None else {"mode": session.mode, "loans": len(session.loans),
                                                         "returns": len(session.returns)}}
