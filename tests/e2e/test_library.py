"""The smart library end to end: a gate and a self-check station (ptys) and the SIP2 library system (TCP)
-> the gateway (a subprocess) -> Mosquitto -> ingest -> VictoriaMetrics -> ``edugate library-report``.

Proves: loans over SIP2 with the patron barcode found locally from the card's pseudonym; pass/alarm from
the library system and the offline fallback when it is down; visitor counts that reach central after a
broker outage; the monthly report; and the privacy canary (card UID, patron barcode, patron name and item
ids in no log, outbox, MQTT message or stored series).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import time
from pathlib import Path

from edugate.common.privacy import Pseudonymizer, load_or_create_key
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from edugate.simulators.sip2 import SimItem, SimPatron, Sip2Simulator
from edugate.simulators.station import GateSimulator, StationSimulator
from tests.e2e.test_cards import spellings
from tests.helpers import REPO, Collector, GatewayProcess, outbox_state, wait_async
from tests.vmquery import export

SCHOOL = "library-school"
CARD = bytes.fromhex("0A1B2C3D4E")  # canaries: none of these may leave the gateway
PATRON, PATRON_NAME = "P7654321", "Nguyen Van Canary"
BOOK, SHELF_BOOK, SECURED_BOOK = "30112000000017", "30112000000024", "30112000000031"


def gateway_config(tmp_path: Path, broker: Mosquitto, ils: Sip2Simulator) -> dict:
    sip2 = {"host": "127.0.0.1", "port": ils.port, "institution_id": "lib", "charset": "utf-8",
            "reconnect_max_s": 0.3}
    (tmp_path / "gate.pw").write_text("gate-secret\n")
    (tmp_path / "sc.pw").write_text("sc-secret\n")
    return {
        "school": SCHOOL, "gateway": "gw-library",
        "uplink": {"port": broker.port, "health_interval_s": 3600},
        "privacy": {"secret_file": str(tmp_path / "gw" / "school.key")},
        "devices": [
            {"id": "gate-1", "driver": "library-gate", "room": "library", "port": str(tmp_path / "ttyGATE"),
             "sip2": sip2 | {"login_user": "gate", "login_password_file": str(tmp_path / "gate.pw")},
             "count_interval_s": 1, "tag_debounce_s": 0.5},
            {"id": "selfcheck-1", "driver": "library-selfcheck", "room": "library", "port": str(tmp_path / "ttySC"),
             "sip2": sip2 | {"login_user": "selfcheck", "login_password_file": str(tmp_path / "sc.pw"),
                             "timeout_s": 2},
             "patrons_file": str(tmp_path / "gw" / "library-patrons.csv")},
        ],
    }


def read_text(path: Path) -> str:
    return path.read_bytes().decode("latin-1")


def visitors_stored(vm: VictoriaMetrics) -> tuple[int, int]:
    totals = []
    for name in ("edugate_visitors_in", "edugate_visitors_out"):
        totals.append(int(sum(sum(s["values"]) for s in export(vm.url, f'{{__name__="{name}",school="{SCHOOL}"}}'))))
    return totals[0], totals[1]


async def test_library_end_to_end_with_outages_and_privacy_canary(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, ingest: Path, tmp_path: Path) -> None:
    gw_dir = tmp_path / "gw"
    gw_dir.mkdir()
    pseudonym = Pseudonymizer(load_or_create_key(gw_dir / "school.key"))
    # what the library makes with `edugate pseudonym --roster` (student_id = the library's patron barcode)
    (gw_dir / "library-patrons.csv").write_text(f"student_id,pseudonym\n{PATRON},{pseudonym(CARD)}\n")
    items = [SimItem(BOOK, "Dế Mèn phiêu lưu ký"), SimItem(SHELF_BOOK, "Tuổi thơ dữ dội"),
             SimItem(SECURED_BOOK, "Sách giáo khoa Vật lý 10")]
    collector = Collector(mosquitto.port, client_id="library-collector").start()
    async with (Sip2Simulator(items, [SimPatron(PATRON, PATRON_NAME)], charset="utf-8",
                              login={"gate": "gate-secret", "selfcheck": "sc-secret"}) as ils,
                GateSimulator(tmp_path / "ttyGATE") as gate, StationSimulator(tmp_path / "ttySC") as station):
        gw = GatewayProcess(gw_dir, gateway_config(tmp_path, mosquitto, ils)).start()
        try:
            await wait_async(lambda: collector.states, 20, "the gateway online")
            await ils.wait_received("99", within_s=20)  # the gate's keepalive: connected and logged in

            # a loan at the self-check: card -> pseudonym -> the library's patron barcode -> SIP2 checkout
            station.card(CARD)
            await station.wait_line(lambda line: line.startswith("SHOW Hello"), within_s=10)
            station.item(BOOK)
            await station.wait_line(lambda line: line == f"AFI {BOOK} C2")
            station.done()
            await station.wait_line(lambda line: line == "CUT")
            assert ils.executed == [("checkout", BOOK, PATRON)]

            # the gate: the loaned book passes, a book from the shelf alarms; people walk in and out
            gate.walk_in(3)
            gate.walk_out()
            gate.tag(BOOK, afi="C2")
            assert await gate.next_line() == "PASS"
            gate.tag(SHELF_BOOK, afi="C2")  # the tag says "checked out", the library system knows better
            assert await gate.next_line() == "ALARM"

            # the broker goes away; visitors keep coming; then the library system goes away too
            _, before = outbox_state(gw.outbox_path)
            mosquitto.stop()
            gate.walk_in(2)
            await ils.down()
            started = time.monotonic()
            gate.tag(SECURED_BOOK, afi="07")
            assert await gate.next_line() == "ALARM"  # decided from the tag's security bit
            assert time.monotonic() - started < 1.0
            await wait_async(lambda: len(outbox_state(gw.outbox_path)[1]) >= len(before) + 3, 10,
                             "visitor readings and the offline alarm waiting in the outbox")
            mosquitto.start()
            await ils.up()
            await wait_async(lambda: visitors_stored(victoria) == (5, 1), 30, "5 in / 1 out stored centrally")
            await wait_async(lambda: len({e["seq"] for e in collector.records["event"] if e["type"] == "gate_alarm"})
                             == 2, 20, "both alarms")
            assert gw.stop() == 0
        finally:
            if gw.proc is not None:  # a failed assertion must not leave the gateway running
                gw.kill()

    events = sorted({e["seq"]: e for e in collector.records["event"]}.values(), key=lambda e: e["seq"])  # QoS 1
    loans = [e for e in events if e["type"] == "library_loan"]
    alarms = [e for e in events if e["type"] == "gate_alarm"]
    assert len(loans) == 1 and loans[0]["data"] == {"source": "rfid", "renewal": False, "recovered": False}
    assert [(a["data"]["reason"], a["data"]["offline"]) for a in alarms] == [("not_charged", False),
                                                                              ("secured_tag", True)]

    # central: the monthly report for this month
    month = dt.datetime.now(dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=7))).strftime("%Y-%m")

    def report() -> list[dict] | None:
        out = subprocess.run([sys.executable, "-m", "edugate.central.library_report", "--store-url",
                             victoria.url, "--month",
                              month, "--format", "csv", "--school", SCHOOL, "--k", "2", "--round-to", "1"],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        return rows if rows and rows[0]["gate_alarms"] == "2" and rows[0]["loans"] == "" else None

    rows = await wait_async(report, 20, "the report to show the loan (suppressed: one, below k) and the alarms")
    assert rows == [{"school": SCHOOL, "month": month, "visitors_in": "5", "visitors_out": "", "loans": "",
                     "returns": "0", "gate_alarms": "2"}]

    # the canary scan: logs, the outbox files, everything that crossed the broker, the whole store
    everything = json.dumps(export(victoria.url, '{__name__=~".+"}'))
    places = {
        "gateway log": gw.log(),
        "ingest log": read_text(ingest),
        "outbox": "".join(read_text(p) for p in sorted(gw_dir.glob("outbox.sqlite*"))),
        "MQTT traffic": b"\n".join(collector.raw).decode("latin-1"),
        "VictoriaMetrics": everything,
    }
    assert "library_loan" in places["MQTT traffic"] and "visitors_in" in everything
    canaries = {*spellings(CARD), PATRON, PATRON_NAME, BOOK, SHELF_BOOK, SECURED_BOOK, pseudonym(CARD)}
    for canary in canaries:
        for where, text in places.items():
            assert canary not in text, f"{canary!r} found in the {where}"
    assert "p1-" not in everything, "pseudonyms must not become series labels"
    collector.stop()
