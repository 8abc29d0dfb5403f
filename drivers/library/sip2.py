"""An asyncio SIP2 client: the gateway's link to the library system (Koha, Evergreen, any SIP2 server).

One :class:`Sip2Client` holds one TCP connection (optionally TLS) and sends one
request at a time on it (a lock): SIP2 has no request ids besides a one-digit
sequence number, so answers must not be interleaved. It connects on demand,
logs in (93/94) when a login user is configured, and reconnects with
back-off: after a failure, requests fail at once (:class:`SIP2Unavailable`)
until the next attempt is due, so a library gate falls back to its offline
decision without waiting for a dead server every time.

Per request: a sequence number (AY) and a checksum (AZ) are added and checked;
an answer with a bad checksum is asked again with "request ACS resend" (97),
and a "request SC resend" (96) from the server gets the request again, each up
to ``resend_max`` times; an answer that does not come within ``timeout_s``
drops the connection (a late answer must not be taken for the next one).
Reads (item information, patron status, SC status) are retried after a
timeout; a checkout never is sent twice blindly: see :meth:`Sip2Client.checkout`.

Two error paths, kept apart: exceptions (:class:`SIP2Error`) mean the link or
the server failed; a result with ``ok=False`` means the library said no.
Patron barcodes are never logged, not even in errors.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import ssl
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edugate.drivers.library import sip2_codec as codec
from edugate.drivers.library.sip2_codec import (
    AcsStatus,
    CheckinResult,
    CheckoutResult,
    ItemInfo,
    Message,
    PatronStatus,
    SIP2ChecksumError,
    SIP2FormatError,
)

__all__ = ["SIP2Error", "SIP2LoginRefused", "SIP2OutcomeUnknown", "SIP2ProtocolError", "SIP2Timeout",
           "SIP2Unavailable", "Sip2Client", "Sip2Settings"]

log = logging.getLogger(__name__)


class Sip2Settings(BaseModel):
    """How to reach the library system over SIP2 (a ``sip2:`` block of a library device)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, max_length=253, description="The SIP2 server (the ILS), e.g. koha.school.edu.vn.")
    port: int = Field(6001, ge=1, le=65535, description="Its SIP2 port (Koha's default is 6001).")
    tls: bool = Field(False, description="Connect with TLS (SIP2 itself is plain text: use TLS or a VPN across "
                      "networks).")
    ca_file: Path | None = Field(None, description="CA certificate for TLS (default: the system's CAs).")
    institution_id: str = Field(min_length=1, max_length=64, description="The library's institution id (field AO), "
                                "as configured in the ILS's SIP2 setup.")
    login_user: str | None = Field(None, max_length=64, description="The SIP2 account of this device (field CN); "
                                   "omit if the server needs no login.")
    login_password_file: Path | None = Field(None, description="File holding that account's password (field CO).")
    location_code: str | None = Field(None, max_length=64, description="Location code sent at login (field CP).")
    charset: str = Field("cp850", description="Character set of the SIP2 server: cp850 (the SIP2 default), "
                         "latin-1 or utf-8 (Koha and Evergreen can be set to utf-8).")
    error_detection: bool = Field(True, description="Send and require sequence numbers and checksums (AY/AZ).")
    timeout_s: float = Field(5.0, gt=0, le=120, description="An answer not received within this time is lost: "
                             "the connection is dropped and re-opened.")
    connect_timeout_s: float = Field(2.0, gt=0, le=60, description="Time allowed to connect and log in.")
    retries: int = Field(1, ge=0, le=5, description="Resends of a read (item information, patron status) after a "
                         "timeout; a checkout is never resent without checking the item first.")
    resend_max: int = Field(3, ge=0, le=10, description="Resend requests (96/97) per message before giving up.")
    reconnect_max_s: float = Field(30.0, ge=0.1, le=3600, description="Longest wait between reconnect attempts "
                                   "(0.5 s, 1 s, 2 s ... up to this).")

    @field_validator("charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown character set {value!r} (e.g. cp850, latin-1, utf-8)") from None
        return value

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


class SIP2Error(Exception):
    """The SIP2 link or server failed (not: the library said no)."""


