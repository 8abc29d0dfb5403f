"""The ingest worker against a real Mosquitto and a real VictoriaMetrics.

Payloads are published with paho at QoS 1 exactly as a gateway does. Every
wait polls with a deadline (``wait_until``); nothing sleeps for a fixed time.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from edugate.central.cli_ingest import ingest
from edugate.central.ingest.worker import IngestConfig, IngestWorker
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central import BASE_TS, Publisher, batches, event, telemetry, topic, wait_until
from tests.helpers import REPO
from tests.vmquery import export, sample_count

SCHOOL = "school-1"
NUMERIC = ("temperature_c", "humidity_pct", "door_open")  # what telemetry() stores; strings are not stored


# ---------------------------------------------------------------------- helpers


@contextmanager
def running_worker(mosquitto: Mosquitto, store_url: str, client_id: str = "ingest-test",
                   **options: Any) -> Iterator[IngestWorker]:
    """An ingest worker in a thread of this process, subscribed before the body runs."""
    cfg = IngestConfig(client_id=client_id, broker_host=mosquitto.host, broker_port=mosquitto.port,
                       store_url=store_url, summary_interval_s=0, **options)
    worker = IngestWorker(cfg)
    thread = threading.Thread(target=worker.run, name=f"worker-{client_id}", daemon=True)
    thread.start()
    try:
        assert worker.subscribed.wait(10), "worker did not subscribe"
        yield worker
    finally:
        worker.stop()
        thread.join(20)
        assert not thread.is_alive(), "worker did not stop"


class WorkerProcess:
    """``python -m edugate.central.cli_ingest`` in a subprocess, watched through its ``--stats-file``."""

    def __init__(self, tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics, client_id: str,
                 *extra: str) -> None:
        self.stats_path = tmp_path / f"{client_id}.stats.json"
        self.log_path = tmp_path / f"{client_id}.log"
        self.argv = [sys.executable, "-m", "edugate.central.cli_ingest", "--client-id", client_id,
                     "--broker", mosquitto.url, "--store-url", victoria.url, "--stats-file", str(self.stats_path),
                     "--summary-interval", "1", *extra]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.stats_path.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.stats().get("subscribed"), 20, 0.05, f"{self.argv[4]} to subscribe")
        return self

    def stats(self) -> dict[str, Any]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def stored(vm_url: str, match: str = '{__name__=~"edugate.*"}') -> dict[tuple[str, ...], list[tuple[int, float]]]:
    """Series -> sorted (timestamp, value) samples; a series key is (name, gateway, device, room, type)."""
    out: dict[tuple[str, ...], list[tuple[int, float]]] = {}
    for series in export(vm_url, match):
        m = series["metric"]
        key = (m["__name__"], m.get("gateway", ""), m.get("device", ""), m.get("room", ""), m.get("type", ""))
        out[key] = sorted(zip(series["timestamps"], series["values"], strict=True))
    return out


def expected_telemetry(gateway: str, records: list[dict[str, Any]]) -> dict[tuple[str, ...], list[tuple[int, float]]]:
    out: dict[tuple[str, ...], list[tuple[int, float]]] = {}
    for r in records:
        for name, value in r["values"].items():
            if isinstance(value, str):
                continue
            key = (f"edugate_{name}", gateway, r["device"], r.get("room", ""), "")
            out.setdefault(key, []).append((r["ts"], float(value)))
    return {k: sorted(v) for k, v in out.items()}


def wait_for_samples(vm_url: str, count: int, match: str = '{__name__=~"edugate_(temperature_c|humidity_pct|'
                     'door_open)"}', timeout: float = 30) -> None:
    wait_until(lambda: sample_count(vm_url, match) >= count, timeout, 0.2, f"{count} samples of {match}")
    assert sample_count(vm_url, match) == count


def lab_records(first_seq: int, count: int, device: str = "lab1-th") -> list[dict[str, Any]]:
    return [telemetry(seq, device) for seq in range(first_seq, first_seq + count)]


# ---------------------------------------------------------------------- end to end


def test_end_to_end_two_gateways(mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    records: dict[str, list[dict[str, Any]]] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    for offset, gw in enumerate(("gw-a", "gw-b")):
        recs = [telemetry(seq, "lab1-th", values={"temperature_c": 20 + seq / 4 + offset, "humidity_pct": 40 + seq,
                                                   "door_open": seq % 3 == 0, "firmware": "1.0"})
                for seq in range(0, 60, 2)]
        recs += [telemetry(seq, "lab2-co2", room=None, values={"co2_ppm": 400 + seq})
                 for seq in range(1, 60, 2)]
        records[gw] = recs
        events[gw] = [event(seq, type_="card_tap" if seq % 2 else "door_forced") for seq in range(100, 110)]
    with running_worker(mosquitto, victoria.url) as worker:
        pub = Publisher(mosquitto.host, mosquitto.port)
        for gw in records:
            pub.publish_all(topic(SCHOOL, gw, "telemetry"), batches(records[gw], 7))
            pub.publish_all(topic(SCHOOL, gw, "event"), batches(events[gw], 4))
        pub.close()
        total_points = 2 * (30 * 3 + 30 + 10)
        wait_until(lambda: sample_count(victoria.url, '{__name__=~"edugate.*"}') >= total_points, 30, 0.2,
                   "every point in the store")
        assert worker.stats.messages_acked == worker.stats.messages == 2 * (9 + 3)
        assert worker.stats.records == 2 * 70 and worker.stats.values_ignored == 2 * 30
    got = stored(victoria.url)
    want: dict[tuple[str, ...], list[tuple[int, float]]] = {}
    for gw in records:
        want |= expected_telemetry(gw, records[gw])
        for e in events[gw]:
            want.setdefault(("edugate_event_count", gw, e["device"], e["room"], e["type"]), []).append((e["ts"], 1.0))
    assert got == {k: sorted(v) for k, v in want.items()}
    assert not any(name == "edugate_firmware" for name, *_ in got)
    labels = export(victoria.url, '{__name__="edugate_co2_ppm",gateway="gw-a"}')[0]["metric"]
    assert labels == {"__name__": "edugate_co2_ppm", "school": SCHOOL, "gateway": "gw-a", "device": "lab2-co2"}


def test_redelivery_and_rebatching_do_not_double_count(mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    recs = lab_records(1, 50)
    with running_worker(mosquitto, victoria.url) as worker:
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches(recs, 10))
        wait_for_samples(victoria.url, 150)
        # the gateway resends after a reconnect: the same records, cut differently, some a third time
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches(recs, 7))
        pub.publish(topic(SCHOOL, "gw-a", "telemetry"), recs[20:45])
        pub.close()
        wait_until(lambda: worker.stats.records == 125 and worker.stats.messages_acked == 14, 20, 0.1,
                   "the resent records to be written")
        assert worker.stats.lines_written == 125
    assert sample_count(victoria.url, '{__name__=~"edugate_.*"}') == 150
    assert stored(victoria.url) == expected_telemetry("gw-a", recs)


def test_store_without_the_dedup_flag_double_counts(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """Why operators must run VictoriaMetrics with -dedup.minScrapeInterval=1ms (docs/mqtt-contract.md)."""
    plain = VictoriaMetrics(tmp_path / "vm-no-dedup", dedup=False)
    plain.start()
    try:
        recs = lab_records(1, 10)
        with running_worker(mosquitto, plain.url) as worker:
            pub = Publisher(mosquitto.host, mosquitto.port)
            for _ in range(2):
                pub.publish(topic(SCHOOL, "gw-a", "telemetry"), recs)
            pub.close()
            wait_until(lambda: worker.stats.lines_written == 20, 20, 0.1, "both copies written")
        wait_until(lambda: sample_count(plain.url, '{__name__="edugate_temperature_c"}') >= 20, 20, 0.2,
                   "both copies visible")
    finally:
        plain.stop()


# ---------------------------------------------------------------------- crashes and outages


def test_worker_killed_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, mosquitto: Mosquitto,
                                                               victoria: VictoriaMetrics) -> None:
    recs = lab_records(1, 4000)
    messages = batches(recs, 50)
    worker = WorkerProcess(tmp_path, mosquitto, victoria, "ingest-crash", "--batch-lines", "50",
                           "--stats-interval", "0.05").start()
    published = threading.Event()

    def publish() -> None:
        pub = Publisher(mosquitto.host, mosquitto.port)
        for payload in messages:
            pub.publish(topic(SCHOOL, "gw-a", "telemetry"), payload)
            time.sleep(0.01)
        pub.close()
        published.set()

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        before = wait_until(lambda: worker.stats().get("records", 0) >= 500 and worker.stats(), 20, 0.02,
                            "the worker to be busy")
        worker.kill()
        assert not published.is_set(), "the publisher finished before the kill: not mid-stream"
        assert 0 < before["records"] < len(recs)
        worker.start()  # same client id: the broker resumes its session
        assert published.wait(30)
        wait_for_samples(victoria.url, 3 * len(recs))
        wait_until(lambda: (s := worker.stats())["messages_acked"] >= s["messages"] > 0, 10, 0.05,
                   "the restarted worker to acknowledge everything")
    finally:
        worker.stop()
    assert stored(victoria.url) == expected_telemetry("gw-a", recs)


def test_worker_killed_with_unacknowledged_messages(tmp_path: Path, mosquitto: Mosquitto,
                                                    victoria: VictoriaMetrics) -> None:
    """Killed while holding messages it could not write yet: the broker sends them again (DUP)."""
    recs = lab_records(1, 600)
    worker = WorkerProcess(tmp_path, mosquitto, victoria, "ingest-crash", "--stats-interval", "0.05").start()
    try:
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches(recs[:300], 30))
        wait_for_samples(victoria.url, 3 * 300)
        victoria.stop()
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches(recs[300:], 30))
        held = wait_until(lambda: (s := worker.stats()).get("write_errors", 0) > 0 and s["messages"] == 20 and s,
                          20, 0.05, "the worker to hold the second half")
        assert held["messages_acked"] == 10
        worker.kill()
        pub.close()
        victoria.start()
        worker.start()
        wait_for_samples(victoria.url, 3 * len(recs))
        after = wait_until(lambda: (s := worker.stats())["messages_acked"] == 10 and s, 10, 0.05,
                           "the held messages acknowledged by the restarted worker")
        assert after["messages_redelivered"] == after["messages"] == 10
    finally:
        worker.stop()
    assert stored(victoria.url) == expected_telemetry("gw-a", recs)


def test_two_workers_share_the_load(tmp_path: Path, mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    workers = [WorkerProcess(tmp_path, mosquitto, victoria, f"ingest-{i}", "--group", "central",
                             "--stats-interval", "0.05", "--summary-interval", "0.2").start()
               for i in (1, 2)]
    try:
        recs = lab_records(1, 2000)
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches(recs, 50))
        pub.close()
        wait_for_samples(victoria.url, 3 * len(recs))
        shares = wait_until(lambda: (sh := [w.stats().get("records", 0) for w in workers]) and sum(sh) == len(recs)
                            and sh, 10, 0.05, "both workers' counters")
        assert all(share > 0 for share in shares), f"one worker got nothing: {shares}"
        assert sum(shares) == len(recs)
        assert [w.terminate() for w in workers] == [0, 0]  # SIGTERM: flush, ack, disconnect, exit 0
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        final = json.loads(w.stats_path.read_text())
        assert final["messages_acked"] == final["messages"] > 0
        log = w.log()
        assert "edugate.central.ingest.worker: ingest: " in log and " points/s), " in log, "periodic summary line"
        assert f"ingest stopped: {final['messages']} msgs" in w.log()
    assert stored(victoria.url) == expected_telemetry("gw-a", recs)


def test_store_down_nothing_lost(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edugate.central.ingest.worker")
    recs = lab_records(1, 300)
    with running_worker(mosquitto, victoria.url) as worker:
        victoria.stop()
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish_all(topic(SCHOOL, "gw-a", "telemetry"), batches(recs, 30))
        wait_until(lambda: worker.stats.write_errors >= 3, 20, 0.1, "write attempts against the stopped store")
        assert not worker.stats.store_up and worker.stats.messages_acked == 0
        victoria.start()
        pub.publish(topic(SCHOOL, "gw-a", "telemetry"), recs[:5])  # a resend while it comes back
        pub.close()
        wait_for_samples(victoria.url, 3 * len(recs))
        wait_until(lambda: worker.stats.messages_acked == 11, 10, 0.1, "every message acknowledged")
    outage_logs = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage_logs) == 1, outage_logs  # once per outage, not once per retry
    assert any("is back" in r.getMessage() for r in caplog.records)
    assert stored(victoria.url) == expected_telemetry("gw-a", recs)


def test_broker_restart_reconnects_quickly(mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    with running_worker(mosquitto, victoria.url) as worker:
        mosquitto.stop()
        wait_until(lambda: not worker.stats.broker_connected, 10, 0.05, "the worker to notice")
        mosquitto.start()
        started = time.monotonic()
        assert worker.subscribed.wait(10)
        assert time.monotonic() - started < 3, "reconnect back-off is capped at about a second"
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish(topic(SCHOOL, "gw-a", "telemetry"), lab_records(1, 10))
        pub.close()
        wait_for_samples(victoria.url, 30)
        assert worker.stats.connects == 2 and worker.stats.disconnects == 1


# ---------------------------------------------------------------------- bad input


def test_garbled_payloads_are_counted_logged_and_acked(mosquitto: Mosquitto, victoria: VictoriaMetrics,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.central.ingest.worker")
    tele = topic(SCHOOL, "gw-a", "telemetry")
    good = lab_records(1, 4)
    no_seq = {k: v for k, v in telemetry(5).items() if k != "seq"}
    no_ts = {k: v for k, v in telemetry(6).items() if k != "ts"}
    text_value = telemetry(7, values={"temperature_c": [21], "humidity_pct": 41.0})  # one value bad, one good
    with running_worker(mosquitto, victoria.url) as worker:
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish(tele, b"\x00\x01 not json")
        pub.publish(tele, {"seq": 1, "kind": "telemetry"})
        pub.publish(tele, [good[0], no_seq, good[1], no_ts, text_value, good[2]])
        pub.publish(topic("Bad School", "gw-a", "telemetry"), [good[3]])
        pub.publish(topic(SCHOOL, "gw-a", "state"), b"online!")
        pub.publish(tele, [good[3]])
        pub.close()
        wait_until(lambda: worker.stats.messages_acked == 6, 20, 0.1, "every message acknowledged")
        stats = worker.stats
        assert (stats.messages_invalid, stats.records_invalid, stats.values_invalid) == (4, 2, 1)
    wait_for_samples(victoria.url, 4 * 3 + 1)
    want = expected_telemetry("gw-a", good)
    want[("edugate_humidity_pct", "gw-a", "lab1-th", "lab-1", "")].append((telemetry(7)["ts"], 41.0))
    assert stored(victoria.url) == {k: sorted(v) for k, v in want.items()}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{tele}: message skipped (11 bytes): payload: not JSON" in text
    assert "expected a JSON array of records, got an object" in text
    assert f"{tele}: 2 record(s) skipped, 1 value(s) skipped: record [1]: 'seq' must be" in text
    assert "record [3]: 'ts' must be a positive integer" in text
    assert "record [4] value 'temperature_c': expected a number or boolean, got an array" in text
    assert "edu/v1/Bad School/gw-a/telemetry: message skipped: school id 'Bad School'" in text
    assert f"{topic(SCHOOL, 'gw-a', 'state')}: state skipped: not JSON" in text


def test_cli_rejects_malformed_urls() -> None:
    app = typer.Typer()
    app.command()(ingest)
    runner = CliRunner()
    for args, message in [
        (["--broker", "mqtt://broker:70000"], "port must be a number between 1 and 65535"),
        (["--broker", "http://broker:1883"], "scheme must be one of"),
        (["--store-url", "127.0.0.1:8428"], "must start with http:// or https://"),
        (["--store-url", "http://:8428"], "no host name"),
        (["--group", "a/b"], "group 'a/b'"),
    ]:
        result = runner.invoke(app, ["--client-id", "w1", *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split()), result.output


# ---------------------------------------------------------------------- gateway state


def test_state_online_offline_and_last_will(mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    state_a, state_b = topic(SCHOOL, "gw-a", "state"), topic(SCHOOL, "gw-b", "state")
    will = orjson.dumps({"status": "offline", "reason": "connection lost"})
    online = {"status": "online", "ts": BASE_TS + 1000, "version": "0.1.0", "started_at": BASE_TS,
              "devices": {"lab1-th": {"state": "online", "error_count": 0, "last_error": None},
                          "door-2": {"state": "error", "error_count": 4, "last_error": "no reply (timeout 1 s)"}}}
    match_a = '{__name__="edugate_gateway_online",gateway="gw-a"}'
    with running_worker(mosquitto, victoria.url) as worker:
        gw_a = Publisher(mosquitto.host, mosquitto.port, "gw-a", will=(state_a, will))
        gw_a.publish(state_a, online, retain=True)
        gw_b = Publisher(mosquitto.host, mosquitto.port, "gw-b", will=(state_b, will))
        gw_b.publish(state_b, online | {"ts": BASE_TS + 2000, "devices": {}}, retain=True)
        wait_until(lambda: len(worker.fleet.snapshot()) == 2, 10, 0.05, "both gateways in the fleet table")
        row_a = worker.fleet.snapshot()[0]
        assert (row_a["gateway"], row_a["status"], row_a["last_seen"], row_a["version"]) == \
            ("gw-a", "online", BASE_TS + 1000, "0.1.0")
        assert row_a["devices_in_error"] == [{"device": "door-2", "state": "error", "error_count": 4,
                                              "last_error": "no reply (timeout 1 s)"}]

        before_will = int(time.time() * 1000)
        gw_a.drop_connection()  # crash: the broker publishes the retained last will
        gw_b.publish(state_b, {"status": "offline", "reason": "shutdown", "ts": BASE_TS + 3000}, retain=True)
        gw_b.close()
        wait_until(lambda: [r["status"] for r in worker.fleet.snapshot()] == ["offline", "offline"], 10, 0.05,
                   "both gateways offline")
        row_a, row_b = worker.fleet.snapshot()
        assert row_a["reason"] == "connection lost" and row_a["since"] >= before_will
        assert row_a["last_seen"] == BASE_TS + 1000  # the will carries no time of its own
        assert (row_b["reason"], row_b["since"]) == ("shutdown", BASE_TS + 3000)

        samples_a = wait_until(lambda: (s := stored(victoria.url, match_a)) and len(next(iter(s.values()))) == 2
                               and next(iter(s.values())), 20, 0.2, "online and offline samples of gw-a")
        assert samples_a[0] == (BASE_TS + 1000, 1.0)
        assert samples_a[1][1] == 0.0 and samples_a[1][0] >= before_will
        assert sorted(stored(victoria.url, '{__name__="edugate_gateway_online",gateway="gw-b"}').values()) == \
            [[(BASE_TS + 2000, 1.0), (BASE_TS + 3000, 0.0)]]
    # a worker started later learns the fleet from the retained states
    with running_worker(mosquitto, victoria.url, client_id="ingest-late") as late:
        wait_until(lambda: len(late.fleet.snapshot()) == 2, 10, 0.05, "retained states")
        assert [(r["gateway"], r["status"], r["reason"]) for r in late.fleet.snapshot()] == \
            [("gw-a", "offline", "connection lost"), ("gw-b", "offline", "shutdown")]
