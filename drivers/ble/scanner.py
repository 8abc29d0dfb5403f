"""One BLE scan per adapter, shared by every probe of the gateway, dispatching advertisements by address.

One adapter hears every probe in range, so the gateway runs one ``bleak.BleakScanner`` per adapter (per
event loop) and hands each advertisement to the probe whose address it carries: one dictionary look-up,
so the phones, headphones and watches of a busy lab (most of what an adapter hears) cost next to nothing
and are never logged. The first probe to join starts the scan, the last to leave stops it.

The scan is kept alive: if it cannot start (no adapter, BlueZ not running, bleak missing) every probe on
the adapter is told why and it is retried with back-off; if nothing at all is heard for ``quiet_restart_s``
the scan is restarted (BlueZ can stop discovering without saying so).

Another ``bleak`` scanner backend (a subclass of ``BaseBleakScanner``) can be swapped in: in this process
with :func:`use_backend`, for a whole gateway process with ``EDUGATE_BLE_BACKEND=module:Class``.
``edugate.simulators.ble_probes`` feeds real BlueZ device properties through bleak's own BlueZ backend
code that way (the tests, the benchmark, and a simulated lab for ``edugate run`` and the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edugate.drivers.base import Backoff

if TYPE_CHECKING:
    from bleak.backends.device import BLEDevice
    from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

log = logging.getLogger(__name__)

QUIET_RESTART_S = 120.0
"""A scan that has heard nothing at all for this long is restarted."""


class Listener(Protocol):
    """What a probe's driver gives the shared scanner."""

    def advert(self, device: BLEDevice, adv: AdvertisementData, wall: float, mono: float) -> None:
        """One advertisement of this probe (called on the event loop, must not block)."""

    def adapter_down(self, message: str) -> None:
        """The adapter cannot scan; ``message`` says why."""

    def adapter_up(self) -> None:
        """The scan runs (again)."""


class AddressInUse(ValueError):
    """Two configured devices name the same probe address on one adapter."""


@dataclass
class ScanStats:
    adverts: int = 0
    """Every advertisement the scan reported."""
    others: int = 0
    """Advertisements of devices that are not configured probes (phones, headphones, ...)."""
    scan_starts: int = 0
    scan_failures: int = 0
    quiet_restarts: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


BACKEND_ENV = "EDUGATE_BLE_BACKEND"
"""``module:Class`` of another bleak scanner backend for every scan of the process, e.g. a Bluetooth proxy's
backend, or ``edugate.simulators.ble_probes:SocketBlueZScanner`` for a simulated lab in another process."""

_backend: type[BaseBleakScanner] | None = None


def use_backend(backend: type[BaseBleakScanner] | None) -> type[BaseBleakScanner] | None:
    """Scan with this bleak scanner backend from now on (None: ``$EDUGATE_BLE_BACKEND`` if set, else the
    platform's, BlueZ on Linux); returns the previous one. Scans already running keep theirs."""
    global _backend
    previous, _backend = _backend, backend
    return previous


def _chosen_backend() -> type[BaseBleakScanner] | None:
    if _backend is not None:
        return _backend
    spec = os.environ.get(BACKEND_ENV)
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        backend: type[BaseBleakScanner] = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise RuntimeError(f"{BACKEND_ENV}={spec!r} names no scanner backend ({exc})") from None
    return backend


