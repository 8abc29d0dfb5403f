"""Advertisement bytes -> values, for one probe. Pure: no scanner, no event loop; tested on bytes.

BTHome v2 (service data ``FCD2``, plaintext or AES-CCM encrypted with the probe's bind key) is decoded by the
``bthome-ble`` package, the parser Home Assistant uses. The custom firmware of the cheap Xiaomi LYWSD03MMC-class
thermometers (ATC1441 / PVVX) can advertise BTHome too; its own formats (service data ``181A``) are decoded
here, because neither ``bthome-ble``, ``xiaomi-ble`` (stock MiBeacon ``FE95`` only) nor
``bluetooth-data-tools`` covers them:

* ATC1441, 13 bytes, big-endian: MAC[6], temperature int16 x0.1 °C, humidity uint8 %, battery uint8 %,
  battery uint16 mV, frame counter uint8.
* PVVX custom, 15 bytes, little-endian: MAC[6] (reversed), temperature int16 x0.01 °C, humidity uint16
  x0.01 %, battery uint16 mV, battery uint8 %, measurement counter uint8, flags uint8.

Repeats are counted once: the same bytes again, or the same BTHome packet id / ATC counter, within the
dedup window. Whatever cannot be read raises :class:`BadAdvert` with a counter name and a message for IT staff.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edugate.common.ratelimit import LogLimiter
from edugate.contract.records import Value

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
BTHOME_V1_UUIDS = ("0000181c-0000-1000-8000-00805f9b34fb", "0000181e-0000-1000-8000-00805f9b34fb")
ATC_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
ATC1441_LEN = 13
PVVX_LEN = 15

VALUE_NAMES = {"carbon_dioxide": "co2", "signal_strength": "rssi", "volatile_organic_compounds": "voc"}
"""bthome-ble's keys (sensor device classes) that get a shorter name in readings; the rest keep theirs."""
_NAME_RE = re.compile(r"[^A-Za-z0-9_]")


class BadAdvert(ValueError):
    """An advertisement of this probe that cannot be read. ``kind``: the health counter
    (``wrong_key``, ``no_key``, ``plaintext``, ``garbled``, ``unsupported``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Decoded:
    """What one advertisement said. ``duplicate``: a repeat of the previous one (no values then)."""

    values: dict[str, Value] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    format: str = ""
    duplicate: bool = False
    missed: int = 0
    """Packets of this probe never heard since the previous one (a gap in its packet id or counter)."""


def value_name(key: str) -> str:
    """bthome-ble's key -> the reading's value name: ``carbon_dioxide`` -> ``co2``, ``temperature_2`` kept."""
    base, sep, number = key.rpartition("_")
    if sep and number.isdigit():
        return f"{value_name(base)}_{number}"
    return _NAME_RE.sub("_", VALUE_NAMES.get(key, key))[:64]


def _reading_value(value: Any) -> Value | None:
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, datetime):
        return int(value.timestamp())
    return None if value is None else str(value)


# ---------------------------------------------------------------- ATC1441 / PVVX (service data 181A)


def decode_atc(raw: bytes, address: str, expected: str = "auto") -> tuple[str, dict[str, Value], int]:
    """(format, values, frame counter) of one 181A payload; BadAdvert if it is not a sane one of this probe."""
    mac = bytes.fromhex(address.replace(":", ""))
    if len(raw) == ATC1441_LEN and expected in ("auto", "atc1441"):
        if raw[:6] != mac:
            raise BadAdvert("garbled", "ATC1441 payload names another address (damaged packet?)")
        temperature = int.from_bytes(raw[6:8], "big", signed=True) / 10
        values: dict[str, Value] = {"temperature": round(temperature, 1), "humidity": raw[8], "battery": raw[9],
                                    "battery_mv": int.from_bytes(raw[10:12], "big")}
        fmt, counter = "atc1441", raw[12]
    elif len(raw) == PVVX_LEN and expected in ("auto", "pvvx"):
        if raw[:6] != mac[::-1]:
            raise BadAdvert("garbled", "PVVX payload names another address (damaged packet?)")
        values = {"temperature": round(int.from_bytes(raw[6:8], "little", signed=True) / 100, 2),
                  "humidity": round(int.from_bytes(raw[8:10], "little") / 100, 2),
                  "battery_mv": int.from_bytes(raw[10:12], "little"), "battery": raw[12]}
        fmt, counter = "pvvx", raw[13]
    else:
        want = {"atc1441": "13 (ATC1441)", "pvvx": "15 (PVVX)"}.get(expected, "13 (ATC1441) or 15 (PVVX)")
        raise BadAdvert("garbled", f"{len(raw)} bytes of 181A service data, expected {want}")
    if not (-40 <= float(values["temperature"]) <= 85 and 0 <= float(values["humidity"]) <= 100
            and 0 <= int(values["battery"]) <= 100):
        raise BadAdvert("garbled", f"{fmt} values out of the sensor's range (damaged packet?)")
    return fmt, values, counter


# ---------------------------------------------------------------- BTHome v2 through bthome-ble


class _OncePerMinute(logging.Filter):
    """Lets one line per message and probe through per minute; the next one says how many were held back."""

    def __init__(self) -> None:
        super().__init__()
        self.limiter = LogLimiter(burst=1, window_s=60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        first = record.args[0] if isinstance(record.args, tuple) and record.args else None
        held = self.limiter.allow((str(record.msg), str(first)))
        if held is None:
            return False
        if held:
            record.msg = f"{record.msg} ({held} more since the last report)"
        return True


def _quiet_bthome_ble() -> None:
    """bthome-ble logs a WARNING for every advertisement that fails to decrypt (several a second for one probe
    with a wrong key, naming it by a short address only), and an ERROR for every garbled one (an invalid
    version, an unknown object); the driver counts those and logs them itself, once a minute per kind, naming
    the device. Keep the package's ERRORs, at most one a minute per message and probe."""
    logging.getLogger("bthome_ble").setLevel(logging.ERROR)
    logger = logging.getLogger("bthome_ble.parser")  # a logger's filters see only the records it makes itself
    if not any(isinstance(f, _OncePerMinute) for f in logger.filters):
        logger.addFilter(_OncePerMinute())