class SIP2Unavailable(SIP2Error, ConnectionError):
    """The server cannot be reached, or the connection broke. ``sent``: the request may have reached it."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


class SIP2Timeout(SIP2Unavailable):
    """No answer within ``timeout_s`` (the request was sent)."""


class SIP2ProtocolError(SIP2Error):
    """The server answered with something that is not a valid answer, even after resends."""


class SIP2LoginRefused(SIP2Error):
    """The server refused the login (94 with ok=0): wrong SIP2 user or password."""


class SIP2OutcomeUnknown(SIP2Error):
    """A checkout's answer was lost and the item's state cannot tell whether it went through."""


Counter = Literal["requests", "timeouts", "bad_answers", "resends_asked", "resends_given", "connects",
                  "connect_failures", "disconnects", "recovered_checkouts"]


class Sip2Client:
    """One SIP2 connection, used by one device. ``await client.item_information("3011...")`` and so on."""

    def __init__(self, settings: Sip2Settings, *, name: str = "sip2") -> None:
        self.s = settings
        self.name = name
        self.stats: dict[str, int] = {}
        self.online = False
        self.last_error: str | None = None
        self.last_latency_ms: float | None = None
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._seq = -1
        self._retry_at = 0.0
        self._delay = min(0.5, settings.reconnect_max_s)

    # ------------------------------------------------------------------ public requests

    async def sc_status(self) -> AcsStatus:
        """SC status (99/98): is the ILS up and what does it allow."""
        return codec.acs_status(await self.request(*codec.sc_status()))

    async def item_information(self, item: str, *, connect: bool = True) -> ItemInfo:
        """Item information (17/18): circulation status, title, due date. ``connect=False``: fail at once
        unless a connection is open (a gate must not wait for a connect; its keepalive reconnects)."""
        msg = codec.item_information(self.s.institution_id, item)
        return codec.item_info(await self.request(*msg, connect=connect))

    async def patron_status(self, patron: str, *, password: str | None = None) -> PatronStatus:
        """Patron status (23/24): valid, may borrow."""
        msg = codec.patron_status(self.s.institution_id, patron, patron_password=password)
        return codec.patron_status_result(await self.request(*msg))

    async def checkin(self, item: str, *, location: str) -> CheckinResult:
        """Checkin (09/10). Safe to repeat: returning a returned item changes nothing."""
        msg = codec.checkin(self.s.institution_id, item, location)
        return codec.checkin_result(await self.request(*msg))

    async def checkout(self, patron: str, item: str, *, password: str | None = None) -> CheckoutResult:
        """Checkout (11/12), never done twice.

        The item's state is read first (item information). If the checkout's
        answer is then lost (timeout, connection dropped after sending), the
        checkout is not simply sent again: the item is read again, and if it
        went from not charged to charged, the checkout went through
        (``confirmed_by="item_information"``); if it is still not charged, the
        checkout is sent once more. If it was charged before (a renewal, or
        someone else's loan), the outcome cannot be told: :class:`SIP2OutcomeUnknown`.
        """
        before = await self.item_information(item)
        msg = codec.checkout(self.s.institution_id, patron, item, patron_password=password)
        try:
            return codec.checkout_result(await self.request(*msg, idempotent=False))
        except SIP2Unavailable as exc:
            if not exc.sent:
                raise
            lost = exc
        log.warning("%s: the answer to a checkout was lost (%s); checking the item before anything else",
                    self.name, lost)
        try:
            after = codec.item_info(await self.request(*codec.item_information(self.s.institution_id, item),
                                                       wait=True))
        except SIP2Error as exc:
            raise SIP2OutcomeUnknown(f"the answer to a checkout was lost and the item could not be checked "
                                     f"afterwards ({exc}): ask at the desk") from lost
        if after.charged and not before.charged:
            self._count("recovered_checkouts")
            return CheckoutResult(True, after.item_id, after.title, after.due_date, False, "U",
                                  after.screen_message, confirmed_by="item_information")
        if before.charged:
            raise SIP2OutcomeUnknown("the answer to a checkout was lost and the item was already on loan before: "
                                     "ask at the desk") from lost
        return codec.checkout_result(await self.request(*msg, idempotent=False, wait=True))

    # ------------------------------------------------------------------ the exchange

    async def request(self, code: str, fixed: list[str], fields: list[tuple[str, str | None]], *,
                      idempotent: bool = True, wait: bool = False, connect: bool = True) -> Message:
        """Send one request and return its checked answer. Raises :class:`SIP2Error`.

        While the server is in back-off (a failed connect or a timeout a moment ago), fail at once, or with
        ``wait`` sleep until the next attempt is due; ``connect=False`` fails unless already connected.
        ``idempotent`` requests are retried ``retries`` times. Cancelled mid-request, the connection is dropped.
        """
        expect = codec.RESPONSE_TO[code]
        title = codec.SPECS[code].title
        attempts = 1 + (self.s.retries if idempotent else 0)
        async with self._lock:
            try:
                return await self._attempts(code, fixed, fields, title, expect, attempts, wait, connect)
            except asyncio.CancelledError:
                self._drop()  # an answer may still come: it must not be read as the next request's
                raise

    async def _attempts(self, code: str, fixed: list[str], fields: list[tuple[str, str | None]], title: str,
                        expect: str, attempts: int, wait: bool, connect: bool) -> Message:
        for attempt in range(attempts):
            if not connect and self._writer is None:
                raise SIP2Unavailable(f"not connected to {self.s.endpoint} ({self.last_error or 'reconnecting'})")
            await self._ensure_connected(wait=wait or attempt > 0)
            seq = self._next_seq()
            try:
                frame = codec.encode(code, fixed, fields, seq=seq, error_detection=self.s.error_detection,
                                     charset=self.s.charset)
            except ValueError as exc:
                raise SIP2ProtocolError(str(exc)) from None
            try:
                return await self._exchange(frame, title, expect, seq)
            except SIP2Unavailable as exc:
                self._fail(str(exc), backoff=isinstance(exc, SIP2Timeout))  # a hung server: do not hammer it
                if attempt + 1 == attempts:
                    raise
                log.info("%s: %s; sending %s again", self.name, exc, title)
            except SIP2ProtocolError as exc:
                self._fail(str(exc))
                raise
        raise AssertionError("unreachable")

    async def _exchange(self, frame: bytes, title: str, expect: str, seq: int) -> Message:
        self._count("requests")
        started = time.monotonic()
        self._send(frame, sent=False)
        asked = given = 0
        while True:
            raw = await self._read_frame(title)
            try:
                msg = codec.parse(raw, charset=self.s.charset, require_checksum=self.s.error_detection,
                                  expect={expect, "96"})
            except SIP2FormatError as exc:
                self._count("bad_answers")
                noise = isinstance(exc, SIP2ChecksumError) or not self.s.error_detection
                if not noise:
                    raise SIP2ProtocolError(f"the server's answer to {title} is malformed: {exc}") from None
                if asked >= self.s.resend_max:
                    raise SIP2ProtocolError(f"answer to {title} still corrupted after {asked} resend requests: "
                                            f"{exc}") from None
                asked += 1
                self._count("resends_asked")
                log.info("%s: corrupted answer to %s (%s); asking for it again (97)", self.name, title, exc)
                self._send(codec.encode("97", error_detection=self.s.error_detection, charset=self.s.charset))
                continue
            if msg.code == "96":
                if given >= self.s.resend_max:
                    raise SIP2ProtocolError(f"the server asked {given + 1} times to resend {title} (96): "
                                            "is the character set or the checksum setting wrong?")
                given += 1
                self._count("resends_given")
                self._send(frame)
                continue
            if self.s.error_detection and msg.seq != seq:
                raise SIP2ProtocolError(f"answer to {title} has sequence number {msg.seq}, expected {seq}")
            self.last_latency_ms = round((time.monotonic() - started) * 1000, 1)
            return msg

    def _send(self, data: bytes, *, sent: bool = True) -> None:
        if self._writer is None:
            raise SIP2Unavailable("not connected", sent=False)
        try:
            self._writer.write(data)
        except (ConnectionError, OSError, RuntimeError) as exc:
            raise SIP2Unavailable(f"connection to {self.s.endpoint} lost: {exc}", sent=sent) from None

    async def _read_frame(self, title: str) -> bytes:
        assert self._reader is not None
        try:
            async with asyncio.timeout(self.s.timeout_s):
                while True:
                    data = await self._reader.readuntil(codec.CR)
                    data = data.strip(b"\n")  # some servers end frames with CR LF
                    if data != codec.CR:
                        return data
        except TimeoutError:
            self._count("timeouts")
            raise SIP2Timeout(f"no answer to {title} from {self.s.endpoint} within {self.s.timeout_s:g} s",
                              sent=True) from None
        except asyncio.IncompleteReadError:
            raise SIP2Unavailable(f"{self.s.endpoint} closed the connection during {title}", sent=True) from None
        except asyncio.LimitOverrunError:
            raise SIP2ProtocolError(f"answer to {title} is longer than {codec.MAX_FRAME} bytes without a "
                                    "carriage return: not SIP2?") from None
        except (ConnectionError, OSError) as exc:
            raise SIP2Unavailable(f"connection to {self.s.endpoint} lost during {title}: {exc}", sent=True) from None

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        return self._writer is not None

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 10
        return self._seq

    async def _ensure_connected(self, *, wait: bool = False) -> None:
        if self._writer is not None:
            return
        delay = self._retry_at - time.monotonic()
        if delay > 0 and wait:
            await asyncio.sleep(delay)
        elif delay > 0:
            raise SIP2Unavailable(f"{self.s.endpoint} unreachable ({self.last_error}); next attempt in {delay:.1f} s")
        try:
            async with asyncio.timeout(self.s.connect_timeout_s):
                await self._connect()
        except TimeoutError:
            self._count("connect_failures")
            self._fail(f"connecting to {self.s.endpoint} timed out after {self.s.connect_timeout_s:g} s",
                       backoff=True)
            raise SIP2Unavailable(self.last_error or "") from None
        except (OSError, SIP2Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._count("connect_failures")
            self._fail(f"cannot connect to {self.s.endpoint}: {reason}", backoff=True)
            if isinstance(exc, SIP2LoginRefused):
                raise
            raise SIP2Unavailable(self.last_error or "") from None
        self._count("connects")
        if not self.online:
            log.info("%s: connected to the library system at %s", self.name, self.s.endpoint)
        self.online = True
        self.last_error = None
        self._delay = min(0.5, self.s.reconnect_max_s)

    async def _connect(self) -> None:
        context = None
        if self.s.tls:
            context = ssl.create_default_context(cafile=str(self.s.ca_file) if self.s.ca_file else None)
        self._reader, self._writer = await asyncio.open_connection(self.s.host, self.s.port, ssl=context,
                                                                   limit=2 * codec.MAX_FRAME)
        self._seq = -1
        if self.s.login_user:
            password = self._password()
            seq = self._next_seq()
            frame = codec.encode(*codec.login(self.s.login_user, password, self.s.location_code), seq=seq,
                                 error_detection=self.s.error_detection, charset=self.s.charset)
            answer = await self._exchange(frame, codec.SPECS["93"].title, "94", seq)
            if answer.fixed["ok"] != "1":
                raise SIP2LoginRefused(f"the server refused the login of SIP2 user {self.s.login_user!r} "
                                       "(check login_user and login_password_file)")

    def _password(self) -> str:
        if self.s.login_password_file is None:
            return ""
        try:
            return self.s.login_password_file.read_text().strip()
        except OSError as exc:
            raise SIP2Error(f"cannot read login_password_file {self.s.login_password_file}: {exc.strerror}") from None

    def _fail(self, why: str, *, backoff: bool = False) -> None:
        """Drop the connection; after a failed connect, wait before the next attempt (capped doubling)."""
        self._drop()
        if self.online or why != self.last_error:
            log.warning("%s: library system %s: %s", self.name, self.s.endpoint, why)
        self.online = False
        self.last_error = why
        if backoff:
            self._retry_at = time.monotonic() + self._delay
            self._delay = min(self.s.reconnect_max_s, self._delay * 2)

    def _drop(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            self._count("disconnects")
            writer.close()

    async def close(self) -> None:
        writer = self._writer
        self._drop()
        self.online = False
        if writer is not None:
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _count(self, name: Counter) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.s.endpoint, "online": self.online, "last_error": self.last_error,
                "latency_ms": self.last_latency_ms, **self.stats}
