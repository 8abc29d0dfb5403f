"""Modbus TCP and RTU driver: polls lab sensors (temperature, humidity, CO2, pH, energy) by register map.

One :class:`ModbusDriver` serves one device (one unit id). Devices on the same
endpoint (same ``host:port``, or same serial port = same RS485 bus) share one
pymodbus client, used by one request at a time: an RS485 bus has one master,
and many TCP-to-RS485 gateways accept one connection. For TCP,
``tcp_connections`` allows a small pool of connections per endpoint.

Each poll reads the device's registers in as few requests as the register map
allows (see :func:`drivers.modbus_codec.plan_reads`) and emits one
:class:`~gateway.records.Reading`. Polls follow a fixed-rate schedule on the
event-loop clock; a poll that would start late (the previous one overran, or
the loop was busy) is skipped and counted, never queued.

Failures are sorted into three kinds, each with one clear log line naming the
device, endpoint and unit: the link failed (cannot connect, timeout, connection
closed), the answer was garbled (bad CRC, wrong unit, short response), or the
device refused (a Modbus exception response). The device goes OFFLINE and is
retried with capped exponential back-off; other devices keep running.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from edugate.contract.records import Emit, Event, Reading, Rejected
from edugate.drivers.base import Backoff, DeviceState, Driver, Outage
from edugate.drivers.modbus.codec import (
    EXCEPTION_NAMES,
    FUNCTION_CODE,
    ReadBlock,
    diagnose_rtu,
    diagnose_tcp,
    hexdump,
    plan_reads,
)
from edugate.drivers.modbus.config import ModbusDeviceConfig, Profile, Register, RegisterOverride, load_profile

__all__ = [
    "DeviceRefused",
    "Endpoint",
    "GarbledResponse",
    "LinkError",
    "ModbusDeviceConfig",
    "ModbusDriver",
    "ModbusError",
    "Profile",
    "Register",
    "RegisterOverride",
    "load_profile",
]

log = logging.getLogger(__name__)

# pymodbus logs an error or warning on every timeout and failed connect; the driver
# reports each failure once, with more context. Set the "pymodbus" logger's level
# yourself (e.g. DEBUG, to see every frame) and this leaves it alone.
if logging.getLogger("pymodbus").level == logging.NOTSET:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

PYMODBUS_TIMEOUT_S = 3600.0
"""pymodbus's own timeout is kept out of the way: every request runs under the device's ``timeout_s``."""

TIMEOUTS_BEFORE_RECONNECT = 3
"""Consecutive timeouts on a TCP link (no answer at all, from any unit) before it is closed and reopened."""


# ---------------------------------------------------------------- errors


class ModbusError(Exception):
    """A failed read or connect, in parts: ``what`` happened, ``detail`` (why), the bytes received.

    The driver renders it with the device, endpoint, unit and the registers it
    was reading; see :meth:`describe`.
    """

    def __init__(self, what: str, detail: str = "", *, data: bytes = b"", during_connect: bool = False) -> None:
        self.what = what
        self.detail = detail
        self.data = data
        self.during_connect = during_connect
        self.reading: str | None = None  # the registers being read, set by the driver
        super().__init__(self.describe())

    def describe(self, reading: str | None = None) -> str:
        """E.g. ``timeout after 1.0 s reading holding registers 0..2`` or ``cannot connect: connection refused``."""
        text = self.what
        if reading and not self.during_connect:
            text += f" reading {reading}"
        if self.detail:
            text += f": {self.detail}"
        if self.data:
            text += f" [received {hexdump(self.data)}]"
        return text

    @property
    def key(self) -> tuple[str, str]:
        """What stays the same when the same fault repeats (the received bytes may not)."""
        return (self.what, self.detail)


class LinkError(ModbusError):
    """The link failed: cannot connect, no answer in time, or the connection closed."""


class GarbledResponse(ModbusError):
    """Bytes came back but not a valid answer: bad CRC, wrong unit, wrong or short length."""


class DeviceRefused(ModbusError):
    """The device answered with a Modbus exception response (e.g. illegal data address)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__("device refused", f"exception {code}, {EXCEPTION_NAMES.get(code, 'unknown exception code')}")


class ConfigConflict(ModbusError):
    """Devices sharing a serial port disagree on its settings."""


def _secs(t: float) -> str:
    text = f"{t:g}"
    return text if "." in text or "e" in text else f"{text}.0"


