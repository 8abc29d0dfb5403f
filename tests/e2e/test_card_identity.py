"""One card, one pseudonym at every reader of a school (issue 22), through the real gateway.

The gateway runs in this process (its outbox, pipeline, services and uplink as in production) against a real
Mosquitto, an ingest worker and VictoriaMetrics. The serial readers (EM4100, PN532) are simulators on real ptys;
the GPIO Wiegand readers and the USB keyboard wedges, hardware this machine lacks, are fed at their lowest layer
(timestamped D0/D1 edges, evdev key events) by their simulators.

The school's rule keeps the low 24 bits of a 125 kHz card (a Wiegand-26 reader at the gate sees no more) and the
whole UID of a 13.56 MHz card. One 125 kHz card read by an EM4100, a Wiegand-26, a Wiegand-34 and a hex wedge,
and one 13.56 MHz card read by a PN532, a decimal little-endian wedge and a Wiegand-34 reader that sends the UID
reversed, each give one pseudonym; the bus sees a card board at one technology and alight at another; the door
allow-list pushed once admits each card at every door; no spelling of any UID is found anywhere.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edugate.common.privacy import Pseudonymizer, load_or_create_key, read_rule_record
from edugate.gateway.config import load_config
from edugate.gateway.runtime.gateway import Gateway
from edugate.simulators.em4100 import EM4100Simulator
from edugate.simulators.pn532 import PN532Simulator
from edugate.simulators.wedge import FakeKeyboard
from edugate.simulators.wiegand import FakeWiegandReader
from tests.helpers import Collector, outbox_state, send_command, wait_async, wait_for
from tests.vmquery import export

PROX = bytes.fromhex("0A1B2C3D4E")  # a 125 kHz card: its 40-bit EM ID (facility 0x2C = 44, number 0x3D4E = 15694)
OTHER = bytes.fromhex("0A1B2C77AB")  # another 125 kHz card: not on the allow-list, left on the bus
NFC = bytes.fromhex("04A22B1C")  # a 13.56 MHz card: its 4-byte UID in card order

SCHOOL, GATEWAY = "card-school", "gw-cards"


def spellings(uid: bytes) -> set[str]:
    """Every common way to write a card number: the whole ID and its low 4 and 3 bytes, each in hex (both cases,
    colons), in decimal (plain and ten digits), reversed; the facility,number pair printed on 125 kHz cards."""
    forms: set[str] = set()
    for part in {uid, uid[-4:], uid[-3:], uid[::-1], uid[:4][::-1]}:
        forms |= {part.hex(), part.hex().upper(), ":".join(f"{b:02x}" for b in part),
                  ":".join(f"{b:02X}" for b in part), str(int.from_bytes(part, "big")),
                  str(int.from_bytes(part, "big")).zfill(10)}
    forms.add(f"{uid[-3]},{int.from_bytes(uid[-2:], 'big')}")
    return {f for f in forms if len(f) >= 6}


def config(tmp_path: Path, broker_port: int, central_key: Path) -> dict[str, Any]:
    prox = {"family": "prox"}
    return {
        "school": SCHOOL, "gateway": GATEWAY,
        "uplink": {"port": broker_port, "health_interval_s": 3600},
        "storage": {"path": str(tmp_path / "gw" / "outbox.sqlite")},
        "privacy": {"secret_file": str(tmp_path / "gw" / "school.key"),
                    # the key was provisioned before the first start: its pseudonyms so far count as made 'as read'
                    # (version 0), and the school's first rule says, on purpose, that it replaces that
                    "card_identity": {"version": 1, "prox_bits": 24, "nfc_bytes": "all", "replaces": 0}},
        "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
        "bus": {"route_end_times": []},
        "devices": [
            # the 125 kHz card's readers
            {"id": "lab-door", "driver": "em4100", "room": "lab-2", "role": "door", "port": str(tmp_path / "ttyLAB")},
            {"id": "gate", "driver": "wiegand", "room": "main-gate", "role": "door", "d0_line": 17, "d1_line": 27,
             "formats": [26], "card_identity": prox},
            {"id": "bus-front", "driver": "wiegand", "room": "bus-07", "role": "bus", "direction": "in",
             "d0_line": 5, "d1_line": 6, "formats": [34], "card_identity": prox},
            {"id": "bus-rear", "driver": "em4100", "room": "bus-07", "role": "bus", "direction": "out",
             "port": str(tmp_path / "ttyREAR")},
            {"id": "library-desk", "driver": "wedge", "room": "library", "role": "library", "format": "hex",
             "device_path": "/dev/input/by-id/usb-desk-event-kbd", "card_identity": prox},
            # the 13.56 MHz card's readers
            {"id": "bus-nfc", "driver": "pn532", "room": "bus-07", "role": "bus", "direction": "in",
             "port": str(tmp_path / "ttyNFC")},
            {"id": "bus-nfc-out", "driver": "wedge", "room": "bus-07", "role": "bus", "direction": "out",
             "format": "decimal", "uid_bytes": 4, "byte_order": "little",
             "device_path": "/dev/input/by-id/usb-busout-event-kbd", "card_identity": {"family": "nfc"}},
            {"id": "lab-nfc", "driver": "wiegand", "room": "lab-2", "role": "door", "d0_line": 12, "d1_line": 13,
             "formats": [34], "card_identity": {"family": "nfc", "byte_order": "reversed"}},
        ],
    }


def files(folder: Path, pattern: str) -> str:
    return b"".join(p.read_bytes() for p in sorted(folder.glob(pattern))).decode("latin-1")


def places_to_scan(gateway_log: Path, ingest_log: Path, workdir: Path, collector: Collector,
                   store: list) -> dict[str, str]:
    return {
        "gateway log": gateway_log.read_text(errors="replace"),
        "ingest log": ingest_log.read_text(errors="replace"),
        "outbox": files(workdir, "outbox.sqlite*"),
        "gateway's other files": files(workdir, "school.key.*"),  # the recorded rule (the key itself is no UID)
        "MQTT traffic": b"\n".join(collector.raw).decode("latin-1"),
        "VictoriaMetrics": json.dumps(store),
        "central event store": files(ingest_log.parent, "events.sqlite*"),
    }


@pytest.fixture
def gateway_log(tmp_path: Path) -> Iterator[Path]:
    """Everything the in-process gateway logs (every level), in a file the canary scan reads."""
    path = tmp_path / "gateway.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old_level)
    handler.close()


async def test_one_card_one_pseudonym_at_every_reader(
        mosquitto, victoria, ingest, central_key, gateway_log: Path, tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    key = load_or_create_key(tmp_path / "gw" / "school.key")  # the school's key, provisioned before the gateway
    pseudonym = Pseudonymizer(key)
    # the identities under the school's rule, computed from the card numbers as the school knows them
    p_prox, p_other, p_nfc = pseudonym(PROX[-3:]), pseudonym(OTHER[-3:]), pseudonym(NFC)
    path = tmp_path / "gw" / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, mosquitto.port, central_key), sort_keys=False))
    cfg = load_config(path)  # validated as `edugate check` would

    collector = Collector(mosquitto.port).start()
    gate, bus_front, lab_nfc = FakeWiegandReader(), FakeWiegandReader(), FakeWiegandReader()
    desk = FakeKeyboard("/dev/input/by-id/usb-desk-event-kbd")
    bus_out = FakeKeyboard("/dev/input/by-id/usb-busout-event-kbd")
    async with EM4100Simulator(tmp_path / "ttyLAB") as lab, EM4100Simulator(tmp_path / "ttyREAR") as rear, \
            PN532Simulator(tmp_path / "ttyNFC") as nfc:
        gw = Gateway(cfg)
        for device, fake in (("gate", gate), ("bus-front", bus_front), ("lab-nfc", lab_nfc)):
            gw.drivers[device]._edge_factory = fake.open  # type: ignore[attr-defined]  # GPIO at the edge layer
        for device, keyboard in (("library-desk", desk), ("bus-nfc-out", bus_out)):
            gw.drivers[device]._factory = keyboard.open  # type: ignore[attr-defined]  # evdev at the event layer
        running = asyncio.create_task(gw.run())
        try:
            await wait_async(lambda: collector.states, 20, "the gateway online")
            answer = await asyncio.to_thread(  # the gateway runs on this loop: send from a thread
                send_command, mosquitto.url, central_key, SCHOOL, GATEWAY, "access.allowlist.set",
                {"version": 7, "lists": {"*": [p_prox, p_nfc]}})  # pushed once, for every door
            assert answer["status"] == "ok", answer
            for fake in (gate, bus_front, lab_nfc, desk, bus_out):
                await fake.wait_open(within_s=20)
            await wait_async(lambda: gateway_log.read_text().count(": reading cards") >= 3, 20,
                             "the EM4100 and PN532 readers to work")

            def taps() -> list[dict]:
                return [e for e in collector.records["event"] if e["type"] == "card_tap"]

            async def tapped(n: int) -> None:
                await wait_async(lambda: len(taps()) >= n, 20, f"{n} taps")

            # the 125 kHz card everywhere, the other 125 kHz card at the gate and boarding the bus
            lab.tap(PROX)
            await tapped(1)
            await gate.present26(PROX[2], int.from_bytes(PROX[3:], "big"))
            await tapped(2)
            await gate.present26(OTHER[2], int.from_bytes(OTHER[3:], "big"))
            await tapped(3)
            await bus_front.present34(int.from_bytes(PROX[1:], "big"))  # boards at a Wiegand-34 reader
            await tapped(4)
            await bus_front.present34(int.from_bytes(OTHER[1:], "big"))
            await tapped(5)
            rear.tap(PROX)  # alights at an EM4100 reader
            await tapped(6)
            desk.type(PROX.hex().upper())
            await tapped(7)
            # the 13.56 MHz card: boards at a PN532, alights at a decimal little-endian wedge, opens the lab door
            nfc.present_card(NFC)
            await tapped(8)
            nfc.remove_card()
            bus_out.type(str(int.from_bytes(NFC, "little")).zfill(10))
            await tapped(9)
            await lab_nfc.present34(int.from_bytes(NFC[::-1], "big"))  # this reader sends the UID reversed
            await tapped(10)

            answer = await asyncio.to_thread(send_command, mosquitto.url, central_key, SCHOOL, GATEWAY,
                                             "bus.end_route", {})
            assert answer["status"] == "ok" and answer["result"] == {"left_onboard": 1}, answer
            await wait_async(lambda: any(e["type"] == "bus_route_end" for e in collector.records["event"]), 20,
                             "the route summary")
            await wait_async(lambda: not outbox_state(cfg.storage.path)[1], 20, "every record acknowledged")
            counters = {d: drv.health.counters for d, drv in gw.drivers.items()}
        finally:
            gw.stop()
            await asyncio.wait_for(running, 30)
    collector.stop()

    by_device = {e["device"]: e["data"] for e in taps() if e["data"]["card"] != p_other}
    assert len(taps()) == 10
    # one pseudonym per card at every reader, and it is the rule's: not the bytes any one reader read
    assert {d: t["card"] for d, t in by_device.items()} == {
        "lab-door": p_prox, "gate": p_prox, "bus-front": p_prox, "bus-rear": p_prox, "library-desk": p_prox,
        "bus-nfc": p_nfc, "bus-nfc-out": p_nfc, "lab-nfc": p_nfc}
    assert pseudonym(PROX) != p_prox, "the EM4100 reader's own 5 bytes would give another pseudonym"
    assert all(c.get("unmapped_reads", 0) == 0 for c in counters.values()), counters
    # the allow-list pushed once admits each card at every door, and still refuses another card
    decisions = {(e["device"], e["data"]["card"]): e["data"].get("decision") for e in taps()}
    assert decisions[("lab-door", p_prox)] == decisions[("gate", p_prox)] == "allow"
    assert decisions[("lab-nfc", p_nfc)] == "allow"
    assert decisions[("gate", p_other)] == "deny"
    # the bus: boarded at one technology, alighted at another: only the card that never alighted is an alert
    actions = [(e["device"], e["data"]["card"], e["data"]["action"]) for e in
               sorted(taps(), key=lambda e: e["seq"]) if e["data"]["role"] == "bus"]
    assert actions == [("bus-front", p_prox, "board"), ("bus-front", p_other, "board"),
                       ("bus-rear", p_prox, "alight"), ("bus-nfc", p_nfc, "board"), ("bus-nfc-out", p_nfc, "alight")]
    alerts = [e for e in collector.records["event"] if e["type"] == "bus_left_onboard"]
    assert [a["data"]["card"] for a in alerts] == [p_other]
    # the rule the pseudonyms were made under is recorded next to the key
    assert read_rule_record(tmp_path / "gw" / "school.key") == (1, "prox_bits=24 nfc_bytes=all")

    # the canary scan: no spelling of any card number in the log, the outbox, the MQTT traffic or the store
    everything = export(victoria.url, '{__name__=~".+"}')
    places = places_to_scan(gateway_log, ingest, tmp_path / "gw", collector, everything)
    assert p_prox in places["MQTT traffic"] and len(everything) > 0, "the scan must see what crossed the broker"
    wait_for(lambda: p_nfc in files(ingest.parent, "events.sqlite*"), 20, "the taps in central's event store")
    places["central event store"] = files(ingest.parent, "events.sqlite*")
    assert "reading cards" in places["gateway log"], "the scan must see the gateway's log"
    for uid in (PROX, OTHER, NFC):
        for form in spellings(uid):
            for where, text in places.items():
                assert form not in text, f"a raw card number ({form}) found in the {where}"

