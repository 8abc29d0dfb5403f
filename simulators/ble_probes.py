"""A room of BLE probes, at the byte level, heard through bleak's own BlueZ scanner code.

No radio here. :class:`SimulatedBlueZScanner` is bleak's BlueZ backend (``BleakScannerBlueZDBus``) with
only the D-Bus part replaced: where BlueZ would signal a device's properties (``org.bluez.Device1``:
``Address``, ``Alias``, ``RSSI``, ``ServiceData`` ...), the room hands the same dictionary to the backend's
own ``_handle_advertising_data``, which builds the real ``BLEDevice`` and ``AdvertisementData`` and calls the
detection callbacks. Everything above (the shared scan, the decoder, bthome-ble, the pipeline) is real.

A :class:`ProbeRoom` is what one adapter hears: probes (:class:`Probe`) that advertise real BTHome v2
service data (plaintext, or AES-CCM encrypted with a bind key exactly as the BTHome spec and bthome-ble
do it), or the ATC1441 / PVVX thermometer formats; values drift (a random walk around a set point),
packets are lost (``loss``), each packet is repeated a few times (``repeats``, same packet id, as probes
do), RSSI wanders around the probe's mean; plus the phones, headphones and watches of a busy lab
(``others_per_s`` advertisements a second from random addresses, Apple/Microsoft/Samsung manufacturer
data). A probe can be silenced (out of range) and brought back.

Use it::

    use_backend(SimulatedBlueZScanner)          # edugate.drivers.ble.scanner
    async with ProbeRoom("hci0", [Probe("A4:C1:38:00:00:01", "bthome"), ...]) as room:
        ...                                     # run the gateway; room.sent counts what was advertised

``python -m edugate.simulators.ble_probes`` prints a few seconds of a demo room's advertisements (hex);
with ``--serve SOCKET`` it serves them to gateway processes, which hear them through
:class:`SocketBlueZScanner` (``EDUGATE_BLE_BACKEND=edugate.simulators.ble_probes:SocketBlueZScanner``,
``EDUGATE_BLE_AIR=SOCKET``), e.g. ``edugate run drivers/ble/sample.yaml`` or the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

if TYPE_CHECKING:
    from bleak.backends.bluezdbus.defs import Device1

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
ATC_UUID = "0000181a-0000-1000-8000-00805f9b34fb"

# BTHome v2 object ids (https://bthome.io/format/), in the ascending order a payload must use
OBJECTS: dict[str, tuple[int, int, float, bool]] = {  # name -> (object id, bytes, factor, signed)
    "packet": (0x00, 1, 1, False),
    "battery": (0x01, 1, 1, False),
    "temperature": (0x02, 2, 0.01, True),
    "humidity": (0x03, 2, 0.01, False),
    "pressure": (0x04, 3, 0.01, False),
    "illuminance": (0x05, 3, 0.01, False),
    "co2": (0x12, 2, 1, False),
    "button": (0x3A, 1, 1, False),
    "acceleration": (0x51, 2, 0.001, False),
}
BUTTON_PRESS = 0x01

Format = Literal["bthome", "atc1441", "pvvx"]


# ---------------------------------------------------------------- encoders (pure)


def bthome_objects(values: dict[str, float | int]) -> bytes:
    """The BTHome v2 measurement objects for ``values`` (names of :data:`OBJECTS`), in object-id order."""
    out = bytearray()
    for name, (oid, size, factor, signed) in sorted(OBJECTS.items(), key=lambda kv: kv[1][0]):
        if name in values:
            out.append(oid)
            out += round(values[name] / factor).to_bytes(size, "little", signed=signed)
    return bytes(out)


def quantize(name: str, value: float) -> float | int:
    """``value`` at the resolution its BTHome object carries (what a receiver decodes)."""
    factor = OBJECTS[name][2]
    if factor >= 1:
        return int(round(value / factor) * factor)
    return round(round(value / factor) * factor, len(f"{factor:g}".split(".")[1]))


def bthome_service_data(address: str, values: dict[str, float | int], *, bind_key: bytes | None = None,
                        counter: int = 0) -> bytes:
    """BTHome v2 service data (UUID FCD2): the device-info byte and the objects, AES-CCM encrypted when
    ``bind_key`` is given (nonce: address, UUID, device-info byte, 4-byte counter; 4-byte MIC)."""
    payload = bthome_objects(values)
    if bind_key is None:
        return bytes([0x40]) + payload
    info = 0x41  # version 2, encrypted
    count = counter.to_bytes(4, "little")
    nonce = bytes.fromhex(address.replace(":", "")) + b"\xd2\xfc" + bytes([info]) + count
    sealed = AESCCM(bind_key, tag_length=4).encrypt(nonce, payload, None)
    return bytes([info]) + sealed[:-4] + count + sealed[-4:]


def atc1441_service_data(address: str, temperature: float, humidity: float, battery: int, battery_mv: int,
                         counter: int) -> bytes:
    """ATC1441 custom format, 13 bytes, big-endian (service data UUID 181A)."""
    return (bytes.fromhex(address.replace(":", "")) + round(temperature * 10).to_bytes(2, "big", signed=True)
            + bytes([round(humidity), battery]) + battery_mv.to_bytes(2, "big") + bytes([counter & 0xFF]))


def pvvx_service_data(address: str, temperature: float, humidity: float, battery: int, battery_mv: int,
                      counter: int, flags: int = 0) -> bytes:
    """PVVX custom format, 15 bytes, little-endian, the address reversed (service data UUID 181A)."""
    return (bytes.fromhex(address.replace(":", ""))[::-1] + round(temperature * 100).to_bytes(2, "little", signed=True)
            + round(humidity * 100).to_bytes(2, "little") + battery_mv.to_bytes(2, "little")
            + bytes([battery, counter & 0xFF, flags]))


def device_props(address: str, *, name: str | None, rssi: int, service_data: dict[str, bytes] | None = None,
                 manufacturer_data: dict[int, bytes] | None = None, adapter: str = "hci0") -> dict[str, Any]:
    """``org.bluez.Device1`` properties as BlueZ signals them for one advertisement."""
    return {
        "Address": address, "AddressType": "public" if name else "random",
        "Alias": name or address.replace(":", "-"), **({"Name": name} if name else {}),
        "Adapter": f"/org/bluez/{adapter}", "Paired": False, "Bonded": False, "Connected": False,
        "Trusted": False, "Blocked": False, "LegacyPairing": False, "UUIDs": [],
        "RSSI": rssi, "ServiceData": dict(service_data or {}), "ManufacturerData": dict(manufacturer_data or {}),
    }


def dbus_path(adapter: str, address: str) -> str:
    return f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"


# ---------------------------------------------------------------- probes


@dataclass
class Probe:
    """One probe. ``values``: set points of what it measures (BTHome names; ATC/PVVX use temperature,
    humidity, battery); they drift by ``drift`` per packet (a bounded random walk)."""

    address: str
    format: Format = "bthome"
    values: dict[str, float] = field(default_factory=lambda: {"temperature": 22.0, "humidity": 55.0,
                                                               "battery": 90})
    bind_key: bytes | None = None
    """The key the probe encrypts with (BTHome only). Give the gateway another one for a 'wrong key' probe."""
    name: str | None = None
    interval_s: float = 1.0
    repeats: int = 3
    """Each packet is advertised this many times (the same packet id), as real probes do."""
    repeat_gap_s: float = 0.05
    loss: float = 0.0
    """Probability that one advertisement is not heard."""
    rssi: int = -65
    drift: float = 0.05
    silent: bool = False
    packet: int = 0
    counter: int = 0
    sent_packets: list[dict[str, float | int]] = field(default_factory=list)
    """The values of every packet the probe sent (heard or lost), in order."""

    def __post_init__(self) -> None:
        self.address = self.address.upper()
        if self.name is None:
            self.name = {"bthome": "BTHome", "atc1441": "ATC", "pvvx": "ATC"}[self.format] + \
                "_" + self.address.replace(":", "")[-6:]
        self._centre = dict(self.values)

    def next_packet(self, rng: random.Random) -> dict[str, bytes]:
        """Drift the values, advance the packet id, return the service data of the new packet."""
        for name, value in self.values.items():
            if name in ("battery", "button"):
                continue
            centre = self._centre[name]
            span = max(abs(centre) * 0.05, 1.0)
            self.values[name] = min(centre + span, max(centre - span, value + rng.uniform(-1, 1) * self.drift * span))
        self.packet = (self.packet + 1) % 256
        self.counter += 1
        if self.format == "bthome":
            vals: dict[str, float | int] = {k: quantize(k, v) for k, v in self.values.items()} | {"packet": self.packet}
            self.sent_packets.append(vals)
            return {BTHOME_UUID: bthome_service_data(self.address, vals, bind_key=self.bind_key,
                                                     counter=self.counter)}
        t, h, b = self.values["temperature"], self.values["humidity"], int(self.values.get("battery", 90))
        mv = 2000 + 12 * b
        if self.format == "atc1441":
            self.sent_packets.append({"temperature": round(t, 1), "humidity": round(h), "battery": b})
            return {ATC_UUID: atc1441_service_data(self.address, t, h, b, mv, self.counter)}
        self.sent_packets.append({"temperature": round(t, 2), "humidity": round(h, 2), "battery": b})
        return {ATC_UUID: pvvx_service_data(self.address, t, h, b, mv, self.counter)}


OTHER_VENDORS = [(0x004C, bytes.fromhex("1005031c8a1f4a")), (0x0006, bytes.fromhex("0109200276c3d4e5f6")),
                 (0x0075, bytes.fromhex("42040180aa")), (0x00E0, bytes.fromhex("00ff1122"))]
"""Manufacturer data of the phones (Apple, Microsoft, Samsung, Google) that fill a lab's air."""


