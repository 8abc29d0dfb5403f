"""The simulated city through a broker and the ingest workers into VictoriaMetrics (issue 20).

    .venv/bin/python bench/city.py --broker mosquitto [--gateways 2500] [--steady-s 60]
    .venv/bin/python bench/city.py --broker rabbitmq --workers 2 --peak-s 60 --kill-node --drain-workers 1,2,4
    .venv/bin/python bench/city.py --broker nats --workers 2 --peak-s 60 --kill-node --drain-workers 1,2,4

Starts everything on free loopback ports in a temporary folder: VictoriaMetrics (with deduplication), the broker
(one Mosquitto with one MQTT ingest worker, the default; a 3-node RabbitMQ cluster with ``--workers`` AMQP
workers on its quorum queue; or a 3-node NATS cluster, nats-server 2.10+ from ``edugate[cluster]``, with
``--workers`` workers pulling the MQTT layer's stream ``$MQTT_msgs``) and ``--gateways`` simulated gateways
(``edugate.simulators.city``, one process, one MQTT connection each; on the cluster each gateway lists the nodes
in a rotated order, so the connections spread over the three). Phases, each printed as it ends and all in the
final JSON line:

* connect: all gateways connected (s);
* steady: ``--steady-s`` of telemetry and health; datapoints/s written (the workers' stats files), end-to-end
  latency p50/p99 (a probe record published every 0.5 s, polled in the store every 20 ms), PUBACK latency,
  CPU (% of one core) and RSS of the broker, the workers, VictoriaMetrics and the city process;
* peak (``--peak-s``): the city-wide morning tap peak at its top rate (1.5 M students within 15 minutes,
  triangular: 3,333 taps/s at the top) on top of the steady traffic;
* kill-node (RabbitMQ, NATS): kill -9 the node leading the queue (NATS: the stream ``$MQTT_msgs``; a third of
  the gateways are on it): seconds from the kill until each of those gateways has a new connection (the
  reconnect storm); the node is brought back;
* loss: the gateways stop making records and empty their outboxes (``City.quiesce``), stop cleanly, the
  workers drain, and each gateway's acknowledged sensor readings are compared with the store
  (``missing_in_store``): the difference must be zero for every gateway (exit code 1 otherwise);
* ``--vm-day`` (alone): one VictoriaMetrics node and a simulated day of the city's room sensors
  (``--day-gateways`` × 4 sensors × 3 values every ``--day-step-s``), imported as fast as it takes them: samples/s
  sustained, bytes per sample on disk (after the merge), and the time of a district's daily summary query.
* drain (``--drain-workers``, RabbitMQ, NATS): with the workers stopped the city fills the queue for ``--fill-s``,
  then 1, 2, 4... workers drain it: datapoints/s each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psutil

from edugate.central.ingest.amqp_worker import AmqpSettings, declare_only
from edugate.simulators.city import City, CityPlan, missing_in_store
from edugate.simulators.servers import Mosquitto, VictoriaMetrics

REPO = Path(__file__).resolve().parents[1]

STUDENTS_CITY = 1_500_000
PEAK_WINDOW_S = 900.0


def pctl(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


class Procs:
    """CPU and RSS of named process groups, sampled between ``mark()`` and ``read()``."""

    def __init__(self) -> None:
        self.groups: dict[str, list[int]] = {}
        self.alone: set[str] = set()  # groups measured without their children (the city: the rest are ours)
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self._rss: dict[str, int] = {}

    def set(self, name: str, pids: list[int], *, children: bool = True) -> None:
        self.groups[name] = pids
        if not children:
            self.alone.add(name)

    def _tree(self, pid: int, name: str) -> list[psutil.Process]:
        try:
            proc = psutil.Process(pid)
            return [proc] if name in self.alone else [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _cpu(self, name: str) -> float:
        total = 0.0
        for pid in self.groups[name]:
            for p in self._tree(pid, name):
                with suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    total += t.user + t.system
        return total

    def sample_rss(self) -> None:
        for name, pids in self.groups.items():
            rss = 0
            for pid in pids:
                for p in self._tree(pid, name):
                    with suppress(psutil.NoSuchProcess):
                        rss += p.memory_info().rss
            self._rss[name] = max(self._rss.get(name, 0), rss)

    def mark(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {name: self._cpu(name) for name in self.groups}
        self._rss = {}

    def read(self) -> dict[str, dict[str, float]]:
        wall = time.monotonic() - self._t0
        return {name: {"cpu_pct": round(100 * (self._cpu(name) - self._cpu0.get(name, 0.0)) / wall, 1),
                       "rss_mb": round(self._rss.get(name, 0) / 2**20, 1)} for name in self.groups}


def worker_points(stats_files: list[Path], key: str = "points_written") -> int:
    total = 0
    for path in stats_files:
        with suppress(OSError, ValueError):
            total += int(json.loads(path.read_text()).get(key, 0))
    return total


class Rig:
    """The broker(s), the workers and the store of one run."""

    def __init__(self, args: argparse.Namespace, workdir: Path, stack: ExitStack) -> None:
        self.args, self.workdir, self.stack = args, workdir, stack
        self.vm = VictoriaMetrics(workdir / "vm")
        self.vm.start()
        stack.callback(self.vm.stop)
        self.workers: list[subprocess.Popen] = []
        self.stats_files: list[Path] = []
        self.cluster: Any = None
        if args.broker == "mosquitto":
            from edugate.simulators.servers import SHIPPED_CONF

            self.mosquitto = Mosquitto(workdir / "mosquitto", conf_file=SHIPPED_CONF)
            self.mosquitto.start()
            stack.callback(self.mosquitto.stop)
            self.brokers = [f"127.0.0.1:{self.mosquitto.port}"]
        elif args.broker == "nats":
            from edugate.central.ingest.nats_worker import NatsSettings, declare
            from edugate.simulators.nats_cluster import NatsCluster

            self.cluster = NatsCluster(workdir / "nats")
            stack.callback(self.cluster.stop)
            self.cluster.start()
            asyncio.run(declare(NatsSettings(servers=tuple(self.cluster.nats_urls), replicas=3)))
            self.brokers = self.cluster.mqtt_brokers
        else:
            from edugate.simulators.rabbitmq_cluster import RabbitCluster

            self.cluster = RabbitCluster(workdir / "rabbit")
            stack.callback(self.cluster.stop)
            self.cluster.start()
            asyncio.run(declare_only(AmqpSettings(servers=tuple(self.cluster.amqp_urls), replicas=3)))
            self.brokers = self.cluster.mqtt_brokers
        stack.callback(self.stop_workers)

    def broker_pids(self) -> list[int]:
        if self.cluster is None:
            return [self.mosquitto.proc.pid] if self.mosquitto.proc else []
        return [n.proc.pid for n in self.cluster.nodes if n.running and n.proc]

    def start_workers(self, count: int) -> None:
        for i in range(len(self.workers), len(self.workers) + count):
            stats = self.workdir / f"w{i + 1}-{time.monotonic_ns()}.json"
            if self.cluster is None:
                argv = [sys.executable, "-m", "edugate.cli.main", "ingest", "--client-id", f"city-ingest-{i + 1}",
                        "--broker", f"mqtt://{self.brokers[0]}", "--store-url", self.vm.url, "--stats-file",
                        str(stats), "--stats-interval", "0.2"]
            elif self.args.broker == "nats":
                argv = [sys.executable, "-m", "edugate.central.ingest.nats_worker", "--client-id", f"w{i + 1}",
                        "--store", self.vm.url, "--stats-file", str(stats)]
                for url in self.cluster.nats_urls:
                    argv += ["--nats", url]
            else:
                argv = [sys.executable, "-m", "edugate.central.ingest.amqp_worker", "--client-id", f"w{i + 1}",
                        "--store", self.vm.url, "--stats-file", str(stats), "--prefetch", "2000"]
                for url in self.cluster.amqp_urls:
                    argv += ["--amqp", url]
            log = (self.workdir / f"w{i + 1}.log").open("ab")
            self.workers.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO))
            self.stats_files.append(stats)
        deadline = time.monotonic() + 60
        while not all(_subscribed(p) for p in self.stats_files):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not subscribed: see {self.workdir}/w*.log")
            time.sleep(0.1)

    def leader(self) -> Any:
        """The node leading the queue (RabbitMQ) or the stream ``$MQTT_msgs`` (NATS)."""
        if self.args.broker == "nats":
            return nats_stream_leader(self.cluster)
        return self.cluster.queue_leader(AmqpSettings.queue)

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers, self.stats_files = [], []


def nats_stream_leader(cluster: Any) -> Any:
    import nats

    from edugate.central.ingest.nats_worker import MQTT_STREAM

    async def ask() -> str:
        nc = await nats.connect(cluster.nats_urls, connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=5).stream_info(MQTT_STREAM)
            if info.cluster is None or not info.cluster.leader:
                raise RuntimeError(f"{MQTT_STREAM} has no leader")
            return info.cluster.leader
        finally:
            await nc.close()

    name = asyncio.run(ask())
    return next(n for n in cluster.nodes if n.name == name)


def _subscribed(path: Path) -> bool:
    with suppress(OSError, ValueError):
        return bool(json.loads(path.read_text()).get("subscribed"))
    return False


async def probe_latency(brokers: list[str], vm_url: str, stop: asyncio.Event, out: list[float]) -> None:
    """Publish one probe record every 0.5 s (school ``probe``) and poll the store until it is there."""
    host, port = brokers[-1].rsplit(":", 1)
    topic = "edu/v1/probe/gw-1/telemetry"
    k = 0
    async with aiomqtt.Client(host, int(port), identifier="city-probe", keepalive=10) as client:
        while not stop.is_set():
            k += 1
            sent = time.time()
            record = {"seq": k, "kind": "telemetry", "device": "probe", "ts": round(sent * 1000), "synced": True,
                      "values": {"probe_k": k}}
            try:
                await client.publish(topic, orjson.dumps([record]), qos=1, timeout=10)
            except aiomqtt.MqttError:
                return  # the probe's node went away: no more probes in this window
            while not stop.is_set() and time.time() - sent < 30:
                if await asyncio.to_thread(_probe_stored, vm_url, k, sent):
                    out.append((time.time() - sent) * 1000)
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(max(0.0, 0.5 - (time.time() - sent)))


def store_visibility_ms(vm_url: str, count: int = 10) -> list[float]:
    """The store's own delay: a sample written straight to VictoriaMetrics until an export shows it, polled the
    way the probe polls (the baseline of the end-to-end figure: VictoriaMetrics 1.79 makes new samples
    searchable about once a second, even after /internal/force_flush)."""
    out = []
    for k in range(1, count + 1):
        sent = time.time()
        line = f"edugate,school=probe,gateway=gw-0 probe_k={k} {round(sent * 1000)}".encode()
        urllib.request.urlopen(urllib.request.Request(f"{vm_url}/write?precision=ms", data=line, method="POST"),
                               timeout=5).read()
        while not _probe_stored(vm_url, k, sent, gateway="gw-0") and time.time() - sent < 10:
            time.sleep(0.02)
        out.append((time.time() - sent) * 1000)
        time.sleep(0.2)
    return out


def _probe_stored(vm_url: str, k: int, sent: float, gateway: str = "gw-1") -> bool:
    with suppress(OSError):
        urllib.request.urlopen(f"{vm_url}/internal/force_flush", timeout=5).read()
        match = f'edugate_probe_k{{school="probe",gateway="{gateway}"}}'
        query = urllib.parse.urlencode({"match[]": match, "start": f"{sent - 1:.3f}"})
        with urllib.request.urlopen(f"{vm_url}/api/v1/export?{query}", timeout=5) as resp:
            for line in resp.read().splitlines():
                if k in json.loads(line).get("values", []):
                    return True
    return False


async def sample_rss(procs: Procs, stop: asyncio.Event) -> None:
    while not stop.is_set():
        procs.sample_rss()
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def measure_window(rig: Rig, city: City, procs: Procs, seconds: float) -> dict[str, Any]:
    """Datapoints/s, latencies, CPU and RSS over ``seconds`` of whatever the city is doing now."""
    stop = asyncio.Event()
    latencies: list[float] = []
    for g in city.gateways:
        g.ledger.puback_ms.clear()
    procs.set("broker", rig.broker_pids())
    procs.set("workers", [p.pid for p in rig.workers])
    procs.mark()
    points0, acked0, t0 = worker_points(rig.stats_files), city.acked_records(), time.monotonic()
    tasks = [asyncio.create_task(probe_latency(rig.brokers, rig.vm.url, stop, latencies)),
             asyncio.create_task(sample_rss(procs, stop))]
    await asyncio.sleep(seconds)
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    wall = time.monotonic() - t0
    puback = city.puback_ms()
    return {"seconds": round(wall, 1),
            "datapoints_per_s": round((worker_points(rig.stats_files) - points0) / wall),
            "records_acked_per_s": round((city.acked_records() - acked0) / wall),
            "e2e_ms_p50": pctl(latencies, 0.5), "e2e_ms_p99": pctl(latencies, 0.99), "probes": len(latencies),
            "puback_ms_p50": pctl(puback, 0.5), "puback_ms_p99": pctl(puback, 0.99),
            "connected": city.connected_count(), "backlog_records": city.backlog(), **procs.read()}


def _quiet_lost_publishes(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiomqtt leaves the futures of publishes cut off by a lost connection unretrieved: not worth a traceback
    each (the simulated gateway sends those records again)."""
    if isinstance(context.get("exception"), aiomqtt.MqttError):
        return
    loop.default_exception_handler(context)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    asyncio.get_running_loop().set_exception_handler(_quiet_lost_publishes)
    result: dict[str, Any] = {"broker": args.broker, "gateways": args.gateways, "workers": args.workers,
                              "machine": f"{platform.node()} {os.cpu_count()} cores", "date": time.strftime("%F")}
    with ExitStack() as stack:
        rig = await asyncio.to_thread(Rig, args, workdir, stack)  # it runs its own event loop to declare the queue
        rig.start_workers(args.workers)
        baseline = store_visibility_ms(rig.vm.url)
        result["store_visible_ms_p50"] = pctl(baseline, 0.5)
        result["store_visible_ms_max"] = round(max(baseline), 1)
        plan = CityPlan(brokers=tuple(rig.brokers), gateways=args.gateways, sensors_per_gateway=args.sensors,
                        telemetry_interval_s=args.interval_s, connect_spread_s=args.connect_spread_s,
                        rotate_brokers=True)
        procs = Procs()
        procs.set("vm", [rig.vm.proc.pid] if rig.vm.proc else [])
        procs.set("city", [os.getpid()], children=False)
        city = City(plan)
        started = time.time()
        async with city:
            result["connect_all_s"] = round(await city.wait_connected(within_s=300), 1)
            print(f"connected {args.gateways} in {result['connect_all_s']} s", flush=True)
            await asyncio.sleep(5)
            result["steady"] = await measure_window(rig, city, procs, args.steady_s)
            print("steady", result["steady"], flush=True)
            if args.peak_s:
                rate_top = 2 * STUDENTS_CITY / PEAK_WINDOW_S
                per_school = round(rate_top * args.peak_s / args.gateways)
                city.plan = replace(city.plan, students_per_school=per_school)
                for g in city.gateways:
                    g.plan = city.plan
                taps = city.morning_peak(None, window_s=args.peak_s, uniform=True)
                peak = await measure_window(rig, city, procs, args.peak_s)
                peak["taps"] = taps
                peak["taps_per_s"] = round(taps / args.peak_s)
                result["peak"] = peak
                print("peak", peak, flush=True)
            if args.kill_node and rig.cluster is not None:
                result["kill_node"] = await kill_leader(rig, city)
                print("kill-node", result["kill_node"], flush=True)
            city.quiesce()  # no new records; every outbox empties: the ledgers are final
            drained = time.monotonic()
            await city.wait_sent(within_s=1200)
            result["outboxes_emptied_s"] = round(time.monotonic() - drained, 1)
        result["loss"] = await asyncio.to_thread(check_loss, rig, city, time.time() - started + 60)
        print("loss", result["loss"], flush=True)
        if args.drain_workers and rig.cluster is not None:
            result["drain"] = await drain_scaling(rig, plan, args)
    return result


