"""Card taps end to end: real reader bytes over a pty -> gateway -> Mosquitto -> ingest -> VictoriaMetrics.

Proves the privacy canary (no raw UID anywhere), the allow-list pushed as a signed command, and doors
that keep deciding while the uplink is down, with every decision arriving later.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from edugate.common.privacy import Pseudonymizer, load_or_create_key
from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.servers import Mosquitto
from tests.helpers import Collector, GatewayProcess, outbox_state, send_command, wait_async
from tests.vmquery import export

ALLOWED = bytes.fromhex("0A1B2C3D4E")  # canary UIDs: none of their spellings may appear outside the driver
DENIED = bytes.fromhex("0F00BA4411")


def spellings(uid: bytes) -> set[str]:
    """Every way a UID is commonly written: hex, colon hex, decimal of all / the last 4 / last 3 bytes,
    and the Wiegand-style facility,card pair printed on EM cards."""
    forms = {uid.hex(), uid.hex().upper(), ":".join(f"{b:02x}" for b in uid), ":".join(f"{b:02X}" for b in uid),
             str(int.from_bytes(uid, "big")), str(int.from_bytes(uid[-4:], "big")).zfill(10),
             f"{uid[-3]},{int.from_bytes(uid[-2:], 'big')}"}
    return {f for f in forms if len(f) >= 6}


def send(broker: Mosquitto, key: Path, name: str, args: dict) -> dict:
    return send_command(broker.url, key, "card-school", "gw-cards", name, args)


def gateway_config(tmp_path: Path, broker: Mosquitto, key: Path) -> dict:
    return {
        "school": "card-school", "gateway": "gw-cards",
        "uplink": {"port": broker.port, "health_interval_s": 3600},
        "privacy": {"secret_file": str(tmp_path / "gw" / "school.key")},
        "downlink": {"enabled": True, "public_keys": [f"{key}.pub.pem"]},
        "timetable": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "early_min": 0,
                      "periods": [{"name": "all-day", "start": "00:00", "end": "23:59:59"}]},
        "devices": [
            {"id": "lab2-door", "driver": "em4100", "room": "lab-2", "role": "door",
             "port": str(tmp_path / "ttyDOOR"), "debounce_s": 0.5},
            {"id": "r10a", "driver": "em4100", "room": "class-10a", "role": "attendance",
             "port": str(tmp_path / "ttyR10A"), "debounce_s": 0.5},
        ],
    }


def school_pseudonyms(tmp_path: Path) -> Pseudonymizer:
    return Pseudonymizer(load_or_create_key(tmp_path / "gw" / "school.key"))


async def test_taps_reach_central_as_pseudonyms_and_no_uid_leaks(
        mosquitto, victoria, ingest, central_key, tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    pseudonym = school_pseudonyms(tmp_path)  # the key the school holds (and central uses to build allow-lists)
    collector = Collector(mosquitto.port).start()
    async with EM4100Simulator(tmp_path / "ttyDOOR") as door, EM4100Simulator(tmp_path / "ttyR10A") as room:
        gw = GatewayProcess(tmp_path / "gw", gateway_config(tmp_path, mosquitto, central_key)).start()
        await wait_async(lambda: collector.states, 20, "the gateway online")
        answer = send(mosquitto, central_key, "access.allowlist.set",
                      {"version": 1, "lists": {"lab-2": [pseudonym(ALLOWED)]}})
        assert answer["status"] == "ok" and answer["result"]["version"] == 1
        await wait_async(lambda: gw.log().count(": reading cards") >= 2, 20, "both readers to open their ports")
        # Two taps at one reader are at least a few ms apart in life; the store keeps one sample per series
        # and millisecond (dedup), so taps in the same millisecond would count once there (documented).
        # Each next tap waits until the previous ones were published: stamped, so in a later millisecond.
        door.tap(ALLOWED, repeats=3)  # a held card sends several frames: one tap
        await wait_async(lambda: len(collector.records["event"]) >= 1, 20, "the first tap at the door")
        door.tap(DENIED)
        room.tap(ALLOWED)
        await wait_async(lambda: len(collector.records["event"]) >= 3, 20, "the second door tap and the room's")
        room.tap(DENIED, repeats=2)
        events = await wait_async(lambda: len(collector.records["event"]) >= 4 and collector.records["event"], 20,
                                  "four tap events")
        # the repeated frames were in the readers' buffers before the first tap was committed: once the outbox
        # holds nothing unacknowledged, a tap that escaped the debounce would have been published too
        await wait_async(lambda: not outbox_state(gw.outbox_path)[1], 20, "every record acknowledged")
        assert gw.stop() == 0
    taps = {(e["device"], e["data"]["card"]): e["data"] for e in events if e["type"] == "card_tap"}
    assert len(events) == 4, "each card counted once per reader (debounce)"
    assert taps[("lab2-door", pseudonym(ALLOWED))]["decision"] == "allow"
    assert taps[("lab2-door", pseudonym(DENIED))]["decision"] == "deny"
    assert taps[("r10a", pseudonym(ALLOWED))]["period"] == "all-day"
    assert "decision" not in taps[("r10a", pseudonym(DENIED))]

    # central counts taps per room and decision; no pseudonym is ever a label
    def stored() -> list | None:
        series = export(victoria.url, '{__name__="edugate_event_count",type="card_tap"}')
        return series if sum(len(s["values"]) for s in series) == 4 else None

    series = await wait_async(stored, 20, "4 taps in VictoriaMetrics")
    assert {(s["metric"]["room"], s["metric"].get("decision")) for s in series} == {
        ("lab-2", "allow"), ("lab-2", "deny"), ("class-10a", None)}

    # the canary scan: logs, the outbox files, everything that crossed the broker, the whole store
    everything = export(victoria.url, '{__name__=~".+"}')
    places = {
        "gateway log": gw.log(),
        "ingest log": ingest.read_text(errors="replace"),
        "outbox": b"".join(p.read_bytes() for p in (tmp_path / "gw").glob("outbox.sqlite*")).decode("latin-1"),
        "MQTT traffic": b"\n".join(collector.raw).decode("latin-1"),
        "VictoriaMetrics": json.dumps(everything),
    }
    assert len(places["MQTT traffic"]) > 500 and len(everything) > 0
    assert pseudonym(ALLOWED) in places["MQTT traffic"], "the scan must see what crossed the broker"
    for uid in (ALLOWED, DENIED):
        for form in spellings(uid):
            for where, text in places.items():
                assert form not in text, f"raw card UID ({form}) found in the {where}"
        assert "p1-" not in places["VictoriaMetrics"], "pseudonyms must not become series labels"
    collector.stop()


async def test_doors_decide_offline_and_every_decision_arrives_later(
        mosquitto, victoria, ingest, central_key, tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    pseudonym = school_pseudonyms(tmp_path)
    collector = Collector(mosquitto.port).start()
    async with EM4100Simulator(tmp_path / "ttyDOOR") as door, EM4100Simulator(tmp_path / "ttyR10A"):
        gw = GatewayProcess(tmp_path / "gw", gateway_config(tmp_path, mosquitto, central_key)).start()
        await wait_async(lambda: collector.states, 20, "the gateway online")
        send(mosquitto, central_key, "access.allowlist.set", {"version": 5, "lists": {"*": [pseudonym(ALLOWED)]}})
        mosquitto.stop()  # the uplink is down from here
        await wait_async(lambda: "uplink lost the broker" in gw.log(), 20, "the gateway to notice the outage")
        outage_start = int(time.time() * 1000)
        cards = [ALLOWED, DENIED] * 5
        for uid in cards:
            door.tap(uid)
            await asyncio.sleep(0.6)  # past the debounce window: every tap counts
        _, queued = outbox_state(gw.outbox_path)
        assert len(queued) >= len(cards), "the decisions wait in the outbox"
        mosquitto.start()
        await wait_async(lambda: len(collector.records["event"]) >= len(cards), 30, "every decision after the outage")
        await wait_async(lambda: not outbox_state(gw.outbox_path)[1], 20, "every PUBACK recorded (no redelivery)")
        assert gw.stop() == 0
    decisions = [(e["data"]["card"], e["data"]["decision"], e["data"]["allowlist_version"])
                 for e in sorted(collector.records["event"], key=lambda e: e["seq"])]
    expected = [(pseudonym(uid), "allow" if uid == ALLOWED else "deny", 5) for uid in cards]
    assert decisions == expected
    assert all(e["ts"] >= outage_start for e in collector.records["event"])
    assert len({e["seq"] for e in collector.records["event"]}) == len(cards)
    collector.stop()