class SharedScanner:
    """The scan of one adapter and the probes listening to it."""

    def __init__(self, adapter: str, *, quiet_restart_s: float | None = None) -> None:
        self.adapter = adapter
        self.quiet_restart_s = QUIET_RESTART_S if quiet_restart_s is None else quiet_restart_s
        self.stats = ScanStats()
        self.listeners: dict[str, Listener] = {}
        self.owners: dict[str, str] = {}  # address (upper case) -> device id
        self.error: str | None = None
        self.running = False
        self._last_heard = time.monotonic()
        self._quiet_spell = False  # restarted for quiet and heard nothing since: log the next restarts quietly
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ probes joining and leaving

    def join(self, address: str, device_id: str, listener: Listener) -> None:
        key = address.upper()
        owner = self.owners.get(key)
        if owner is not None and owner != device_id:
            raise AddressInUse(f"address {key} is already configured for device {owner!r} on {self.adapter}: "
                               "one probe, one device entry")
        self.owners[key] = device_id
        for form in (key, key.lower()):  # BlueZ reports upper case; both forms cost nothing at look-up
            self.listeners[form] = listener
        if self.error is not None:
            listener.adapter_down(self.error)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._keep_scanning(), name=f"ble-scan:{self.adapter}")

    def leave(self, address: str) -> bool:
        """Forget a probe; True if it was the last one (the scan is then stopped)."""
        key = address.upper()
        self.owners.pop(key, None)
        for form in (key, key.lower()):
            self.listeners.pop(form, None)
        if self.owners:
            return False
        if self._task is not None:
            self._task.cancel()
            self._task = None
        return True

    # ------------------------------------------------------------ the hot path

    def detected(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """bleak's detection callback: every advertisement the adapter hears comes through here."""
        self.stats.adverts += 1
        listener = self.listeners.get(device.address)
        if listener is None:
            self.stats.others += 1
            return
        now = time.monotonic()
        self._last_heard = now
        self._quiet_spell = False
        listener.advert(device, adv, time.time(), now)

    # ------------------------------------------------------------ keeping the scan alive

    async def _keep_scanning(self) -> None:
        backoff = Backoff(first=1.0, cap=30.0)
        while True:
            try:
                scanner = self._new_scanner()
                await scanner.start()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(_describe(exc))
                await backoff.sleep()
                continue
            self.stats.scan_starts += 1
            self.running = True
            self._up()
            backoff.reset()
            try:
                await self._watch()
            finally:
                self.running = False
                with contextlib.suppress(Exception):
                    await asyncio.shield(scanner.stop())

    def _new_scanner(self) -> Any:
        try:
            from bleak import BleakScanner
        except ImportError as exc:
            raise RuntimeError(f"the BLE library is not installed ({exc}): pip install 'edugate[ble]'") from None
        # bleak's BlueZ default: a signal when a device's data (a new packet) or its RSSI changes
        return BleakScanner(self.detected, None, "active", bluez={"adapter": self.adapter},
                            backend=_chosen_backend())

    async def _watch(self) -> None:
        """Return when the scan has heard nothing at all for ``quiet_restart_s`` (to restart it)."""
        self._last_heard = time.monotonic()
        while True:
            quiet = time.monotonic() - self._last_heard
            if quiet >= self.quiet_restart_s:
                self.stats.quiet_restarts += 1
                log.log(logging.DEBUG if self._quiet_spell else logging.WARNING,
                        "Bluetooth adapter %s heard no probe for %.0f s: restarting the scan", self.adapter, quiet)
                self._quiet_spell = True
                return
            await asyncio.sleep(self.quiet_restart_s - quiet)

    def _down(self, reason: str) -> None:
        self.stats.scan_failures += 1
        message = f"Bluetooth adapter {self.adapter} cannot scan: {reason}; retrying"
        if message != self.error:
            log.warning("%s", message)
        self.error = message
        for listener in set(self.listeners.values()):
            listener.adapter_down(message)

    def _up(self) -> None:
        if self.error is not None:
            log.info("Bluetooth adapter %s scans again", self.adapter)
        else:
            log.info("Bluetooth adapter %s: scanning for %d probe(s)", self.adapter, len(self.owners))
        self.error = None
        for listener in set(self.listeners.values()):
            listener.adapter_up()


HINTS = (  # (words in the error, what to do): the usual reasons a scan cannot start on a gateway
    ("ServiceUnknown", "BlueZ is not running: apt install bluez; systemctl enable --now bluetooth"),
    ("UnknownObject", "no such adapter: see bluetoothctl list (a USB adapter unplugged?)"),
    ("NotReady", "the adapter is powered off: rfkill unblock bluetooth; bluetoothctl power on"),
    ("AccessDenied", "not allowed to use BlueZ: run the gateway as root or in the 'bluetooth' group"),
    ("NotAuthorized", "not allowed to use BlueZ: run the gateway as root or in the 'bluetooth' group"),
)


def _describe(exc: BaseException) -> str:
    args = exc.args  # bleak's errors carry (message, reason)
    text = (args[0] if args and isinstance(args[0], str) else str(exc)).strip()
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):  # dbus-fast: no system bus socket
        return ("the system D-Bus is not running (BlueZ is reached through it): apt install bluez; "
                "systemctl enable --now bluetooth")
    if text and (type(exc).__module__.startswith("bleak") or isinstance(exc, RuntimeError)):
        hint = next((h for words, h in HINTS if words in text), None)
        return f"{text} ({hint})" if hint else text  # bleak's and our own messages say enough
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_scanners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedScanner]] = (
    weakref.WeakKeyDictionary())


def acquire(adapter: str, address: str, device_id: str, listener: Listener) -> SharedScanner:
    """Join the scan of ``adapter`` (created and started on first use, one per event loop)."""
    table = _scanners.setdefault(asyncio.get_running_loop(), {})
    scanner = table.get(adapter)
    if scanner is None:
        scanner = table[adapter] = SharedScanner(adapter)
    scanner.join(address, device_id, listener)
    return scanner


def release(scanner: SharedScanner, address: str) -> None:
    """Leave the scan; the last probe out stops it."""
    if scanner.leave(address):
        for table in _scanners.values():
            if table.get(scanner.adapter) is scanner:
                del table[scanner.adapter]


def scanners() -> dict[str, SharedScanner]:
    """The scans of the running event loop, by adapter (for status pages and the benchmark)."""
    with contextlib.suppress(RuntimeError):
        return dict(_scanners.get(asyncio.get_running_loop(), {}))
    return {}