async def kill_leader(rig: Rig, city: City) -> dict[str, Any]:
    """kill -9 the node leading the queue (NATS: the stream); the gateways connected to it reconnect elsewhere
    (the storm): how long until each of them has a new connection, counted from the kill."""
    leader = await asyncio.to_thread(rig.leader)
    users = [g for g in city.gateways if g.connected and g.current_broker == leader.mqtt_address]
    before = {id(g): g.ledger.connects for g in users}
    killed = time.monotonic()
    await asyncio.to_thread(rig.cluster.kill, leader)
    deadline = killed + 300
    while any(g.ledger.connects == before[id(g)] for g in users) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    back = sorted(g.connected_at - killed for g in users if g.ledger.connects > before[id(g)])
    out = {"node": leader.name, "gateways_on_it": len(users), "reconnected": len(back),
           "all_back_s": round(back[-1], 1) if len(back) == len(users) else None,
           "back_s_p50": pctl(back, 0.5), "back_s_p90": pctl(back, 0.9), "connected_now": city.connected_count()}
    try:
        await asyncio.to_thread(rig.cluster.start_node, leader, timeout=120)
        if hasattr(rig.cluster, "wait_clustered"):
            await asyncio.to_thread(rig.cluster.wait_clustered)
        out["node_back"] = True
    except (RuntimeError, TimeoutError) as exc:  # its boot hung (the MQTT plugin's mqtt_node: docs/central.md)
        out["node_back"] = False
        print(f"the killed node did not come back: {str(exc)[:300]}", flush=True)
    return out