def describe_os_error(exc: OSError) -> str:
    """What a failed connect or port open means, in words an IT person can act on."""
    if isinstance(exc, socket.gaierror):
        return "unknown host name (check 'host', and DNS)"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return "connection refused (nothing listens on that port: device off, or wrong port?)"
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "host unreachable (check the network cable, address and VLAN)"
    if exc.errno == errno.ENOENT:
        return "serial port does not exist (is the USB-RS485 adapter plugged in?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied on the serial port (add the gateway's user to the 'dialout' group)"
    if exc.errno in (errno.EBUSY, errno.EWOULDBLOCK):
        return "serial port is in use by another program"
    text = str(exc)
    if "exclusively lock" in text:
        return "serial port is in use by another program"
    return text or type(exc).__name__


# ---------------------------------------------------------------- cancellation around pymodbus

_T = TypeVar("_T")


async def _keep_cancellation(call: Awaitable[_T]) -> _T:
    """Await a pymodbus call (a request, a connect) without losing a cancellation of the calling task.

    pymodbus awaits every answer, and every connect, with ``asyncio.wait_for`` (``TransactionManager.execute``,
    ``ModbusProtocol.connect``). On Python 3.11, when the cancellation reaches ``wait_for`` in the same turn of
    the event loop as the answer resolves the awaited future, ``wait_for`` returns the answer and drops the
    cancellation (``asyncio/tasks.py``: ``except CancelledError: if fut.done(): return fut.result()``; CPython
    gh-86296, mended in 3.12, where ``wait_for`` is built on ``asyncio.timeout``). The task then polls on with
    ``cancelling()`` set and nothing left to raise it, and whoever stops it (the gateway's shutdown,
    ``driver.restart``) waits for good. The cancellation is still counted (``Task.cancelling``): a call that
    returns with more of it than it started with raises it again. (Our own ``asyncio.timeout`` around a request
    cancels the same way; it takes its cancellation back on exit and turns it into ``TimeoutError``.)"""
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await call
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


# ---------------------------------------------------------------- one client (connection or open serial port)