def _bthome_parser(bind_key: bytes | None) -> Any:
    """A ``bthome_ble.BTHomeBluetoothDeviceData`` that also says what *this* advertisement held.

    The package's update result accumulates every value ever seen, so the values of one advertisement
    are collected from its ``update_sensor`` / ``update_binary_sensor`` / ``fire_event`` calls; whether
    the packet id was a repeat and whether decryption failed are noted from the methods that decide them.
    """
    from bthome_ble import BTHomeBluetoothDeviceData

    _quiet_bthome_ble()
    class Collecting(BTHomeBluetoothDeviceData):
        def begin(self) -> None:
            self.got: dict[str, Any] = {}
            self.fired: list[tuple[str, str, dict[str, Any]]] = []
            self.repeated = False
            self.decrypt_failed = False

        def update_sensor(self, key: str, native_unit_of_measurement: Any, native_value: Any,
                          *args: Any, **kwargs: Any) -> None:
            super().update_sensor(key, native_unit_of_measurement, native_value, *args, **kwargs)
            self.got[key] = native_value

        def update_binary_sensor(self, key: str, native_value: bool | None, *args: Any, **kwargs: Any) -> None:
            super().update_binary_sensor(key, native_value, *args, **kwargs)
            self.got[key] = native_value

        def fire_event(self, key: str, event_type: str,
                       event_properties: dict[str, str | int | float | None] | None = None,
                       name: str | None = None, device_id: str | None = None) -> None:
            super().fire_event(key, event_type, event_properties, name, device_id)
            self.fired.append((key, event_type, dict(event_properties or {})))

        def _is_same_as_last(self, service_info: Any) -> bool:  # the same encrypted bytes again, > 4 s later
            self.repeated = bool(super()._is_same_as_last(service_info))
            return self.repeated

        def _skip_old_or_duplicated_advertisement(self, new_packet_id: float, adv_time: float) -> bool:
            self.repeated = bool(super()._skip_old_or_duplicated_advertisement(new_packet_id, adv_time))
            return self.repeated

        def _decrypt_bthome(self, bthome_data: Any) -> bytes:
            try:
                return bytes(super()._decrypt_bthome(bthome_data))
            except (ValueError, TypeError):
                self.decrypt_failed = True
                raise

    parser = Collecting(bindkey=bind_key)
    parser.begin()
    return parser


