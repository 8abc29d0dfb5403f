"""The probe decoder on real advertisement bytes, through bleak's BlueZ backend and bthome-ble."""

from __future__ import annotations

import logging

import pytest
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edugate.drivers.ble.codec import ATC_UUID, BTHOME_UUID, BadAdvert, ProbeDecoder, decode_atc, value_name
from edugate.simulators.ble_probes import (
    SimulatedBlueZScanner,
    atc1441_service_data,
    bthome_service_data,
    device_props,
    pvvx_service_data,
)

ADDR = "A4:C1:38:AB:CD:EF"
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")


def heard(service_data: dict[str, bytes], rssi: int = -60, address: str = ADDR) -> tuple[BLEDevice, AdvertisementData]:
    """What bleak's BlueZ backend makes of BlueZ's Device1 properties for one advertisement."""
    got: list[tuple[BLEDevice, AdvertisementData]] = []
    scanner = SimulatedBlueZScanner(lambda d, a: got.append((d, a)), None, "active", bluez={"adapter": "hci0"})
    scanner._handle_advertising_data(f"/org/bluez/hci0/dev_{address.replace(':', '_')}",
                                     device_props(address, name="BTHome_ABCDEF", rssi=rssi,
                                                  service_data=service_data))
    [(device, adv)] = got
    return device, adv


def test_bthome_plaintext_values_as_bthome_ble_reports_them() -> None:
    dec = ProbeDecoder(ADDR)
    data = bthome_service_data(ADDR, {"packet": 7, "battery": 91, "temperature": 23.45, "humidity": 51.5,
                                      "pressure": 1008.25, "illuminance": 312.5, "co2": 1234, "acceleration": 9.81})
    out = dec.decode(*heard({BTHOME_UUID: data}), now=100.0)
    assert out is not None and not out.duplicate and out.format == "bthome"
    assert out.values == {"battery": 91, "temperature": 23.45, "humidity": 51.5, "pressure": 1008.25,
                          "illuminance": 312.5, "co2": 1234, "acceleration": 9.81}


def test_a_button_press_is_an_event() -> None:
    out = ProbeDecoder(ADDR).decode(*heard({BTHOME_UUID: bthome_service_data(ADDR, {"packet": 1, "button": 1})}),
                                    now=1.0)
    assert out is not None and out.values == {} and out.events == [("button", {"action": "press", "source": "button"})]


def test_repeats_count_once_by_bytes_and_by_packet_id() -> None:
    dec = ProbeDecoder(ADDR, dedup_window_s=30)
    first = bthome_service_data(ADDR, {"packet": 9, "temperature": 20.0})
    assert not dec.decode(*heard({BTHOME_UUID: first}), now=10.0).duplicate  # type: ignore[union-attr]
    assert dec.decode(*heard({BTHOME_UUID: first}, rssi=-70), now=10.5).duplicate  # type: ignore[union-attr]
    # same packet id, other bytes (a proxy re-encoding, a value that changed mid-packet): still the same packet
    other = bthome_service_data(ADDR, {"packet": 9, "temperature": 20.5})
    assert dec.decode(*heard({BTHOME_UUID: other}), now=11.0).duplicate  # type: ignore[union-attr]
    nxt = dec.decode(*heard({BTHOME_UUID: bthome_service_data(ADDR, {"packet": 10, "temperature": 21.0})}), now=12)
    assert nxt is not None and nxt.values == {"temperature": 21.0}
    # the same bytes long after the window: a new packet (the counter wrapped)
    assert not dec.decode(*heard({BTHOME_UUID: first}), now=200.0).duplicate  # type: ignore[union-attr]


def test_encrypted_with_the_right_key_wrong_key_no_key_and_plaintext_downgrade() -> None:
    values = {"packet": 3, "temperature": 36.95, "humidity": 61.0, "battery": 95}
    sealed = bthome_service_data(ADDR, values, bind_key=KEY, counter=5)
    assert sealed[0] == 0x41 and len(sealed) == 1 + 10 + 4 + 4  # info, 4 objects (10 bytes) sealed, counter, MIC
    out = ProbeDecoder(ADDR, bind_key=KEY).decode(*heard({BTHOME_UUID: sealed}), now=1.0)
    assert out is not None and out.format == "bthome-encrypted"
    assert out.values == {"temperature": 36.95, "humidity": 61.0, "battery": 95}

    wrong = ProbeDecoder(ADDR, bind_key=bytes(16))
    with pytest.raises(BadAdvert) as info:
        wrong.decode(*heard({BTHOME_UUID: sealed}), now=1.0)
    assert info.value.kind == "wrong_key" and "wrong bind_key" in str(info.value)

    with pytest.raises(BadAdvert) as info:
        ProbeDecoder(ADDR).decode(*heard({BTHOME_UUID: sealed}), now=1.0)
    assert info.value.kind == "no_key"

    keyed = ProbeDecoder(ADDR, bind_key=KEY)
    with pytest.raises(BadAdvert) as info:
        keyed.decode(*heard({BTHOME_UUID: bthome_service_data(ADDR, values)}), now=1.0)
    assert info.value.kind == "plaintext" and "refused" in str(info.value)