class _Link:
    """One pymodbus client. Used by one request at a time (the endpoint sees to that)."""

    def __init__(self, cfg: ModbusDeviceConfig) -> None:
        self.transport = cfg.transport
        self._rx = b""
        self._lost = False
        self._timeouts = 0
        self._connect_error: str | None = None
        self._deadline: asyncio.Timeout | None = None
        self._frame_gap = 0.0
        self._last_frame_end = 0.0
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if cfg.transport == "tcp":
            assert cfg.host is not None
            client = AsyncModbusTcpClient(
                cfg.host, port=cfg.port, name=cfg.endpoint_label, reconnect_delay=0, timeout=PYMODBUS_TIMEOUT_S,
                retries=0, trace_packet=self._trace_packet, trace_connect=self._trace_connect)
        else:
            assert cfg.serial_port is not None
            client = AsyncModbusSerialClient(
                cfg.serial_port, baudrate=cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity,
                stopbits=cfg.stopbits, name=cfg.endpoint_label, reconnect_delay=0, timeout=PYMODBUS_TIMEOUT_S,
                retries=0, trace_packet=self._trace_packet, trace_connect=self._trace_connect)
            # Modbus RTU: at least 3.5 character times of silence between frames (1.75 ms above 19200 bit/s).
            self._frame_gap = 3.5 * 11 / cfg.baudrate if cfg.baudrate <= 19200 else 0.00175
        self.client = client
        self._capture_connect_errors()

    def _capture_connect_errors(self) -> None:
        """pymodbus's connect() returns False and hides why; keep the OSError so the log can say."""
        create: Callable[[], Awaitable[Any]] | None = getattr(self.client.ctx, "call_create", None)
        if create is None:  # another pymodbus layout: fall back to a generic message
            return

        async def call_create() -> Any:
            try:
                return await create()
            except OSError as exc:
                self._connect_error = describe_os_error(exc)
                raise

        self.client.ctx.call_create = call_create

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._rx = b""
        else:  # pymodbus passes its receive buffer so far: keep what arrived for this request
            self._rx = data if data.startswith(self._rx) else self._rx + data
        return data

    def _trace_connect(self, connected: bool) -> None:
        if not connected:
            self._lost = True
            if self._deadline is not None:  # end the request now instead of waiting for its timeout
                self._deadline.reschedule(asyncio.get_running_loop().time())

    @property
    def connected(self) -> bool:
        return self.client.connected

    async def connect(self, timeout_s: float) -> None:
        self._connect_error = None
        try:
            async with asyncio.timeout(timeout_s):
                ok = await _keep_cancellation(self.client.connect())
        except TimeoutError:
            self.client.close()
            raise LinkError("cannot connect", f"no answer after {_secs(timeout_s)} s", during_connect=True) from None
        if not ok:
            self.client.close()
            raise LinkError("cannot connect", self._connect_error or "connect failed", during_connect=True)
        self._lost = False
        self._timeouts = 0

    async def read(self, function: str, address: int, count: int, unit: int, timeout_s: float) -> list[int]:
        """The ``count`` registers from ``address``; raises a :class:`ModbusError` subclass."""
        if not self.client.connected:
            await self.connect(timeout_s)
        if self._frame_gap:
            wait = self._last_frame_end + self._frame_gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        read = self.client.read_holding_registers if function == "holding" else self.client.read_input_registers
        self._lost = False
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                self._deadline = deadline
                response = await _keep_cancellation(read(address, count=count, device_id=unit))
        except TimeoutError:
            raise self._no_answer(function, unit, timeout_s) from None
        except ConnectionException:
            self.client.close()
            raise LinkError("connection closed") from None
        except ModbusException as exc:  # pymodbus could not decode what came back
            raise GarbledResponse("undecodable response", str(exc), data=self._rx) from None
        finally:
            self._deadline = None
            self._last_frame_end = time.monotonic()
        self._timeouts = 0
        if response.isError():
            raise DeviceRefused(int(getattr(response, "exception_code", 0)))
        registers = list(response.registers)
        if len(registers) != count:
            raise GarbledResponse(f"{'short' if len(registers) < count else 'wrong length'} response",
                                  f"{len(registers)} of {count} registers")
        return registers

    async def identify(self, unit: int, timeout_s: float) -> dict[int, bytes]:
        """Read Device Identification (43/14): the regular objects, or the basic ones if the device refuses
        those; object id -> value. Raises a :class:`ModbusError` subclass."""
        if not self.client.connected:
            await self.connect(timeout_s)
        refused: DeviceRefused | None = None
        for read_code in (2, 1):  # regular (adds the model name), then basic (vendor, product code, revision)
            try:
                async with asyncio.timeout(timeout_s):
                    response = await _keep_cancellation(
                        self.client.read_device_information(read_code=read_code, device_id=unit))
            except TimeoutError:
                raise self._no_answer("identification", unit, timeout_s) from None
            except ConnectionException:
                self.client.close()
                raise LinkError("connection closed") from None
            except ModbusException as exc:
                raise GarbledResponse("undecodable response", str(exc), data=self._rx) from None
            finally:
                self._last_frame_end = time.monotonic()
            if not response.isError():
                return {int(k): v for k, v in dict(getattr(response, "information", {}) or {}).items()
                        if isinstance(v, bytes)}
            refused = DeviceRefused(int(getattr(response, "exception_code", 0)))
        assert refused is not None
        raise refused

    def _no_answer(self, function: str, unit: int, timeout_s: float) -> ModbusError:
        if self._lost:
            self.client.close()
            return LinkError("connection closed by the other end")
        if self._rx:
            diagnose = diagnose_tcp if self.transport == "tcp" else diagnose_rtu
            return GarbledResponse("garbled response", diagnose(self._rx, unit, FUNCTION_CODE.get(function, 43)),
                                   data=self._rx)
        self._timeouts += 1
        if self.transport == "tcp" and self._timeouts >= TIMEOUTS_BEFORE_RECONNECT:
            self.client.close()  # possibly a half-open connection: reopen on the next request
            self._timeouts = 0
        return LinkError(f"timeout after {_secs(timeout_s)} s")

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------- endpoints shared by devices