class ProbeDecoder:
    """Decodes the advertisements of one probe, remembering what it needs to drop repeats."""

    def __init__(self, address: str, fmt: str = "auto", bind_key: bytes | None = None,
                 dedup_window_s: float = 30.0) -> None:
        self.address = address.upper()
        self.format = fmt
        self.bind_key = bind_key
        self.dedup_window_s = dedup_window_s
        self.decrypted_once = False
        self._parser: Any = None
        self._last_raw: bytes | None = None
        self._last_at = float("-inf")
        self._last_counter: int | None = None
        self._last_packet: int | None = None

    def decode(self, device: BLEDevice, adv: AdvertisementData, now: float) -> Decoded | None:
        """The advertisement's values; None if it carries no probe data (a name-only scan response).
        ``now``: a monotonic time in seconds. Raises BadAdvert."""
        data = adv.service_data
        raw = data.get(BTHOME_UUID) if self.format in ("auto", "bthome") else None
        uuid = BTHOME_UUID
        if raw is None and self.format != "bthome":
            raw, uuid = data.get(ATC_UUID), ATC_UUID
        if raw is None:
            if any(u in data for u in BTHOME_V1_UUIDS):
                raise BadAdvert("unsupported", "BTHome v1 advertisement: set the probe's firmware to BTHome v2")
            return None
        if raw == self._last_raw and now - self._last_at <= self.dedup_window_s:
            self._last_at = now
            return Decoded(duplicate=True, format="repeat")
        if uuid == ATC_UUID:
            out = self._atc(raw, now)
        else:
            out = self._bthome(device, adv, now)
        self._last_raw, self._last_at = raw, now
        return out

    def _atc(self, raw: bytes, now: float) -> Decoded:
        fmt, values, counter = decode_atc(raw, self.address, self.format)
        if counter == self._last_counter and now - self._last_at <= self.dedup_window_s:
            return Decoded(duplicate=True, format=fmt)
        self._last_counter = counter
        return Decoded(values=values, format=fmt, missed=self._missed(counter))

    def _bthome(self, device: BLEDevice, adv: AdvertisementData, now: float) -> Decoded:
        from bthome_ble.parser import BTHomeVersion, EncryptionScheme
        from habluetooth import BluetoothServiceInfoBleak

        if self._parser is None:
            self._parser = _bthome_parser(self.bind_key)
        parser = self._parser
        parser.begin()
        info = BluetoothServiceInfoBleak(
            device.name or adv.local_name or self.address, self.address, adv.rssi, adv.manufacturer_data,
            adv.service_data, adv.service_uuids, "edugate", device, adv, False, now, adv.tx_power)
        try:
            parser.update(info)
        except (IndexError, ValueError, TypeError) as exc:  # bytes the package's parser trips over
            raise BadAdvert("garbled", f"BTHome payload cannot be parsed ({type(exc).__name__})") from None
        encrypted = parser.encryption_scheme == EncryptionScheme.BTHOME_BINDKEY
        if parser.downgrade_detected:
            raise BadAdvert("plaintext", "unencrypted BTHome advertisement although a bind_key is configured: "
                            "refused (encryption switched off on the probe, or another device imitating it)")
        if parser.bthome_version == BTHomeVersion.INVALID:
            raise BadAdvert("garbled", "BTHome service data with an invalid version (not v2)")
        if encrypted and self.bind_key is None:
            raise BadAdvert("no_key", "encrypted BTHome advertisement but no bind_key configured for this probe")
        if parser.decrypt_failed:
            if not self.decrypted_once:
                raise BadAdvert("wrong_key", "decryption failed: wrong bind_key? (no advertisement of this "
                                "probe has decrypted with it since the gateway started)")
            raise BadAdvert("garbled", "decryption failed although the bind_key worked before (a damaged or "
                            "replayed packet)")
        if encrypted:
            self.decrypted_once = True
        values: dict[str, Value] = {}
        for key, native in parser.got.items():
            value = _reading_value(native)
            if value is not None and key not in ("signal_strength", "packet_id"):
                values[value_name(key)] = value
        events = [(key.rpartition("_")[0] if key.rpartition("_")[2].isdigit() else key,
                   {"action": kind, "source": key, **props}) for key, kind, props in parser.fired]
        if not values and not events:
            if parser.repeated:
                return Decoded(duplicate=True, format="bthome")
            raise BadAdvert("garbled", "BTHome payload without a readable measurement (damaged or truncated)")
        packet = parser.got.get("packet_id")
        return Decoded(values=values, events=events, format="bthome-encrypted" if encrypted else "bthome",
                       missed=self._missed(int(packet)) if packet is not None else 0)

    def _missed(self, packet: int) -> int:
        """Packets skipped between the previous packet id (or counter, modulo 256) and this one; a jump of
        64 or more is taken as a restart of the probe, not as loss."""
        last, self._last_packet = self._last_packet, packet
        if last is None:
            return 0
        gap = (packet - last - 1) % 256
        return gap if gap < 64 else 0