def check_loss(rig: Rig, city: City, window_s: float) -> dict[str, Any]:
    """After every outbox emptied and the city stopped: wait until the workers wrote everything (or 10 minutes),
    then compare the store with the ledgers."""
    deadline = time.monotonic() + 600
    missing: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            missing = missing_in_store(city, rig.vm.url, window_s)
        except (OSError, RuntimeError) as exc:  # a slow store under load: ask again
            print(f"loss check: {exc}", flush=True)
            missing = {"?": 1}
        if not missing:
            break
        time.sleep(5)
    acked = sum(n for g in city.gateways for d, n in g.ledger.telemetry.items() if d.startswith("env-"))
    return {"sensor_readings_acked": acked, "gateways_with_a_difference": len(missing),
            "readings_missing": sum(v for v in missing.values() if v > 0),
            "readings_extra": -sum(v for v in missing.values() if v < 0)}


async def drain_scaling(rig: Rig, plan: CityPlan, args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for count in args.drain_workers:
        rig.stop_workers()
        city = City(replace(plan, prefix=f"fill{count}", connect_spread_s=5.0))
        async with city:
            await city.wait_connected(within_s=300)
            await asyncio.sleep(args.fill_s)
            city.quiesce()
            await city.wait_sent(within_s=600)
        records = city.acked_records()
        started = time.monotonic()
        rig.start_workers(count)  # (their start-up, about a second, counts against them)
        while worker_points(rig.stats_files, "records") < records:  # noqa: ASYNC110 - a file, no event
            await asyncio.sleep(0.1)
        wall = time.monotonic() - started
        written = worker_points(rig.stats_files)
        out.append({"workers": count, "backlog_records": records, "written_points": written,
                    "drain_s": round(wall, 1), "datapoints_per_s": round(written / wall)})
        print("drain", out[-1], flush=True)
    return out


def vm_day(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """A day of the city's room sensors into one VictoriaMetrics (its JSON import: one line per series)."""
    import numpy as np

    rng = np.random.default_rng(20)
    steps = int(86_400 // args.day_step_s)
    end_ms = (int(time.time()) // 3600 - 1) * 3_600_000
    stamps = (end_ms - 86_400_000 + np.arange(steps, dtype=np.int64) * int(args.day_step_s * 1000)).tolist()
    districts = 24
    vm = VictoriaMetrics(workdir / "vm-day")
    vm.start()
    try:
        samples, wall, batch = 0, 0.0, []
        for g in range(args.day_gateways):
            school = f"d{g % districts:02d}-s{g:04d}"
            for sensor in range(args.sensors):
                labels = {"school": school, "gateway": f"gw-{g:04d}", "device": f"env-{sensor + 1}",
                          "room": f"room-{sensor + 1}"}
                day = np.sin(np.linspace(0, 2 * np.pi, steps))  # warmer by day
                walk = {
                    "temperature_c": np.round(24 + 3 * day + np.cumsum(rng.normal(0, 0.02, steps)), 1),
                    "humidity_pct": np.round(60 - 8 * day + np.cumsum(rng.normal(0, 0.05, steps))),
                    "co2_ppm": np.round(np.clip(600 + 500 * np.maximum(day, 0)
                                                + np.cumsum(rng.normal(0, 3, steps)), 400, 5000)),
                }
                for name, values in walk.items():
                    batch.append(orjson.dumps({"metric": {"__name__": f"edugate_{name}", **labels},
                                               "values": values.tolist(), "timestamps": stamps}))
                    samples += steps
            if len(batch) >= 600 or g == args.day_gateways - 1:
                body = b"\n".join(batch)
                started = time.monotonic()
                urllib.request.urlopen(urllib.request.Request(f"{vm.url}/api/v1/import", data=body), timeout=600)
                wall += time.monotonic() - started
                batch = []
        started = time.monotonic()
        urllib.request.urlopen(f"{vm.url}/internal/force_flush", timeout=60).read()
        data = workdir / "vm-day" / "data"
        size_flushed = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
        month = time.strftime("%Y_%m", time.gmtime(end_ms / 1000))
        urllib.request.urlopen(f"{vm.url}/internal/force_merge?partition_prefix={month}", timeout=1800).read()
        time.sleep(5)
        size_merged = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
        stored = 0.0
        deadline = time.monotonic() + 120
        while stored < samples and time.monotonic() < deadline:  # every sample searchable (the import is buffered)
            q = urllib.parse.urlencode({"query": 'sum(count_over_time({__name__=~"edugate_.*"}[2d]))',
                                        "time": end_ms / 1000})
            with urllib.request.urlopen(f"{vm.url}/api/v1/query?{q}", timeout=300) as resp:
                result = json.loads(resp.read())["data"]["result"]
            stored = float(result[0]["value"][1]) if result else 0.0
            if stored < samples:
                time.sleep(1)
        visible_s = time.monotonic() - started
        district = "d07"
        queries = {name: f'{fn}(avg_over_time(edugate_{name}{{school=~"{district}-.*"}}[1d]))'
                   for name, fn in (("temperature_c", "avg by (school)"), ("co2_ppm", "max by (school)"),
                                    ("humidity_pct", "avg by (school)"))}
        timings = []
        for _ in range(3):
            started = time.monotonic()
            for query in queries.values():
                q = urllib.parse.urlencode({"query": query, "time": end_ms / 1000})
                with urllib.request.urlopen(f"{vm.url}/api/v1/query?{q}", timeout=120) as resp:
                    schools = len(json.loads(resp.read())["data"]["result"])
            timings.append(time.monotonic() - started)
        return {"gateways": args.day_gateways, "series": args.day_gateways * args.sensors * 3,
                "step_s": args.day_step_s, "samples": samples, "import_s": round(wall, 1),
                "samples_per_s": round(samples / wall), "samples_stored": int(stored),
                "import_to_all_visible_s": round(wall + visible_s, 1),
                "samples_per_s_to_visible": round(samples / (wall + visible_s)), "bytes_on_disk_flushed": size_flushed,
                "bytes_on_disk_merged": size_merged, "bytes_per_sample": round(size_merged / samples, 3),
                "district_summary_schools": schools, "district_summary_ms": [round(t * 1000) for t in timings],
                "queries": list(queries.values())}
    finally:
        vm.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=("mosquitto", "rabbitmq", "nats"), default="mosquitto")
    parser.add_argument("--gateways", type=int, default=2500)
    parser.add_argument("--sensors", type=int, default=4, help="room sensors per gateway (3 values each)")
    parser.add_argument("--interval-s", type=float, default=1.0, help="telemetry interval of every sensor")
    parser.add_argument("--connect-spread-s", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--steady-s", type=float, default=60.0)
    parser.add_argument("--peak-s", type=float, default=0.0)
    parser.add_argument("--kill-node", action="store_true")
    parser.add_argument("--drain-workers", type=lambda s: [int(x) for x in s.split(",") if x], default=[])
    parser.add_argument("--fill-s", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--vm-day", action="store_true", help="only the one-node VictoriaMetrics day (above)")
    parser.add_argument("--day-gateways", type=int, default=2500)
    parser.add_argument("--day-step-s", type=float, default=60.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="edugate-city-"))
    if args.vm_day:
        try:
            print(json.dumps(vm_day(args, workdir)))
        finally:
            if not args.keep:
                import shutil

                shutil.rmtree(workdir, ignore_errors=True)
        return 0
    try:
        result = asyncio.run(run(args, workdir))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))
    return 0 if result["loss"]["gateways_with_a_difference"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