class Endpoint:
    """The clients of one ``host:port`` or one serial port, shared by every device there."""

    def __init__(self, key: tuple[Any, ...], cfg: ModbusDeviceConfig) -> None:
        self.key = key
        self.serial_settings = cfg.serial_settings
        self.settings_from = cfg.id
        self.max_links = cfg.tcp_connections if cfg.transport == "tcp" else 1
        self.users: set[str] = set()
        self._template = cfg
        self._links: list[_Link] = []
        self._idle: deque[_Link] = deque()
        self._slots = asyncio.Semaphore(self.max_links)

    def join(self, cfg: ModbusDeviceConfig) -> None:
        if cfg.transport == "rtu" and cfg.serial_settings != self.serial_settings:
            raise ConfigConflict(
                "serial settings conflict", f"{cfg.serial_settings} here, {self.serial_settings} for device "
                f"{self.settings_from!r} on the same port: every device on one RS485 bus must use the same "
                "baudrate, parity, stop bits and data bits", during_connect=True)
        if cfg.transport == "tcp" and cfg.tcp_connections > self.max_links:
            for _ in range(cfg.tcp_connections - self.max_links):
                self._slots.release()
            self.max_links = cfg.tcp_connections
        self.users.add(cfg.id)

    async def read(self, block: ReadBlock, unit: int, timeout_s: float) -> list[int]:
        """Read one block from one unit over a free link (waiting, first come first served)."""
        async with self._slots:
            link = self._idle.pop() if self._idle else self._new_link()
            try:
                return await link.read(block.function, block.address, block.count, unit, timeout_s)
            finally:
                self._idle.append(link)

    async def identify(self, unit: int, timeout_s: float) -> dict[int, bytes]:
        """Read Device Identification of one unit over a free link."""
        async with self._slots:
            link = self._idle.pop() if self._idle else self._new_link()
            try:
                return await link.identify(unit, timeout_s)
            finally:
                self._idle.append(link)

    def _new_link(self) -> _Link:
        link = _Link(self._template)
        self._links.append(link)
        return link

    def close(self) -> None:
        for link in self._links:
            link.close()
        self._links.clear()
        self._idle.clear()


_endpoints: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], Endpoint]] = (
    weakref.WeakKeyDictionary())


def endpoint_key(cfg: ModbusDeviceConfig) -> tuple[Any, ...]:
    """Devices with equal keys share clients: same host and port, or the same serial device file."""
    if cfg.transport == "tcp":
        assert cfg.host is not None
        return ("tcp", cfg.host.lower(), cfg.port)
    assert cfg.serial_port is not None
    return ("rtu", os.path.realpath(cfg.serial_port))


def acquire_endpoint(cfg: ModbusDeviceConfig) -> Endpoint:
    """The endpoint for this device, created on first use (per event loop)."""
    table = _endpoints.setdefault(asyncio.get_running_loop(), {})
    key = endpoint_key(cfg)
    endpoint = table.get(key)
    if endpoint is None:
        endpoint = table[key] = Endpoint(key, cfg)
    endpoint.join(cfg)
    return endpoint


def release_endpoint(endpoint: Endpoint, device_id: str) -> None:
    """Forget a device; the last one out closes the clients."""
    endpoint.users.discard(device_id)
    if endpoint.users:
        return
    endpoint.close()
    for table in _endpoints.values():
        if table.get(endpoint.key) is endpoint:
            del table[endpoint.key]


IDENTIFICATION_OBJECTS = {0: "make", 1: "product_code", 2: "firmware", 4: "product_name", 5: "model"}
"""Read Device Identification object ids -> device_info keys (VendorName, ProductCode, MajorMinorRevision,
ProductName, ModelName)."""


def device_info(objects: dict[int, bytes]) -> dict[str, str]:
    """The 43/14 objects as ``device_info`` data: make, model (ModelName, else ProductName, else ProductCode),
    firmware, product code; printable text only, at most 64 characters each."""
    info: dict[str, str] = {}
    for object_id, key in IDENTIFICATION_OBJECTS.items():
        text = objects.get(object_id, b"").decode("latin-1")
        text = "".join(ch for ch in text if ch.isprintable()).strip()[:64]
        if text:
            info[key] = text
    model = info.pop("product_name", None)
    if "model" not in info and (model or info.get("product_code")):
        info["model"] = model or info["product_code"]
    return info


# ---------------------------------------------------------------- the driver


