"""A desk reader in serial mode (wedge ``source: serial``) and a PN532 read one 13.56 MHz card as one pseudonym
(issue 22), through the real gateway (in this process: drivers, pipeline, outbox, uplink as in production) and a
real Mosquitto. Both readers are simulators on real ptys: the PN532 answers the driver's frames, the desk reader
sends the UID as a decimal number of the reversed bytes, a line per card, as such readers do in USB CDC mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from edugate.common.privacy import Pseudonymizer, load_or_create_key
from edugate.gateway.config import load_config
from edugate.gateway.runtime.gateway import Gateway
from edugate.simulators.pn532 import PN532Simulator
from edugate.simulators.servers import Mosquitto
from edugate.simulators.wedge_serial import WedgeSerialSimulator, card_text
from tests.helpers import Collector, wait_async

CARD = bytes.fromhex("04A22B1C")  # a 4-byte MIFARE Classic UID, card order


def spellings(uid: bytes) -> set[str]:
    """The card's number as hex (both cases, with colons) and decimal (plain and ten digits), in either order."""
    forms: set[str] = set()
    for part in (uid, uid[::-1]):
        forms |= {part.hex(), part.hex().upper(), part.hex(":"), part.hex(":").upper(),
                  str(int.from_bytes(part, "big")), str(int.from_bytes(part, "big")).zfill(10)}
    return forms


async def test_a_serial_wedge_and_a_pn532_give_one_card_one_pseudonym(mosquitto: Mosquitto, tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    key = load_or_create_key(tmp_path / "gw" / "school.key")
    path = tmp_path / "gw" / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "school": "desk-school", "gateway": "gw-desk",
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "storage": {"path": str(tmp_path / "gw" / "outbox.sqlite")},
        "privacy": {"secret_file": str(tmp_path / "gw" / "school.key"),
                    "card_identity": {"version": 1, "prox_bits": 40, "nfc_bytes": "all", "replaces": 0}},
        "devices": [
            {"id": "c10a-reader", "driver": "pn532", "room": "class-10a", "port": str(tmp_path / "ttyNFC")},
            {"id": "library-desk", "driver": "wedge", "room": "library", "role": "library", "source": "serial",
             "port": str(tmp_path / "ttyDESK"), "format": "decimal", "uid_bytes": 4, "byte_order": "little",
             "card_identity": {"family": "nfc"}},
        ]}, sort_keys=False))
    cfg = load_config(path)
    collector = Collector(mosquitto.port).start()
    async with PN532Simulator(tmp_path / "ttyNFC") as nfc, \
            WedgeSerialSimulator(tmp_path / "ttyDESK", format="decimal", byte_order="little") as desk:
        gw = Gateway(cfg)
        running = asyncio.create_task(gw.run())
        try:
            await wait_async(lambda: all(d.health.state == "online" for d in gw.drivers.values()), 20,
                             "both readers online")

            def taps() -> list[dict]:
                return [e for e in collector.records["event"] if e["type"] == "card_tap"]

            nfc.present_card(CARD)
            await wait_async(lambda: len(taps()) >= 1, 20, "the PN532 tap")
            nfc.remove_card()
            desk.send_line(card_text(CARD))  # the reader switched to hex by mistake: counted, not a tap
            desk.send_raw(b"\x1b[A\r\n")  # noise: counted, not a tap
            desk.tap(CARD)
            await wait_async(lambda: len(taps()) >= 2, 20, "the desk tap")
            counters = gw.drivers["library-desk"].health.counters
        finally:
            gw.stop()
            await asyncio.wait_for(running, 30)
    collector.stop()
    pseudonym = Pseudonymizer(key)
    by_device = [(e["device"], e["data"]["card"]) for e in sorted(taps(), key=lambda e: e["seq"])]
    assert by_device[0] == ("c10a-reader", pseudonym(CARD))
    assert by_device[-1] == ("library-desk", pseudonym(CARD)), "one card, one pseudonym at both reader families"
    assert card_text(CARD, "decimal", "little") == str(int.from_bytes(CARD, "little")).zfill(10)
    assert len(by_device) == 2
    assert (counters["bad_reads.not_decimal"], counters["bad_reads.unexpected_byte"]) == (1, 1), counters
    assert counters.get("unmapped_reads", 0) == 0, counters
    traffic = b"\n".join(collector.raw).decode("latin-1")
    for form in spellings(CARD):
        assert form not in traffic, f"a raw card number ({form}) crossed the broker"