# ---------------------------------------------------------------- the air and the scanner backend


class ProbeRoom:
    """What adapter ``adapter`` hears. ``async with`` it: it registers as that adapter's air and advertises."""

    rooms: ClassVar[dict[str, ProbeRoom]] = {}
    """Running rooms by adapter: where :class:`SimulatedBlueZScanner` listens."""

    def __init__(self, adapter: str = "hci0", probes: list[Probe] | None = None, *, others_per_s: float = 0.0,
                 others_pool: int = 200, seed: int = 15, wait_for_listener: bool = False) -> None:
        self.adapter = adapter
        self.wait_for_listener = wait_for_listener
        """Probes begin only once a scan listens (tests comparing every packet sent with every one heard)."""
        self.listening = asyncio.Event()
        self.probes = {p.address: p for p in probes or []}
        self.others_per_s = others_per_s
        self.rng = random.Random(seed)
        self.others = [":".join(f"{self.rng.randrange(256):02X}" for _ in range(6)) for _ in range(others_pool)]
        self.scanners: list[SimulatedBlueZScanner] = []
        self.remote: list[asyncio.StreamWriter] = []
        self.bluez: list[FakeBlueZ] = []
        """BlueZ on a private D-Bus, signalling what the room advertises (:class:`FakeBlueZ`)."""
        """Gateway processes listening through :class:`SocketBlueZScanner` (see :func:`serve_air`)."""
        self.sent = 0
        """Advertisements delivered to the scanners (after loss)."""
        self.lost = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ProbeRoom:
        if self.adapter in ProbeRoom.rooms:
            raise RuntimeError(f"a room already runs on {self.adapter}")
        ProbeRoom.rooms[self.adapter] = self
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._advertise(p)) for p in self.probes.values()]
        self._tasks.append(loop.create_task(self._crowd()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ProbeRoom.rooms.pop(self.adapter, None)

    def add_bluez(self, bluez: FakeBlueZ) -> None:
        """Signal what the room advertises on this (fake) bluetoothd's D-Bus too."""
        self.bluez.append(bluez)
        self.listening.set()

    def deliver(self, props: dict[str, Any]) -> None:
        """Signal one device's properties to every scanning backend, as BlueZ does over D-Bus."""
        path = dbus_path(self.adapter, props["Address"])
        for scanner in list(self.scanners):
            scanner._handle_advertising_data(path, cast("Device1", props))  # bleak's own BlueZ code from here on
        for bluez in self.bluez:
            bluez.signal(props)
        if self.remote:
            line = props_to_line(path, props)
            for writer in list(self.remote):
                if writer.is_closing() or writer.transport.get_write_buffer_size() > 1 << 20:
                    self.remote.remove(writer)  # gone, or not reading: drop it as a radio would
                    writer.close()
                else:
                    writer.write(line)
        self.sent += 1

    def send(self, address: str, service_data: dict[str, bytes], *, rssi: int | None = None) -> None:
        """One advertisement of a probe with the given service data (garbled bytes, a replay ...)."""
        probe = self.probes.get(address.upper())
        self.deliver(device_props(address.upper(), name=probe.name if probe else None,
                                  rssi=rssi if rssi is not None else (probe.rssi if probe else -70),
                                  service_data=service_data, adapter=self.adapter))

    def silence(self, address: str, silent: bool = True) -> None:
        """The probe leaves the room (or comes back)."""
        self.probes[address.upper()].silent = silent

    async def _advertise(self, probe: Probe) -> None:
        if self.wait_for_listener:
            await self.listening.wait()
        await asyncio.sleep(self.rng.uniform(0, min(probe.interval_s, 0.2)))
        while True:
            if not probe.silent:
                data = probe.next_packet(self.rng)
                for i in range(probe.repeats):
                    if self.rng.random() < probe.loss:
                        self.lost += 1
                    else:
                        rssi = max(-100, min(-30, round(self.rng.gauss(probe.rssi, 3))))
                        self.send(probe.address, data, rssi=rssi)
                    if i + 1 < probe.repeats:
                        await asyncio.sleep(probe.repeat_gap_s)
            await asyncio.sleep(probe.interval_s)

    def crowd_advert(self) -> dict[str, Any]:
        address = self.rng.choice(self.others)
        company, data = self.rng.choice(OTHER_VENDORS)
        return device_props(address, name=None, rssi=self.rng.randrange(-95, -40),
                            manufacturer_data={company: data}, adapter=self.adapter)

    async def _crowd(self) -> None:
        """Phones and headphones: ``others_per_s`` advertisements a second (may be changed while it runs),
        delivered every 10 ms."""
        loop = asyncio.get_running_loop()
        last, credit = loop.time(), 0.0
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            credit += (now - last) * self.others_per_s
            last = now
            for _ in range(int(credit)):
                self.deliver(self.crowd_advert())
            credit -= int(credit)


class SimulatedBlueZScanner(BleakScannerBlueZDBus):
    """bleak's BlueZ scanner backend, fed by the :class:`ProbeRoom` of its adapter instead of D-Bus.

    ``start`` fails as bleak does on a machine without that adapter when no room runs for it.
    """

    @property
    def adapter(self) -> str:
        return self._adapter or "hci0"

    async def start(self) -> None:
        room = ProbeRoom.rooms.get(self.adapter)
        if room is None:
            raise BleakBluetoothNotAvailableError(f"Bluetooth adapter {self.adapter} not found",
                                                  BleakBluetoothNotAvailableReason.NO_BLUETOOTH)
        self.seen_devices = {}
        room.scanners.append(self)
        room.listening.set()
        self._room: ProbeRoom | None = room

    async def stop(self) -> None:
        room = getattr(self, "_room", None)
        if room is not None and self in room.scanners:
            room.scanners.remove(self)
        self._room = None


# ---------------------------------------------------------------- the air of another process (edugate run, the demo)

AIR_ENV = "EDUGATE_BLE_AIR"
"""The Unix socket a :class:`SocketBlueZScanner` reads the simulated air from."""
DEFAULT_AIR = "/tmp/edugate/ble-air.sock"


def props_to_line(path: str, props: dict[str, Any]) -> bytes:
    """One BlueZ signal as a JSON line (bytes as hex)."""
    wire = dict(props, ServiceData={k: v.hex() for k, v in props["ServiceData"].items()},
                ManufacturerData={str(k): v.hex() for k, v in props["ManufacturerData"].items()})
    return json.dumps({"path": path, "props": wire}, separators=(",", ":")).encode() + b"\n"


def props_from_line(line: bytes) -> tuple[str, dict[str, Any]]:
    msg = json.loads(line)
    props = msg["props"]
    props["ServiceData"] = {k: bytes.fromhex(v) for k, v in props["ServiceData"].items()}
    props["ManufacturerData"] = {int(k): bytes.fromhex(v) for k, v in props["ManufacturerData"].items()}
    return msg["path"], props


def _fresh_socket_path(socket_path: str | Path) -> Path:
    path = Path(socket_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


async def serve_air(room: ProbeRoom, socket_path: str | Path) -> asyncio.Server:
    """Let gateway processes hear ``room`` through :class:`SocketBlueZScanner` on ``socket_path``."""
    path = _fresh_socket_path(socket_path)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        room.remote.append(writer)
        room.listening.set()

    return await asyncio.start_unix_server(connected, path=str(path))


class SocketBlueZScanner(BleakScannerBlueZDBus):
    """bleak's BlueZ scanner backend fed by a simulated lab in another process (``$EDUGATE_BLE_AIR``,
    default ``/tmp/edugate/ble-air.sock``), for ``EDUGATE_BLE_BACKEND=edugate.simulators.ble_probes:
    SocketBlueZScanner edugate run ...``. No simulator there: it fails to start as a missing adapter does."""

    async def start(self) -> None:
        where = os.environ.get(AIR_ENV, DEFAULT_AIR)
        try:
            reader, self._writer = await asyncio.open_unix_connection(where)
        except OSError as exc:
            raise BleakBluetoothNotAvailableError(
                f"no simulated air at {where} ({exc.strerror or exc}): start python -m "
                f"edugate.simulators.ble_probes --serve {where}", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
            ) from None
        self.seen_devices = {}
        self._reading = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            path, props = props_from_line(line)
            self._handle_advertising_data(path, cast("Device1", props))

    async def stop(self) -> None:
        task, writer = getattr(self, "_reading", None), getattr(self, "_writer", None)
        if task is not None:
            task.cancel()
        if writer is not None:
            writer.close()


# ---------------------------------------------------------------- BlueZ itself, on a private D-Bus

BLUEZ = "org.bluez"
DEVICE1 = "org.bluez.Device1"
ADAPTER1 = "org.bluez.Adapter1"


def _variants(props: dict[str, Any]) -> dict[str, Any]:
    """Device1 properties as BlueZ sends them on D-Bus (each value a typed Variant)."""
    from dbus_fast import Variant

    types = {"Address": "s", "AddressType": "s", "Alias": "s", "Name": "s", "Adapter": "o", "Paired": "b",
             "Bonded": "b", "Connected": "b", "Trusted": "b", "Blocked": "b", "LegacyPairing": "b", "UUIDs": "as",
             "RSSI": "n", "TxPower": "n"}
    out = {k: Variant(types[k], v) for k, v in props.items() if k in types}
    out["ServiceData"] = Variant("a{sv}", {k: Variant("ay", v) for k, v in props.get("ServiceData", {}).items()})
    out["ManufacturerData"] = Variant("a{qv}", {k: Variant("ay", v)
                                                for k, v in props.get("ManufacturerData", {}).items()})
    return out


class FakeBlueZ:
    """``bluetoothd`` as bleak sees it, on a private D-Bus: the object manager, one adapter
    (``SetDiscoveryFilter``, ``StartDiscovery``, ``StopDiscovery``) and, for every advertisement a
    :class:`ProbeRoom` delivers while discovery is on, the signals BlueZ sends: ``InterfacesAdded`` for a
    device first heard, ``PropertiesChanged`` (RSSI, ServiceData, ManufacturerData) after. With the system
    bus address pointed at that D-Bus, bleak's real BlueZ backend scans it: only bluetoothd and the radio
    are missing."""

    def __init__(self, bus_address: str, adapter: str = "hci0") -> None:
        self.bus_address = bus_address
        self.adapter = adapter
        self.adapter_path = f"/org/bluez/{adapter}"
        self.discovering = 0
        self.calls: list[str] = []
        self.known: set[str] = set()
        self.bus: Any = None

    async def start(self) -> FakeBlueZ:
        from dbus_fast.aio import MessageBus

        self.bus = await MessageBus(bus_address=self.bus_address).connect()
        await self.bus.request_name(BLUEZ)
        self.bus.add_message_handler(self._handle)
        return self

    def stop(self) -> None:
        if self.bus is not None:
            self.bus.disconnect()

    def _handle(self, msg: Any) -> Any:
        from dbus_fast import Message, MessageType, Variant

        if msg.message_type != MessageType.METHOD_CALL:
            return None
        self.calls.append(msg.member)
        if msg.member == "GetManagedObjects" and msg.path == "/":
            adapter = {ADAPTER1: {"Address": Variant("s", "B8:27:EB:00:00:01"), "Powered": Variant("b", True),
                                  "Discovering": Variant("b", bool(self.discovering)),
                                  "Roles": Variant("as", ["central", "peripheral"])}}
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [{self.adapter_path: adapter}])
        if msg.path == self.adapter_path and msg.interface == ADAPTER1:
            if msg.member == "StartDiscovery":
                self.discovering += 1
            elif msg.member == "StopDiscovery":
                self.discovering = max(0, self.discovering - 1)
            elif msg.member != "SetDiscoveryFilter":
                return Message.new_error(msg, "org.bluez.Error.NotSupported", msg.member)
            return Message.new_method_return(msg)
        return Message.new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"{msg.path} {msg.member}")

    def signal(self, props: dict[str, Any]) -> None:
        """One advertisement heard: the D-Bus signal BlueZ would send for it (none while not discovering)."""
        from dbus_fast import Message

        if not self.discovering or self.bus is None:
            return
        path = dbus_path(self.adapter, props["Address"])
        variants = _variants(props)
        if path not in self.known:
            self.known.add(path)
            self.bus.send(Message.new_signal("/", "org.freedesktop.DBus.ObjectManager", "InterfacesAdded",
                                             "oa{sa{sv}}", [path, {DEVICE1: variants}]))
            return
        changed = {k: variants[k] for k in ("RSSI", "ServiceData", "ManufacturerData")}
        self.bus.send(Message.new_signal(path, "org.freedesktop.DBus.Properties", "PropertiesChanged",
                                         "sa{sv}as", [DEVICE1, changed, []]))


def demo_probes(bind_key: bytes | None = None, wrong_key: bytes | None = None) -> list[Probe]:
    """The demo school's lab: a fridge and a CO2 probe (BTHome), an encrypted incubator, two thermometers
    with custom firmware (ATC1441, PVVX), and a probe whose key the gateway has wrong."""
    key = bind_key or bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
    return [
        Probe("A4:C1:38:10:00:01", "bthome", {"temperature": 4.0, "humidity": 40.0, "battery": 87}, name="fridge"),
        Probe("A4:C1:38:10:00:02", "bthome", {"temperature": 24.0, "co2": 800, "battery": 76}, interval_s=2.0),
        Probe("A4:C1:38:10:00:03", "bthome", {"temperature": 37.0, "humidity": 60.0, "battery": 95},
              bind_key=key, name="incubator"),
        Probe("A4:C1:38:10:00:04", "atc1441", {"temperature": 23.5, "humidity": 50.0, "battery": 80}),
        Probe("A4:C1:38:10:00:05", "pvvx", {"temperature": 21.0, "humidity": 48.0, "battery": 64}, loss=0.2),
        Probe("A4:C1:38:10:00:06", "bthome", {"temperature": 20.0, "battery": 50},
              bind_key=wrong_key or bytes.fromhex("00112233445566778899aabbccddeeff")),
    ]


async def _print_room(seconds: float, others: float) -> None:
    room = ProbeRoom("hci0", demo_probes(), others_per_s=others)

    class Printer:
        def __init__(self) -> None:
            self.t0 = time.monotonic()

        def __call__(self, device: Any, adv: Any) -> None:
            data = " ".join(f"{u[4:8]}={v.hex()}" for u, v in adv.service_data.items()) or \
                " ".join(f"mfr{k:04x}={v.hex()}" for k, v in adv.manufacturer_data.items())
            print(f"{time.monotonic() - self.t0:7.3f} {device.address} rssi={adv.rssi:4d} {data}")

    printer: Callable[[Any, Any], None] = Printer()
    scanner = SimulatedBlueZScanner(printer, None, "active", bluez={"adapter": "hci0"})
    async with room:
        await scanner.start()
        await asyncio.sleep(seconds)
        await scanner.stop()


BENCH_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")


def bench_probes(n: int) -> list[Probe]:
    """``n`` BTHome probes for the benchmark: a packet a second, sent 3 times; every third encrypted with
    :data:`BENCH_KEY`; addresses ``A4:C1:38:30:00:00`` upwards."""
    return [Probe(f"A4:C1:38:30:{i // 256:02X}:{i % 256:02X}", "bthome",
                  {"temperature": 20.0 + i % 10, "humidity": 50.0, "battery": 90},
                  bind_key=BENCH_KEY if i % 3 == 0 else None, interval_s=1.0, repeats=3) for i in range(n)]


async def _as_bluez(bus_address: str, probes: list[Probe], others: float, seconds: float | None,
                    quiet_s: float = 0.0) -> None:
    """Be bluetoothd on the D-Bus at ``bus_address`` for a room of ``probes`` (silent for ``quiet_s`` first)."""
    bluez = await FakeBlueZ(bus_address).start()
    await asyncio.sleep(quiet_s)
    async with ProbeRoom("hci0", probes, others_per_s=others) as room:
        room.add_bluez(bluez)
        print(f"BlueZ for {len(probes)} simulated BLE probes on {bus_address}", flush=True)
        await asyncio.sleep(seconds if seconds is not None else float("inf"))
    bluez.stop()


async def _serve(socket_path: str, seconds: float | None, others: float) -> None:
    async with ProbeRoom("hci0", demo_probes(), others_per_s=others) as room:
        server = await serve_air(room, socket_path)
        print(f"a simulated lab of {len(room.probes)} BLE probes on {socket_path}; run the gateway with "
              f"EDUGATE_BLE_BACKEND=edugate.simulators.ble_probes:SocketBlueZScanner {AIR_ENV}={socket_path}",
              flush=True)
        async with server:
            await asyncio.sleep(seconds if seconds is not None else float("inf"))


def main() -> None:
    parser = argparse.ArgumentParser(description="A simulated lab of BLE probes: print its advertisements, or "
                                     "serve them to gateway processes (--serve).")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (print: 3 s)")
    parser.add_argument("--others", type=float, default=5.0, help="phone/headphone advertisements per second")
    parser.add_argument("--serve", metavar="SOCKET", nargs="?", const=DEFAULT_AIR,
                        help=f"serve the air on this Unix socket (default {DEFAULT_AIR}) instead of printing")
    parser.add_argument("--bluez", metavar="BUS_ADDRESS", help="instead: be bluetoothd on this D-Bus (a private "
                        "dbus-daemon that a gateway uses as its system bus), for the benchmark's D-Bus path")
    parser.add_argument("--bench-probes", type=int, metavar="N", help="with --bluez: N benchmark probes "
                        "(bench_probes) instead of the demo lab")
    parser.add_argument("--quiet", type=float, default=0.0, metavar="S", help="with --bluez: advertise "
                        "nothing for the first S seconds")
    args = parser.parse_args()
    if args.bluez:
        probes = bench_probes(args.bench_probes) if args.bench_probes else demo_probes()
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_as_bluez(args.bluez, probes, args.others, args.seconds, args.quiet))
    elif args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args.serve, args.seconds, args.others))
    else:
        asyncio.run(_print_room(args.seconds if args.seconds is not None else 3.0, args.others))


if __name__ == "__main__":
    main()