def test_a_damaged_encrypted_packet_after_the_key_worked_is_garbled() -> None:
    dec = ProbeDecoder(ADDR, bind_key=KEY)
    good = bthome_service_data(ADDR, {"packet": 1, "temperature": 5.0}, bind_key=KEY, counter=1)
    assert dec.decode(*heard({BTHOME_UUID: good}), now=1.0) is not None
    damaged = bytearray(bthome_service_data(ADDR, {"packet": 2, "temperature": 5.5}, bind_key=KEY, counter=2))
    damaged[3] ^= 0x5A
    with pytest.raises(BadAdvert) as info:
        dec.decode(*heard({BTHOME_UUID: bytes(damaged)}), now=2.0)
    assert info.value.kind == "garbled" and "worked before" in str(info.value)


@pytest.mark.parametrize("raw", [b"\x40", b"\x40\xff\x01", b"\x40\x02\x10"], ids=["empty", "unknown-object", "cut"])
def test_garbled_plaintext(raw: bytes) -> None:
    with pytest.raises(BadAdvert) as info:
        ProbeDecoder(ADDR).decode(*heard({BTHOME_UUID: raw}), now=1.0)
    assert info.value.kind == "garbled"


def test_atc1441_and_pvvx_custom_formats() -> None:
    atc = atc1441_service_data(ADDR, 23.4, 51, 80, 2960, counter=17)
    assert atc.hex() == "a4c138abcdef00ea3350" + "0b90" + "11"
    assert decode_atc(atc, ADDR) == ("atc1441", {"temperature": 23.4, "humidity": 51, "battery": 80,
                                                 "battery_mv": 2960}, 17)
    pvvx = pvvx_service_data(ADDR, -5.27, 48.31, 64, 2768, counter=200)
    assert pvvx[:6] == bytes.fromhex("efcdab38c1a4") and len(pvvx) == 15
    assert decode_atc(pvvx, ADDR) == ("pvvx", {"temperature": -5.27, "humidity": 48.31, "battery_mv": 2768,
                                               "battery": 64}, 200)
    dec = ProbeDecoder(ADDR)
    first = dec.decode(*heard({ATC_UUID: pvvx}), now=1.0)
    assert first is not None and first.format == "pvvx" and first.values["temperature"] == -5.27
    # the same measurement counter with another RSSI-free byte (flags) changed: one measurement
    assert dec.decode(*heard({ATC_UUID: pvvx[:-1] + b"\x01"}), now=2.0).duplicate  # type: ignore[union-attr]


@pytest.mark.parametrize(("raw", "words"), [
    (bytes(12), "12 bytes of 181A service data"),
    (atc1441_service_data("11:22:33:44:55:66", 20, 50, 80, 2900, 1), "names another address"),
    (atc1441_service_data(ADDR, 20, 150, 80, 2900, 1), "out of the sensor's range"),
])
def test_atc_garbage_is_refused(raw: bytes, words: str) -> None:
    with pytest.raises(BadAdvert) as info:
        decode_atc(raw, ADDR)
    assert info.value.kind == "garbled" and words in str(info.value)


def test_a_probe_configured_for_pvvx_refuses_atc1441() -> None:
    with pytest.raises(BadAdvert, match=r"expected 15 \(PVVX\)"):
        ProbeDecoder(ADDR, "pvvx").decode(*heard({ATC_UUID: atc1441_service_data(ADDR, 20, 50, 80, 2900, 1)}), 1.0)


def test_advertisements_without_probe_data_and_bthome_v1() -> None:
    assert ProbeDecoder(ADDR).decode(*heard({}), now=1.0) is None
    with pytest.raises(BadAdvert, match="BTHome v2") as info:
        ProbeDecoder(ADDR).decode(*heard({"0000181c-0000-1000-8000-00805f9b34fb": b"\x23\x02\xca\x09"}), now=1.0)
    assert info.value.kind == "unsupported"


def test_value_names() -> None:
    assert [value_name(k) for k in ("carbon_dioxide", "temperature_2", "carbon_dioxide_1", "signal_strength")] == [
        "co2", "temperature_2", "co2_1", "rssi"]


def test_missed_packets_are_counted_from_packet_id_gaps() -> None:
    dec = ProbeDecoder(ADDR)
    missed = []
    for now, packet in enumerate([250, 251, 254, 255, 2, 3, 100]):
        out = dec.decode(*heard({BTHOME_UUID: bthome_service_data(ADDR, {"packet": packet, "temperature": 20})}),
                         now=float(now * 10))
        assert out is not None
        missed.append(out.missed)
    assert missed == [0, 0, 2, 0, 2, 0, 0]  # 252-253 and 0-1 missed; 3 -> 100 is a restart


