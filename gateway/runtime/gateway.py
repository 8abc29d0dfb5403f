"""The gateway process: outbox, pipeline, drivers and uplink on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import psutil

from edugate.common.privacy import open_school_key
from edugate.common.yamlconfig import format_path
from edugate.contract import __version__
from edugate.contract.records import Emit, Event, Item, Reading, Rejected
from edugate.contract.state import HEALTH_BOOLEAN_VALUES, ModelEntry, model_entries, model_health_values
from edugate.drivers.base import DeviceState, Driver, DriverContext
from edugate.drivers.registry import driver_class
from edugate.gateway.config import GatewayConfigBase, config_warnings
from edugate.gateway.runtime import systemd
from edugate.gateway.runtime.card_rule import state_card_rule
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.cpu_meter import CpuMeter, process_cpu_seconds
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import GATEWAY_DEVICE, Pipeline
from edugate.gateway.runtime.uplink import Uplink
from edugate.gateway.services.base import Record, Service
from edugate.gateway.services.registry import build_services

if TYPE_CHECKING:
    from edugate.gateway.downlink.commands import Downlink
    from edugate.gateway.downlink.config_apply import RemoteConfig
    from edugate.gateway.update.trial import Trial

log = logging.getLogger(__name__)

RecordObserver = Callable[[Record], None]


@dataclass(frozen=True)
class HealthReport:
    """What :meth:`Gateway.report_health` did: the record's outbox sequence and whether the state went out."""

    seq: int | None
    uplink_connected: bool
    state_error: str | None = None  # why the retained state could not be republished (uplink up)


def observing(service: Service) -> Callable[[Record], Record | None]:
    """The service's pipeline stage, called only for the records it ``observes``."""
    stage, wants = service.stage, service.wants

    def stage_if_wanted(record: Record) -> Record | None:
        return stage(record) if wants(record) else record

    return stage_if_wanted


