"""The SIP2 client against the SIP2 server simulator: real exchanges over TCP, and every failure on demand.

Waits are on the simulator's received-message log or on the client's answers, never fixed sleeps (the
only timing is the client's own timeouts, kept at a few hundred milliseconds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edugate.drivers.library import sip2_codec as codec
from edugate.drivers.library.sip2 import (
    Sip2Client,
    SIP2LoginRefused,
    SIP2OutcomeUnknown,
    SIP2ProtocolError,
    Sip2Settings,
    SIP2Unavailable,
)
from edugate.simulators.servers import free_port
from edugate.simulators.sip2 import SimItem, SimPatron, Sip2Simulator

PATRON = "P7654321"
BLOCKED = "P0000666"
TITLE = "Dế Mèn phiêu lưu ký"


def catalogue() -> tuple[list[SimItem], list[SimPatron]]:
    return ([SimItem("3011", TITLE), SimItem("3012", "Tuổi thơ dữ dội"),
             SimItem("3013", "Lost book", status="04", charged_to="P0000001", due="2026-12-01")],
            [SimPatron(PATRON, "Nguyễn Văn A"), SimPatron(BLOCKED, "Blocked", blocked=True)])


@pytest.fixture
async def ils() -> AsyncIterator[Sip2Simulator]:
    items, patrons = catalogue()
    async with Sip2Simulator(items, patrons, charset="utf-8") as sim:
        yield sim


def settings(sim: Sip2Simulator, tmp_path: Path, **kw) -> Sip2Settings:
    pw = tmp_path / "sip2.pw"
    pw.write_text("secret\n")
    base = {"host": "127.0.0.1", "port": sim.port, "institution_id": "lib", "login_user": "edugate",
            "login_password_file": str(pw), "charset": "utf-8", "timeout_s": 0.3, "connect_timeout_s": 1.0,
            "reconnect_max_s": 0.5}
    return Sip2Settings(**(base | kw))


@pytest.fixture
async def client(ils: Sip2Simulator, tmp_path: Path) -> AsyncIterator[Sip2Client]:
    c = Sip2Client(settings(ils, tmp_path))
    yield c
    await c.close()


# ---------------------------------------------------------------- happy paths, one per message


async def test_login_and_sc_status(client: Sip2Client, ils: Sip2Simulator) -> None:
    status = await client.sc_status()
    assert status.online and status.checkout_ok and status.protocol_version == "2.00"
    assert [r.code for r in ils.received] == ["93", "99"]
    assert ils.received[0].fields["CN"] == "edugate" and ils.received[0].fields["CO"] == "secret"
    assert [r.seq for r in ils.received] == [0, 1]
    assert client.online and client.status()["connects"] == 1


async def test_item_information(client: Sip2Client) -> None:
    info = await client.item_information("3011")
    assert (info.title, info.circulation_status, info.charged, info.found) == (TITLE, "03", False, True)
    lent = await client.item_information("3013")
    assert lent.charged and lent.due_date == "2026-12-01"
    unknown = await client.item_information("9999")
    assert not unknown.found and unknown.screen_message == "Item not found"


async def test_checkout_checkin_and_refusals(client: Sip2Client, ils: Sip2Simulator) -> None:
    loan = await client.checkout(PATRON, "3011")
    assert loan.ok and loan.title == TITLE and loan.due_date and loan.confirmed_by == "checkout"
    assert (await client.item_information("3011")).charged
    other = await client.checkout(PATRON, "3013")
    assert not other.ok and other.screen_message == "Item checked out to another patron"
    blocked = await client.checkout(BLOCKED, "3012")
    assert not blocked.ok and "blocked" in blocked.screen_message
    back = await client.checkin("3011", location="library")
    assert back.ok and back.resensitize and back.title == TITLE
    assert ils.executed == [("checkout", "3011", PATRON), ("checkin", "3011")]
    assert ils.received[-1].fields["AP"] == "library"


async def test_patron_status(client: Sip2Client) -> None:
    ok = await client.patron_status(PATRON)
    assert ok.valid and ok.can_borrow
    blocked = await client.patron_status(BLOCKED)
    assert blocked.valid and not blocked.can_borrow
    assert not (await client.patron_status("P-unknown")).valid


@pytest.mark.parametrize("charset", ["cp850", "latin-1", "utf-8"])
async def test_character_sets(charset: str, tmp_path: Path) -> None:
    title = {"cp850": "Für Élise", "latin-1": "Für Élise", "utf-8": TITLE}[charset]
    async with Sip2Simulator([SimItem("1", title)], [], charset=charset) as sim:
        c = Sip2Client(settings(sim, tmp_path, charset=charset))
        assert (await c.item_information("1")).title == title
        await c.close()


async def test_one_request_in_flight_per_connection(client: Sip2Client, ils: Sip2Simulator) -> None:
    ils.delay_s = 0.02
    infos = await asyncio.gather(*(client.item_information(i) for i in ("3011", "3012", "3013") * 3))
    assert len(infos) == 9
    seqs = [r.seq for r in ils.received]
    assert seqs == [i % 10 for i in range(len(seqs))], "strictly one after the other, in sequence"


# ---------------------------------------------------------------- checksums and resends, both ways


async def test_bad_checksum_from_the_server_is_asked_again(client: Sip2Client, ils: Sip2Simulator) -> None:
    await client.sc_status()
    ils.corrupt_next(2)
    info = await client.item_information("3011")
    assert info.title == TITLE
    assert [r.code for r in ils.received[2:]] == ["17", "97", "97"]
    assert client.stats["resends_asked"] == 2 and client.stats["bad_answers"] == 2


async def test_answers_that_stay_corrupted_give_a_clear_error(client: Sip2Client, ils: Sip2Simulator) -> None:
    await client.sc_status()
    ils.corrupt_next(100)
    with pytest.raises(SIP2ProtocolError, match=r"answer to item information \(17\) still corrupted after 3 resend "
                                                r"requests: .*field AZ \(checksum\)"):
        await client.item_information("3011")
    assert ils.count("97") == 3
    assert not client.connected, "a connection in an unknown state is dropped"


async def test_server_asking_for_a_resend_gets_the_request_again(client: Sip2Client, ils: Sip2Simulator) -> None:
    await client.sc_status()
    ils.ask_resend_next(2)
    loan = await client.checkout(PATRON, "3011")
    assert loan.ok
    assert [r.code for r in ils.received[2:]] == ["17", "17", "17", "11"]  # 96, 96, then answered
    assert ils.executed == [("checkout", "3011", PATRON)]
    ils.ask_resend_next(10)
    with pytest.raises(SIP2ProtocolError, match=r"the server asked 4 times to resend item information \(17\)"):
        await client.item_information("3011")


async def test_the_simulator_asks_for_a_corrupted_request_again(ils: Sip2Simulator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ils.port)
    good = codec.encode("99", ["0", "080", "2.00"], seq=0)
    writer.write(good[:-5] + b"0000\r")
    assert await reader.readuntil(b"\r") == b"96AZFEF6\r"
    writer.write(good)
    assert (await reader.readuntil(b"\r")).startswith(b"98")
    writer.close()


# ---------------------------------------------------------------- lost answers: never a double checkout


async def test_checkout_whose_answer_never_comes_is_not_sent_again(client: Sip2Client, ils: Sip2Simulator,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ils.stall_next("11")  # the ILS lends the book, then stops answering
    loan = await client.checkout(PATRON, "3011")
    assert loan.ok and loan.confirmed_by == "item_information" and loan.title == TITLE
    assert ils.executed == [("checkout", "3011", PATRON)], "lent exactly once"
    assert ils.count("11") == 1, "the checkout was never sent twice"
    assert [r.code for r in ils.received if r.code in ("11", "17")] == ["17", "11", "17"]
    assert client.stats["recovered_checkouts"] == 1 and client.stats["timeouts"] == 1
    assert PATRON not in caplog.text


async def test_checkout_whose_connection_drops_after_it_was_done(client: Sip2Client, ils: Sip2Simulator) -> None:
    ils.drop_next("11")
    loan = await client.checkout(PATRON, "3012")
    assert loan.ok and loan.confirmed_by == "item_information"
    assert ils.executed == [("checkout", "3012", PATRON)] and ils.count("11") == 1


async def test_checkout_lost_before_the_ils_did_it_is_sent_once_more(client: Sip2Client, ils: Sip2Simulator) -> None:
    ils.drop_next("11", execute=False)
    loan = await client.checkout(PATRON, "3012")
    assert loan.ok and loan.confirmed_by == "checkout"
    assert ils.count("11") == 2 and ils.executed == [("checkout", "3012", PATRON)]


async def test_lost_answer_for_an_item_already_on_loan_is_an_unknown_outcome(client: Sip2Client,
                                                                           ils: Sip2Simulator) -> None:
    await client.checkout(PATRON, "3011")
    ils.stall_next("11")  # the patron checks it out again (a renewal), and the answer is lost
    with pytest.raises(SIP2OutcomeUnknown, match="already on loan before: ask at the desk"):
        await client.checkout(PATRON, "3011")
    assert ils.count("11") == 2, "still not resent"


async def test_reads_are_retried_after_a_timeout(client: Sip2Client, ils: Sip2Simulator) -> None:
    ils.stall_next("17")
    info = await client.item_information("3011")
    assert info.title == TITLE and ils.count("17") == 2 and ils.connections == 2


# ---------------------------------------------------------------- the ILS down, slow, refusing the login


async def test_unreachable_ils_fails_fast_and_reconnects_with_backoff(ils: Sip2Simulator, tmp_path: Path) -> None:
    c = Sip2Client(settings(ils, tmp_path, reconnect_max_s=0.4))
    await c.sc_status()
    await ils.down()
    with pytest.raises(SIP2Unavailable):
        await c.item_information("3011")
    started = time.monotonic()
    with pytest.raises(SIP2Unavailable, match=r"unreachable .* next attempt in"):
        await c.item_information("3011")
    assert time.monotonic() - started < 0.05, "in back-off a request fails at once"
    await ils.up()
    deadline = time.monotonic() + 5
    while True:  # the client is in back-off for at most reconnect_max_s
        try:
            info = await c.item_information("3011")
            break
        except SIP2Unavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert info.title == TITLE and c.online
    assert c.stats["connect_failures"] >= 1
    await c.close()


async def test_slow_ils_times_out(client: Sip2Client, ils: Sip2Simulator) -> None:
    await client.sc_status()
    ils.delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(SIP2Unavailable, match=r"no answer to item information \(17\) .* within 0.3 s"):
        await client.item_information("3011", connect=False)
    assert time.monotonic() - started < 0.6
    with pytest.raises(SIP2Unavailable, match="not connected"):
        await client.item_information("3011", connect=False)


async def test_refused_login(ils: Sip2Simulator, tmp_path: Path) -> None:
    (tmp_path / "wrong").write_text("nope")
    c = Sip2Client(settings(ils, tmp_path).model_copy(update={"login_password_file": tmp_path / "wrong"}))
    with pytest.raises(SIP2LoginRefused, match="refused the login of SIP2 user 'edugate'"):
        await c.sc_status()
    assert "nope" not in str(c.last_error)


async def test_nothing_listening(tmp_path: Path) -> None:
    c = Sip2Client(Sip2Settings(host="127.0.0.1", port=free_port(), institution_id="lib", timeout_s=0.2))
    with pytest.raises(SIP2Unavailable, match=r"cannot connect to 127.0.0.1:\d+: Connect call failed|refused"):
        await c.sc_status()
    assert not c.online


def test_settings_reject_unknown_charsets() -> None:
    with pytest.raises(ValueError, match="unknown character set 'klingon'"):
        Sip2Settings(host="h", institution_id="x", charset="klingon")