def test_the_same_encrypted_packet_again_is_a_repeat_even_without_a_dedup_window() -> None:
    dec = ProbeDecoder(ADDR, bind_key=KEY, dedup_window_s=0)
    sealed = bthome_service_data(ADDR, {"packet": 4, "temperature": 5.0}, bind_key=KEY, counter=9)
    assert not dec.decode(*heard({BTHOME_UUID: sealed}), now=1.0).duplicate  # type: ignore[union-attr]
    assert dec.decode(*heard({BTHOME_UUID: sealed}), now=2.0).duplicate  # type: ignore[union-attr]  # packet id
    assert dec.decode(*heard({BTHOME_UUID: sealed}), now=9.0).duplicate  # type: ignore[union-attr]  # bthome-ble


def test_a_probe_sending_garbage_does_not_flood_the_log_through_bthome_ble(caplog: pytest.LogCaptureFixture) -> None:
    """bthome-ble logs an ERROR per advertisement with an invalid version; the driver already counts and logs
    each kind once a minute, so the package's own line comes at most once a minute per message and probe."""
    decoder = ProbeDecoder("A4:C1:38:AB:CD:E0", "bthome")
    with caplog.at_level(logging.WARNING):
        for i in range(50):
            with pytest.raises(BadAdvert) as info:
                decoder.decode(*heard({BTHOME_UUID: bytes([0x60 + (i % 2), 0x02, i, 0x09])},
                                      address="A4:C1:38:AB:CD:E0"), float(i))
            assert info.value.kind == "garbled"
    assert len([r for r in caplog.records if r.name.startswith("bthome_ble")]) <= 1


def test_the_bthome_specs_encryption_example_byte_for_byte() -> None:
    """An outside vector: the BTHome v2 encryption example, as bthome-ble's tests carry it
    (``test_bindkey_correct``). The simulator encrypts to exactly these bytes; the decoder reads them."""
    mac, key = "54:48:E6:8F:80:A5", bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    spec = bytes.fromhex("41a47266c95f730011223378237214")  # device info, payload, counter 00112233, MIC
    assert bthome_service_data(mac, {"temperature": 25.06, "humidity": 50.55}, bind_key=key,
                               counter=0x33221100) == spec
    out = ProbeDecoder(mac, "bthome", key).decode(*heard({BTHOME_UUID: spec}, address=mac), now=1.0)
    assert out is not None and out.format == "bthome-encrypted"
    assert out.values == {"temperature": 25.06, "humidity": 50.55}
    with pytest.raises(BadAdvert) as info:  # the same bytes with another key
        ProbeDecoder(mac, "bthome", bytes(16)).decode(*heard({BTHOME_UUID: spec}, address=mac), now=1.0)
    assert info.value.kind == "wrong_key"


OUTSIDE_181A = [  # service data and what it holds, from the Theengs decoder's tests (tests/BLE/test_ble.cpp)
    ("A4:C1:38:D5:D4:98", "a4c138d5d49801453e510b7b62", "atc1441",
     {"temperature": 32.5, "humidity": 62, "battery": 81, "battery_mv": 2939}, 0x62),
    ("A4:C1:38:D5:D4:98", "a4c138d5d498ffd33e510b7b62", "atc1441",
     {"temperature": -4.5, "humidity": 62, "battery": 81, "battery_mv": 2939}, 0x62),
    ("A4:C1:38:CF:01:56", "5601cf38c1a44008bd13470c64cc0f", "pvvx",
     {"temperature": 21.12, "humidity": 50.53, "battery": 100, "battery_mv": 3143}, 0xCC),
    ("A4:C1:38:CF:01:56", "5601cf38c1a462fdbd13470c64cc0f", "pvvx",
     {"temperature": -6.7, "humidity": 50.53, "battery": 100, "battery_mv": 3143}, 0xCC),
    ("A4:C1:38:52:8F:62", "628f5238c1a48307e4128f0b64b40f", "pvvx",
     {"temperature": 19.23, "humidity": 48.36, "battery": 100, "battery_mv": 2959}, 0xB4),
]


@pytest.mark.parametrize(("address", "raw", "fmt", "values", "counter"), OUTSIDE_181A,
                         ids=[f"{v[2]}-{v[3]['temperature']}" for v in OUTSIDE_181A])
def test_atc1441_and_pvvx_outside_vectors(address: str, raw: str, fmt: str, values: dict, counter: int) -> None:
    """Real thermometers' bytes decoded by another project: our decoder agrees, and the simulator sends the
    same bytes for the same values."""
    assert decode_atc(bytes.fromhex(raw), address) == (fmt, values, counter)
    args = (address, values["temperature"], values["humidity"], values["battery"], values["battery_mv"], counter)
    sent = atc1441_service_data(*args) if fmt == "atc1441" else pvvx_service_data(*args, flags=0x0F)
    assert sent == bytes.fromhex(raw)
