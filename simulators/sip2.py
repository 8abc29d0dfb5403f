"""A SIP2 server (the library system's side, "ACS") for tests and the demo: asyncio TCP, real frames.

It holds a small catalogue (items with barcode, title, circulation status and
who has them) and patrons, answers login (93), SC status (99), item
information (17), checkout (11), checkin (09) and patron status (23), checks
sequence numbers and checksums, asks for a resend (96) when a request arrives
corrupted, and resends its last answer on request (97). Every frame received
is logged in :attr:`Sip2Simulator.received` and every change of the catalogue
in :attr:`Sip2Simulator.executed` (to prove that a retry never checks an item
out twice). Faults on demand::

    async with Sip2Simulator(items=[SimItem("3011", "Dế Mèn phiêu lưu ký")],
                             patrons=[SimPatron("P1001", "Student")]) as ils:
        ils.corrupt_next(2)          # the next 2 answers carry a wrong checksum
        ils.ask_resend_next(1)       # the next request is answered with 96
        ils.delay_s = 1.0            # slow answers
        ils.stall_next("11")         # carry out the next checkout, then never answer it
        ils.drop_next("11")          # carry out the next checkout, then close the connection
        ils.drop_next("11", execute=False)   # close the connection instead of carrying it out
        await ils.down(); await ils.up()   # the ILS is unreachable, then back on the same port

From a shell (the demo's library system)::

    python -m edugate.simulators.sip2 --port 6001 --login edugate-gate:secret --login edugate-selfcheck-1:secret
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

from edugate.drivers.library import sip2_codec as codec
from edugate.drivers.library.sip2_codec import SIP2ChecksumError, SIP2FormatError

log = logging.getLogger(__name__)


@dataclass
class SimItem:
    barcode: str
    title: str
    status: str = "03"  # available
    charged_to: str | None = None
    due: str = ""
    security: str = "02"  # tattle-tape


@dataclass
class SimPatron:
    barcode: str
    name: str
    blocked: bool = False


@dataclass(frozen=True)
class Received:
    """One frame as the server got it (``fields``: first value of each field)."""

    code: str
    fields: dict[str, str]
    seq: int | None
    raw: bytes
    connection: int


@dataclass
class _Conn:
    number: int
    writer: asyncio.StreamWriter
    last_answer: bytes = b""
    logged_in: bool = False


@dataclass
class Sip2Simulator:
    items: list[SimItem] = field(default_factory=list)
    patrons: list[SimPatron] = field(default_factory=list)
    institution: str = "edugate-library"
    login: tuple[str, str] | dict[str, str] | None = ("edugate", "secret")
    """One SIP2 account (user, password), several {user: password}, or None: no login needed."""
    host: str = "127.0.0.1"
    port: int = 0
    charset: str = "cp850"
    error_detection: bool = True
    loan_days: int = 14
    delay_s: float = 0.0
    received: list[Received] = field(default_factory=list)
    executed: list[tuple[str, ...]] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.catalogue = {i.barcode: i for i in self.items}
        self.people = {p.barcode: p for p in self.patrons}
        self._corrupt = 0
        self._ask_resend = 0
        self._stall: Counter[str] = Counter()
        self._drop: Counter[str] = Counter()
        self._drop_before: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Sip2Simulator:
        await self.up()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.down()

    async def up(self) -> None:
        """Listen (again, on the same port)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Stop listening and close every connection: the library system is unreachable."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.close()
        if self._handlers:
            _, pending = await asyncio.wait(self._handlers, timeout=0.2)
            for task in pending:
                task.cancel()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await server.wait_closed()

    # ------------------------------------------------------------------ faults and inspection

    def corrupt_next(self, n: int = 1) -> None:
        """The next ``n`` answers (resends included) carry a wrong checksum."""
        self._corrupt += n

    def ask_resend_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests with "request SC resend" (96) instead of carrying them out."""
        self._ask_resend += n

    def stall_next(self, code: str, n: int = 1) -> None:
        """Carry out the next ``n`` requests with this code, then never answer them."""
        self._stall[code] += n

    def drop_next(self, code: str, n: int = 1, *, execute: bool = True) -> None:
        """Close the connection on the next ``n`` requests with this code, without answering: after carrying
        them out (the answer is lost), or with ``execute=False`` before (the request is lost)."""
        (self._drop if execute else self._drop_before)[code] += n

    def count(self, code: str, item: str | None = None) -> int:
        """Frames received with this code (and item barcode)."""
        return sum(r.code == code and (item is None or r.fields.get("AB") == item) for r in self.received)

    async def wait_received(self, code: str, n: int = 1, within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while self.count(code) < n:
                await self._changed.wait()

    # ------------------------------------------------------------------ the protocol

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Conn(self.connections, writer)
        self._open.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            while True:
                try:
                    frame = await reader.readuntil(codec.CR)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                if not await self._handle(conn, frame.strip(b"\n")):
                    return
        except asyncio.CancelledError:
            return  # the simulator is shutting down (a handler task must not end cancelled on Python 3.11)
        finally:
            self._open.discard(writer)
            self._handlers.discard(task)
            writer.close()

    async def _handle(self, conn: _Conn, frame: bytes) -> bool:
        """Answer one frame; False closes the connection."""
        try:
            msg = codec.parse(frame, charset=self.charset, require_checksum=self.error_detection)
        except SIP2ChecksumError:
            log.info("sip2 sim: corrupted request; asking for a resend (96)")
            self._record(Received("??", {}, None, frame, conn.number))
            await self._send(conn, codec.encode("96", error_detection=self.error_detection), remember=False)
            return True
        except SIP2FormatError as exc:
            log.warning("sip2 sim: bad request: %s", exc)
            self._record(Received("??", {}, None, frame, conn.number))
            return False
        self._record(Received(msg.code, {k: v[0] for k, v in msg.fields.items()}, msg.seq, frame, conn.number))
        if msg.code == "97":
            await self._send(conn, conn.last_answer, remember=False)
            return True
        if self._ask_resend > 0 and msg.code != "93":
            self._ask_resend -= 1
            await self._send(conn, codec.encode("96", error_detection=self.error_detection), remember=False)
            return True
        if self.login is not None and msg.code not in ("93", "99") and not conn.logged_in:
            log.warning("sip2 sim: request %s before login; closing", msg.code)
            return False
        if self._drop_before[msg.code] > 0:
            self._drop_before[msg.code] -= 1
            return False
        code, fixed, fields = self._answer(conn, msg)
        if self._stall[msg.code] > 0:
            self._stall[msg.code] -= 1
            return True  # carried out, never answered
        if self._drop[msg.code] > 0:
            self._drop[msg.code] -= 1
            return False
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        seq = msg.seq if msg.seq is not None else 0
        answer = codec.encode(code, fixed, fields, seq=seq, error_detection=self.error_detection,
                              charset=self.charset)
        await self._send(conn, answer)
        return True

    async def _send(self, conn: _Conn, frame: bytes, *, remember: bool = True) -> None:
        if remember:
            conn.last_answer = frame
        if self._corrupt > 0 and b"AZ" in frame:
            self._corrupt -= 1
            at = frame.rindex(b"AZ") + 2
            bad = f"{(int(frame[at:at + 4], 16) + 1) & 0xFFFF:04X}".encode()
            frame = frame[:at] + bad + frame[at + 4:]
        with contextlib.suppress(ConnectionError):
            conn.writer.write(frame)
            await conn.writer.drain()

    def _record(self, received: Received) -> None:
        self.received.append(received)
        self._changed.set()
        self._changed = asyncio.Event()

    def _answer(self, conn: _Conn, msg: codec.Message) -> tuple[str, list[str], list[tuple[str, str | None]]]:
        now = codec.sip_date()
        inst = [("AO", self.institution)]
        if msg.code == "93":
            accounts = dict([self.login]) if isinstance(self.login, tuple) else self.login
            conn.logged_in = accounts is None or accounts.get(msg.get("CN")) == msg.get("CO")
            return "94", ["1" if conn.logged_in else "0"], []
        if msg.code == "99":
            return "98", ["Y", "Y", "Y", "Y", "N", "N", "030", "003", now, "2.00"], [
                *inst, ("AM", "EduGate simulated library"), ("BX", "YYYYYYYYYYYYYYYY")]
        item = self.catalogue.get(msg.get("AB"))
        item_fields = [("AB", msg.get("AB")), ("AJ", item.title if item else "")]
        if msg.code == "17":
            if item is None:
                return "18", ["01", "01", "01", now], [*item_fields, ("AF", "Item not found")]
            return "18", [item.status, item.security, "01", now], [*item_fields, ("AH", item.due or None),
                                                                   ("AQ", "library"), ("AP", "library")]
        if msg.code == "11":
            return self._checkout(msg, item, now, inst, item_fields)
        if msg.code == "09":
            if item is None:
                return "10", ["0", "N", "U", "N", now], [*inst, *item_fields, ("AQ", ""), ("AF", "Item not found")]
            was = item.charged_to
            if was is not None:
                item.status, item.charged_to, item.due = "03", None, ""
                self.executed.append(("checkin", item.barcode))
            note = None if was else "Item was not checked out"
            return "10", ["1", "Y", "N", "N", now], [*inst, *item_fields, ("AQ", "library"), ("AF", note)]
        patron = self.people.get(msg.get("AA"))  # 23
        status = ("Y" if patron is None or patron.blocked else " ") + " " * 13
        return "24", [status, "001", now], [*inst, ("AA", msg.get("AA")), ("AE", patron.name if patron else ""),
                                            ("BL", "Y" if patron else "N")]

    def _checkout(self, msg: codec.Message, item: SimItem | None, now: str, inst: list,
                  item_fields: list) -> tuple[str, list[str], list[tuple[str, str | None]]]:
        patron_id = msg.get("AA")
        patron = self.people.get(patron_id)
        head = [*inst, ("AA", patron_id), *item_fields]
        refuse = None
        if patron is None:
            refuse = "Patron not found"
        elif patron.blocked:
            refuse = "Patron blocked: please see the librarian"
        elif item is None:
            refuse = "Item not found"
        elif item.charged_to not in (None, patron_id):
            refuse = "Item checked out to another patron"
        if refuse is not None or item is None:
            return "12", ["0", "N", "N", "N", now], [*head, ("AH", ""), ("AF", refuse)]
        renewal = item.charged_to == patron_id  # like Koha: checking out one's own loan renews it
        item.status, item.charged_to = "04", patron_id
        item.due = (dt.date.today() + dt.timedelta(days=self.loan_days)).isoformat()
        self.executed.append(("renew" if renewal else "checkout", item.barcode, patron_id))
        return "12", ["1", "Y" if renewal else "N", "N", "Y", now], [*head, ("AH", item.due)]


DEMO_ITEMS = [
    SimItem("30112000000017", "Dế Mèn phiêu lưu ký"),
    SimItem("30112000000024", "Tuổi thơ dữ dội"),
    SimItem("30112000000031", "Introduction to Algorithms"),
    SimItem("30112000000048", "Sách giáo khoa Vật lý 10"),
    SimItem("30112000000055", "Cho tôi xin một vé đi tuổi thơ", status="04", charged_to="P00002", due="2026-12-01"),
]
DEMO_PATRONS = [SimPatron("P00001", "Student One"), SimPatron("P00002", "Student Two"),
                SimPatron("P00003", "Student Three", blocked=True)]


async def _serve(args: argparse.Namespace) -> None:
    accounts = dict(login.partition(":")[::2] for login in args.login if login)
    sim = Sip2Simulator(DEMO_ITEMS, DEMO_PATRONS, host=args.host, port=args.port, charset=args.charset,
                        login=accounts or None)
    async with sim:
        print(f"SIP2 simulator on {sim.host}:{sim.port} ({len(sim.items)} items, {len(sim.patrons)} patrons); "
              "Ctrl-C to stop", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edugate.simulators.sip2", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6001)
    parser.add_argument("--login", action="append", default=[],
                        help="a SIP2 account user:password (repeatable; none: no login needed)")
    parser.add_argument("--charset", default="utf-8")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