class ModbusDriver(Driver[ModbusDeviceConfig]):
    """Polls one Modbus device and emits one Reading per poll."""

    config_model = ModbusDeviceConfig

    def __init__(self, config: ModbusDeviceConfig) -> None:
        super().__init__(config)
        self.blocks: list[ReadBlock] = plan_reads(config.points, config.effective_max_gap)
        self.where = f"{config.id} ({config.endpoint_label} unit {config.unit})"
        self._endpoint: Endpoint | None = None
        self._failures = 0
        self.outage = Outage(self.health, log, self.where, health_text="{message}", down_text="{message}",
                             still_text="{message} (still failing, {failures} times)",
                             up_text="{where}: back online after {failures} failed polls ({down:.1f} s)")
        self._not_finite: tuple[str, ...] = ()  # values left out of the last reading (NaN, infinity)
        self._identified = not config.identify  # asked once per run (issue 16: the asset registry's identity)

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        period = cfg.poll_interval_s
        grace = min(0.5 * period, max(0.1 * period, 0.005))  # lateness tolerated before a tick counts as missed
        backoff = Backoff(first=min(max(period, 0.1), cfg.backoff_max_s), cap=cfg.backoff_max_s)
        next_at = loop.time()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late = loop.time() - next_at
            if late > grace:  # overran or the loop was busy: skip the missed ticks, never queue them
                missed = math.ceil((late - grace) / period)
                self.health.count("skipped_polls", missed)
                next_at += missed * period
                continue
            next_at += period
            try:
                reading = await self.poll()
            except ModbusError as exc:
                self._failed(exc)
                await backoff.sleep()
                next_at = loop.time()
                continue
            if self._failures:
                self._recovered()
            self.health.ok()
            backoff.reset()
            if not reading.values:  # every value was NaN or infinite: nothing to record this time
                continue
            try:
                await emit(reading)
            except Rejected as exc:
                self.health.count("rejected")
                log.warning("%s: reading rejected: %s", self.where, exc)
            if not self._identified:
                await self._identify(emit)

    async def poll(self) -> Reading:
        """Read every block once; the Reading is stamped when the first request goes out."""
        cfg = self.config
        if self._endpoint is None:
            self._endpoint = acquire_endpoint(cfg)  # may raise ConfigConflict
        self.health.count("polls")
        ts = time.time()
        values: dict[str, int | float] = {}
        for block in self.blocks:
            try:
                registers = await self._endpoint.read(block, cfg.unit, cfg.timeout_s)
            except ModbusError as exc:
                exc.reading = block.describe()
                raise
            finally:
                self.health.count("reads")
            values.update(block.decode(registers))
        return Reading(cfg.id, self._finite(values), ts)

    async def _identify(self, emit: Emit) -> None:
        """Ask once for the device's identity (43/14) and send it as a ``device_info`` event; a device that
        refuses or does not answer is noted in the log and polled as before (never asked again in this run)."""
        self._identified = True
        assert self._endpoint is not None
        try:
            objects = await self._endpoint.identify(self.config.unit, self.config.timeout_s)
        except ModbusError as exc:
            self.health.count("identify_failed")
            log.info("%s: no device identification (function 43/14): %s", self.where, exc.describe())
            return
        info = device_info(objects)
        if not info:
            log.info("%s: device identification (43/14) answered without a vendor, product or revision", self.where)
            return
        try:
            await emit(Event(self.config.id, "device_info", {"protocol": "modbus", **info}))
        except Rejected as exc:
            self.health.count("rejected")
            log.warning("%s: device_info rejected: %s", self.where, exc)

    def _finite(self, values: dict[str, int | float]) -> dict[str, int | float]:
        """``values`` without NaN and infinities, counted and logged once per change.

        A float32 register holds NaN or infinity while a sensor warms up or when its probe is
        missing; that value is left out and the rest of the reading is kept, rather than the
        whole reading being refused.
        """
        bad = tuple(name for name, v in values.items() if isinstance(v, float) and not math.isfinite(v))
        if bad:
            self.health.count("values_not_finite", len(bad))
            values = {name: v for name, v in values.items() if name not in bad}
        if bad != self._not_finite:
            if bad:
                log.warning("%s: %s reported as NaN or infinity (a sensor fault, a missing probe or warming up): "
                            "left out of the readings until the device reports a number again", self.where,
                            ", ".join(bad))
            else:
                log.info("%s: %s reported as numbers again", self.where, ", ".join(self._not_finite))
            self._not_finite = bad
        return values

    def _failed(self, exc: ModbusError) -> None:
        self.health.count("errors")
        self._failures += 1
        self.outage.down(f"{self.where}: {exc.describe(exc.reading)}", key=(*exc.key, exc.reading),
                         failures=self._failures)

    def _recovered(self) -> None:
        self.outage.up(failures=self._failures)
        self._failures = 0

    async def close(self) -> None:
        if self._endpoint is not None:
            release_endpoint(self._endpoint, self.config.id)
            self._endpoint = None
        self.health.state = DeviceState.STOPPED