class Gateway:
    """Owns everything one gateway runs. ``await Gateway(cfg).run()`` until cancelled or signalled."""

    def __init__(self, cfg: GatewayConfigBase, config_path: Path | None = None, trial: Trial | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path  # None when built from a config object (tests); the doctor page needs it
        self.clock = Clock(cfg.clock.synced)
        self.started_at = time.time()
        self.pseudonymizer = open_school_key(cfg.privacy.secret_file, cfg.privacy.card_identity)  # checks the rule
        context = DriverContext(pseudonymize=self.pseudonymizer, card_rule=cfg.privacy.card_identity)
        self.drivers: dict[str, Driver] = {}
        for dev in cfg.devices:
            if dev.enabled:
                driver = driver_class(dev.driver)(dev)
                driver.ctx = context
                self.drivers[dev.id] = driver
        self.services = build_services(cfg)
        for service in self.services:  # a service may act on devices (the energy rule's switch-off, issue 16)
            service.use_devices(self.drivers.get)
        for loc, message in config_warnings(cfg):  # valid, but probably not meant (`edugate check` says so too)
            log.warning("%s: %s", format_path(loc), message)
        self.downlink: Downlink | None = None
        if cfg.downlink.enabled:  # imported here: the command machinery and cryptography cost several MB of RSS
            from edugate.gateway.downlink.commands import Downlink
            self.downlink = Downlink.from_config(
                cfg.downlink, school=cfg.school, gateway=cfg.gateway, outbox_path=cfg.storage.path, clock=self.clock,
                device_lookup=self.drivers.get)
        if self.downlink is not None and (tls := cfg.uplink.tls) is not None and tls.cert_file and tls.ca_file:
            from edugate.gateway.downlink.certificate import CertificateRenewal  # cert.csr, cert.install (issue 18)
            CertificateRenewal(tls, cfg.school, cfg.gateway).register(self.downlink.registry)
        if self.downlink is not None:
            for service in self.services:
                for name, command in service.commands().items():
                    self.downlink.registry.register(name, command.args, command.handler)
        self.remote: RemoteConfig | None = None  # config.apply/get, driver.restart and a change's trial (issue 18)
        if config_path is not None:
            from edugate.gateway.downlink.config_apply import RemoteConfig
            self.remote = RemoteConfig(self, config_path, trial)
            if self.downlink is not None:
                self.remote.register(self.downlink.registry)
        self.after_stop: Callable[[], None] | None = None  # what to do once run() has returned: restart()
        self._driver_tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.outbox: Outbox | None = None
        self._over_budget_tasks: set[asyncio.Task[None]] = set()
        self.pipeline: Pipeline | None = None
        self.uplink: Uplink | None = None
        self._process = psutil.Process(os.getpid())
        self._cpu = CpuMeter(window_s=cfg.uplink.health_interval_s, cpu_seconds=process_cpu_seconds(self._process))
        self._stop = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        cfg = self.cfg
        self.outbox = await Outbox.open(cfg.storage.path, budget_bytes=int(cfg.storage.budget_mb * 1024 * 1024),
                                        sync=cfg.storage.sync,
                                        telemetry_commit_delay_s=cfg.storage.telemetry_commit_delay_ms / 1000)
        rooms = {dev.id: dev.room for dev in cfg.devices}
        self.pipeline = Pipeline(self.outbox, self.clock, rooms)
        self.outbox.on_over_budget = self._over_budget_event  # issue 12: central hears of it as an event
        self.pipeline.rules.extend(observing(service) for service in self.services)
        self.uplink = Uplink(cfg, self.outbox, self.state_document, downlink=self.downlink)
        log.info("gateway %s/%s starting with %d devices (outbox %s)", cfg.school, cfg.gateway, len(self.drivers),
                 cfg.storage.path)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._keep_running("uplink", self.uplink.run), name="uplink")
                tg.create_task(self._health_loop(), name="health")
                tg.create_task(systemd.watchdog(), name="watchdog")  # WatchdogSec: pinged while the loop runs
                if cfg.web.enabled:  # the local pages (gateway/web), served on this loop
                    # imported here: fastapi, uvicorn and jinja2 cost several MB of RSS, paid only with web: on
                    from edugate.gateway.web.serve import serve_gateway_web
                    tg.create_task(self._keep_running("web", partial(serve_gateway_web, self)), name="web")
                for service in self.services:
                    tg.create_task(self._keep_running(service.name, partial(service.run, self.emit)),
                                   name=f"service:{service.name}")
                self._tg = tg
                if self.remote is not None:
                    tg.create_task(self._keep_running("remote-config", self.remote.run), name="remote-config")
                self._driver_tasks = {device_id: tg.create_task(self._supervise(driver), name=f"driver:{device_id}")
                                      for device_id, driver in self.drivers.items()}
                systemd.notify(f"READY=1\nSTATUS=gateway {cfg.school}/{cfg.gateway} running")
                await self._stop.wait()
                systemd.notify("STOPPING=1")
                await self._stop_drivers(list(self._driver_tasks.values()))  # no new records while saying goodbye
                await self.uplink.shutdown()  # "offline, shutdown" while the connection is still up
                raise _Stopping
        except* _Stopping:
            pass
        finally:
            await self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def restart(self, action: Callable[[], None]) -> None:
        """Stop cleanly (outbox closed), then ``action`` (e.g. re-execute the gateway) once run() has returned."""
        self.after_stop = action
        self.stop()

    async def restart_driver(self, device_id: str) -> None:
        """Stop one device's driver, close it, and start a fresh driver for the device (``driver.restart``)."""
        old, task = self.drivers[device_id], self._driver_tasks.get(device_id)
        if task is None or self._tg is None:
            raise RuntimeError("the gateway is not running")
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.2)
        with contextlib.suppress(Exception):
            await old.close()
        driver = driver_class(old.config.driver)(old.config)
        driver.ctx = old.ctx
        self.drivers[device_id] = driver
        self._driver_tasks[device_id] = self._tg.create_task(self._supervise(driver), name=f"driver:{device_id}")

    async def _stop_drivers(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel the driver tasks, wait until they have ended, then let the drivers close their ports.

        In that order: closing a shared Modbus connection under a running poll only makes the
        driver open a new one. And a cancellation can be lost on Python 3.11 (``asyncio.wait_for``,
        which pymodbus uses, returns a response that completes in the same loop iteration and
        swallows the CancelledError), so a task still running is cancelled again.
        """
        for _ in range(50):
            pending = [t for t in tasks if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.2)
        else:
            log.error("driver tasks still running after repeated cancellation: %s",
                      ", ".join(t.get_name() for t in tasks if not t.done()))
        for driver in self.drivers.values():
            with contextlib.suppress(Exception):
                await driver.close()
            driver.health.state = DeviceState.STOPPED  # every device, whatever its driver's close() does

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _shutdown(self) -> None:
        for driver in self.drivers.values():
            with contextlib.suppress(Exception):
                await driver.close()
            driver.health.state = DeviceState.STOPPED
        if self.outbox is not None:
            await self.outbox.close()
        # One line with the final counters (skipped polls, outbox, uplink): what a health record
        # would have said, with the same types, for operators reading the journal and for benchmark scripts.
        with contextlib.suppress(Exception):
            final = self.health_record_values()
            log.info("gateway stopped: %s", json.dumps(final, separators=(",", ":")))
            return
        log.info("gateway stopped")

    # ------------------------------------------------------------------ drivers

    async def emit(self, item: Item) -> dict[str, Any] | None:
        assert self.pipeline is not None
        return await self.pipeline.submit(item)

    async def _supervise(self, driver: Driver) -> None:
        """Run a driver; if it crashes (a bug, not a device error), log it and restart it after a pause."""
        delay = 1.0
        while True:
            try:
                await driver.run(self._emit_for(driver))
                log.error("driver %s returned; restarting it", driver.device_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                driver.health.error(f"driver crashed: {type(exc).__name__}: {exc}")
                log.exception("driver %s crashed; restarting in %.0f s", driver.device_id, delay)
            await asyncio.sleep(delay)
            delay = min(60.0, delay * 2)

    async def _keep_running(self, name: str, func: Callable[[], Awaitable[None]]) -> None:
        """Run a core task; a bug in it is logged and the task restarted, never taking the gateway down."""
        while True:
            try:
                await func()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; restarting it in 1 s", name)
                await asyncio.sleep(1)

    def _emit_for(self, driver: Driver) -> Emit:
        async def emit(item: Item) -> dict[str, Any] | None:
            try:
                return await self.emit(item)
            except Rejected as exc:
                driver.health.count("rejected")
                log.warning("rejected from %s: %s", driver.device_id, exc)
                raise

        return emit

    # ------------------------------------------------------------------ health and state

    def health_values(self) -> dict[str, Any]:
        states = [d.health.state for d in self.drivers.values()]
        values: dict[str, Any] = {
            "uptime_s": round(time.time() - self.started_at, 1),
            "devices_online": sum(s == DeviceState.ONLINE for s in states),
            "devices_offline": sum(s == DeviceState.OFFLINE for s in states),
            "cpu_percent": self._cpu.percent(),
            "rss_bytes": self._process.memory_info().rss,
            "clock_synced": self.clock.synced(),
        }
        if self.outbox is not None:
            values |= {k: v for k, v in self.outbox.stats.as_dict().items() if k != "next_seq"}
        if self.uplink is not None:
            values |= {k: v for k, v in self.uplink.stats.as_dict().items() if k != "uplink_last_error"}
        if self.pipeline is not None:
            values |= self.pipeline.stats.as_dict()
        if self.downlink is not None:
            values |= self.downlink.stats.as_dict()
        skipped = sum(d.health.counters.get("skipped_polls", 0) for d in self.drivers.values())
        values["skipped_polls"] = skipped
        values |= model_health_values(self.model_entries())  # model_<name>_calls, ... (issue 14)
        return values

    def model_entries(self) -> dict[str, ModelEntry]:
        """The on-device models the services run (the model stage, the attendance checks): the state's ``models``.
        A service whose status fails is left out (logged): the health record and the state still go out."""
        statuses = []
        for service in self.services:
            try:
                statuses.append(service.status())
            except Exception as exc:
                log.error("service %s: status failed (%s: %s); its models are not in the health record",
                          service.name, type(exc).__name__, exc)
        return model_entries(statuses)

    def health_record_values(self) -> dict[str, Any]:
        """The health record's values: the contract's booleans (``HEALTH_BOOLEAN_VALUES``, e.g. ``clock_synced``,
        a boolean in the state document too) stay booleans, any other flag is sent as 1/0."""
        return {k: (int(v) if isinstance(v, bool) and k not in HEALTH_BOOLEAN_VALUES else v)
                for k, v in self.health_values().items()}

    def state_document(self) -> dict[str, Any]:
        return {
            "ts": self.clock.now_ms(),
            "version": __version__,
            "started_at": int(self.started_at * 1000),
            "school": self.cfg.school,
            "gateway": self.cfg.gateway,
            "district": self.cfg.district,
            "clock_synced": self.clock.synced(),
            "devices": {
                device_id: {
                    "driver": d.config.driver,
                    "room": d.config.room,
                    "state": str(d.health.state),
                    "error_count": d.health.error_count,
                    "last_error": d.health.last_error,
                }
                for device_id, d in self.drivers.items()
            },
            "models": self.model_entries(),
            "card_rule": state_card_rule(self.cfg.privacy.card_identity),
        }

    def status(self) -> dict[str, Any]:
        """Everything the local status page and ``edugate status`` show."""
        broker = self.uplink.broker if self.uplink else self.cfg.uplink.first_broker  # in use, or first of the list
        return self.state_document() | {
            "health": self.health_values(),
            "uplink": {"host": broker.host, "port": broker.port,
                       "last_error": self.uplink.stats.last_error if self.uplink else None},
            "devices": {device_id: d.health.as_dict() | {"driver": d.config.driver, "room": d.config.room}
                        for device_id, d in self.drivers.items()},
            "services": {service.name: service.status() for service in self.services},
        }

    # ------------------------------------------------------------------ what the local pages use

    def add_record_observer(self, observer: RecordObserver) -> None:
        """Call ``observer`` with every record after it is committed (the live pages); the pipeline must run."""
        assert self.pipeline is not None, "observe records once the gateway runs"
        self.pipeline.observers.append(observer)

    def remove_record_observer(self, observer: RecordObserver) -> None:
        if self.pipeline is not None:
            with contextlib.suppress(ValueError):
                self.pipeline.observers.remove(observer)

    async def report_health(self) -> HealthReport:
        """Commit a health record now and, if the uplink is up, republish the retained state."""
        record = await self.emit(Reading(GATEWAY_DEVICE, self.health_record_values()))
        seq = record.get("seq") if record else None
        if self.uplink is None or not self.uplink.stats.connected:
            return HealthReport(seq, uplink_connected=False)
        try:
            await self.uplink.publish_state()
        except (aiomqtt.MqttError, TimeoutError) as exc:
            return HealthReport(seq, uplink_connected=True, state_error=str(exc))
        return HealthReport(seq, uplink_connected=True)

    async def _health_loop(self) -> None:
        interval = self.cfg.uplink.health_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.emit(Reading(GATEWAY_DEVICE, self.health_record_values()))
            except Rejected as exc:  # a bug: health values must always be valid
                log.error("health record rejected: %s", exc)
            if self.uplink is not None:
                with contextlib.suppress(Exception):
                    await self.uplink.publish_state()


    def _over_budget_event(self, figures: dict[str, Any]) -> None:
        """The outbox went over its disk budget: an ``outbox_over_budget`` event (events are never thinned)."""
        async def emit() -> None:
            try:
                await self.emit(Event(GATEWAY_DEVICE, "outbox_over_budget", figures))
            except Exception as exc:  # the outbox goes on thinning; the health record still counts it
                log.error("outbox_over_budget event not recorded: %s", exc)
        task = asyncio.get_running_loop().create_task(emit(), name="outbox-over-budget")
        self._over_budget_tasks.add(task)
        task.add_done_callback(self._over_budget_tasks.discard)


class _Stopping(Exception):
    pass
