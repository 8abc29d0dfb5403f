"""The push adapter against a real warehouse (an HTTP server on a free port, tests/central/push) and real
figures (Mosquitto -> ingest worker -> VictoriaMetrics and the event store, the small city of tests/central/api):
signed, delivered once per idempotency key, retried with backoff, dead-lettered, re-delivered, anonymised."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from typer.testing import CliRunner, Result

from edugate.central.cli_common import central_config_or_exit
from edugate.central.config import PushRetry
from edugate.central.indicators.publish import figures_document
from edugate.central.push.deliver import backoff_s
from edugate.central.push.runner import Pusher
from edugate.central.push.signing import load_secret, signature, verify
from edugate.central.push.spool import Spool
from edugate.cli.main import app as edugate
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central.api import DAY, DISTRICTS, GATEWAYS, HEALTH_S, PSEUDONYMS, TZ, feed_city
from tests.central.push import Warehouse
from tests.helpers import wait_for

SECRET = b"0123456789abcdef0123456789abcdef-test"
BATCH_ROWS = 20
NOT_TO_LEAVE = (*PSEUDONYMS, *GATEWAYS.values(), "door-1", "desk-1", "lab1-co2", "lab1-th", "room-1", "_gateway",
                "p:", "teacher", "pendulum", "board-1", "proj-1", "gate-1")


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("push-city")
    broker, vm = Mosquitto(tmp / "mosquitto"), VictoriaMetrics(tmp / "victoria")
    broker.start()
    vm.start()
    try:
        feed_city(broker, vm.url, tmp / "events.sqlite")
        yield vm.url, tmp / "events.sqlite"
    finally:
        vm.stop()
        broker.stop()


@pytest.fixture
def warehouse() -> Iterator[Warehouse]:
    server = Warehouse(SECRET)
    yield server
    server.close()


def write_config(tmp: Path, city: tuple[str, Path], url: str, **push: object) -> Path:
    (tmp / "push-secret").write_text(SECRET.decode() + "\n")
    retry = {"max_attempts": 3, "initial_s": 0.05, "factor": 2, "max_s": 0.2, "timeout_s": 1.0}
    config = tmp / "central.yaml"
    config.write_text(yaml.safe_dump({
        "store": {"url": city[0]}, "events": {"db": str(city[1])}, "pages": {"timezone": TZ},
        "api": {"districts": DISTRICTS, "health_interval_s": HEALTH_S},
        "push": {"url": url, "secret_file": "push-secret", "state_db": "push.sqlite", "batch_rows": BATCH_ROWS,
                 "retry": retry, **push}}))
    return config


def cli(*args: str) -> Result:
    return CliRunner().invoke(edugate, ["push", *args])


def expected_batches(config: Path) -> tuple[list[dict], int]:
    items = figures_document(central_config_or_exit(config), DAY)["items"]
    return items, -(-len(items) // BATCH_ROWS)


def assert_private(body: bytes) -> None:
    text = body.decode()
    for secret in NOT_TO_LEAVE:
        assert secret not in text, secret
    doc = json.loads(body)
    assert {r["level"] for r in doc["items"]} <= {"city", "district", "school"}
    for row in doc["items"]:
        if row["unit"] in ("taps", "student-periods", "visits", "loans", "alarms") and row["value"] is not None:
            assert row["value"] == 0 or (row["value"] >= 5 and row["value"] % 5 == 0), row


def test_delivered_once_per_key_signed_and_anonymised(tmp_path: Path, city: tuple[str, Path],
                                                      warehouse: Warehouse) -> None:
    config = write_config(tmp_path, city, warehouse.url)
    items, batches = expected_batches(config)
    result = cli("now", "--period", DAY, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert f"{batches} new batch(es)" in result.output and "delivered " + str(batches) in result.output
    assert len(warehouse.requests) == batches and all(r.signed and r.answered == 200 for r in warehouse.requests)
    assert sorted(warehouse.deliveries.values()) == [1] * batches
    for request in warehouse.requests:
        assert_private(request.body)
    stored = sorted(warehouse.stored.values(), key=lambda d: d["batch"])
    assert [d["batch"] for d in stored] == list(range(1, batches + 1)) and {d["batches"] for d in stored} == {batches}
    assert [row for d in stored for row in d["items"]] == items  # exactly the API's rows, in order
    assert {d["key"] for d in stored} == set(warehouse.stored)
    # the same figures again: the same keys, nothing new to send
    again = cli("now", "--period", DAY, "--config", str(config))
    assert again.exit_code == 0 and "0 new batch(es)" in again.output
    assert len(warehouse.requests) == batches


def test_failures_are_retried_with_backoff_the_same_key_and_bytes(tmp_path: Path, city: tuple[str, Path],
                                                                 warehouse: Warehouse) -> None:
    config = write_config(tmp_path, city, warehouse.url, batch_rows=1000)
    warehouse.fail_next = 2
    result = cli("now", "--period", DAY, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert [r.answered for r in warehouse.requests] == [500, 500, 200]
    assert len({r.key for r in warehouse.requests}) == 1 and len({r.body for r in warehouse.requests}) == 1
    gaps = [b.at - a.at for a, b in zip(warehouse.requests, warehouse.requests[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # 0.05 s, then twice that
    assert list(warehouse.deliveries.values()) == [1]


def test_a_timed_out_delivery_sent_again_is_stored_once(tmp_path: Path, city: tuple[str, Path],
                                                        warehouse: Warehouse) -> None:
    config = write_config(tmp_path, city, warehouse.url, batch_rows=1000)
    warehouse.slow_next, warehouse.slow_s = 1, 2.0  # stored, but answered after the pusher's 1 s timeout
    result = cli("now", "--period", DAY, "--config", str(config))
    assert result.exit_code == 0, result.output
    assert len(warehouse.requests) == 2 and warehouse.requests[0].key == warehouse.requests[1].key
    assert list(warehouse.deliveries.values()) == [1]


def test_dead_letters_and_redelivery(tmp_path: Path, city: tuple[str, Path], warehouse: Warehouse) -> None:
    config = write_config(tmp_path, city, warehouse.url)
    _, batches = expected_batches(config)
    warehouse.fail_next = 10_000
    result = cli("now", "--period", DAY, "--config", str(config))
    assert result.exit_code == 1 and f"dead letters {batches} new" in result.output
    assert len(warehouse.requests) == 3 * batches and not warehouse.stored
    listed = cli("dead-letters", "--config", str(config)).output.strip().splitlines()
    assert len(listed) == batches and all("\t3 attempt(s)\t" in line and "HTTP 500" in line for line in listed)
    keys = [line.split("\t")[0] for line in listed]
    assert set(keys) == {r.key for r in warehouse.requests}
    warehouse.fail_next = 0
    one = cli("redeliver", keys[0], "--config", str(config))
    assert one.exit_code == 0 and "1 dead letter(s)" in one.output and list(warehouse.deliveries) == [keys[0]]
    rest = cli("redeliver", "--all", "--config", str(config))
    assert rest.exit_code == 0 and f"{batches - 1} dead letter(s)" in rest.output
    assert sorted(warehouse.deliveries) == sorted(keys) and set(warehouse.deliveries.values()) == {1}
    assert cli("dead-letters", "--config", str(config)).output == ""
    assert cli("redeliver", "nope", "--config", str(config)).exit_code == 2


def test_a_refused_batch_is_a_dead_letter_at_once(tmp_path: Path, city: tuple[str, Path],
                                                  warehouse: Warehouse) -> None:
    config = write_config(tmp_path, city, warehouse.url, batch_rows=1000)
    warehouse.secret = b"another secret, the receiver was given the wrong one"
    result = cli("now", "--period", DAY, "--config", str(config))
    assert result.exit_code == 1 and [r.answered for r in warehouse.requests] == [401]
    (line,) = cli("dead-letters", "--config", str(config)).output.strip().splitlines()
    assert "\t1 attempt(s)\t" in line and "HTTP 401" in line


def test_the_service_pushes_yesterday_at_the_scheduled_time(tmp_path: Path, city: tuple[str, Path],
                                                            warehouse: Warehouse) -> None:
    """``push run``'s loop with a clock set to 02:59:59.7 the day after DAY: at 03:00 it pushes DAY."""
    config = write_config(tmp_path, city, warehouse.url, schedule="0 3 * * *", periods=["day"], batch_rows=1000)
    cfg = central_config_or_exit(config)
    at_3 = dt.datetime.combine(dt.date.fromisoformat(DAY) + dt.timedelta(days=1), dt.time(3), ZoneInfo(TZ))
    offset = at_3.timestamp() - 0.3 - time.time()
    spool = Spool(cfg.push.state_db)
    pusher = Pusher(cfg, load_secret(tmp_path / "push-secret"), spool, clock=lambda: time.time() + offset)
    stop = threading.Event()
    thread = threading.Thread(target=pusher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: warehouse.deliveries, 10, "the scheduled delivery")
    finally:
        stop.set()
        thread.join(5)
        spool.close()
    (body,) = warehouse.stored.values()
    assert body["period"] == DAY and body["complete"] is True
    (batch,) = Spool(cfg.push.state_db).with_status("delivered")
    assert batch.created_ms >= at_3.timestamp() * 1000  # made at 03:00 of the service's clock, not before


def test_signature_and_backoff_rules() -> None:
    body = b'{"items":[]}'
    header = signature(SECRET, 1_800_000_000, body)
    assert verify(SECRET, header, body, now=1_800_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_800_000_100)
    assert not verify(SECRET, header, body, now=1_800_000_400)  # older than 5 minutes: a replay
    assert not verify(b"x" * 40, header, body, now=1_800_000_000) and not verify(SECRET, "junk", body, 0)
    retry = PushRetry(initial_s=30, factor=2, max_s=3600)
    assert [backoff_s(retry, n) for n in (1, 2, 3, 8)] == [30, 60, 120, 3600]


def test_bad_push_settings_are_clear_errors(tmp_path: Path) -> None:
    config = tmp_path / "central.yaml"
    config.write_text("push:\n  url: https://warehouse.example/in\n  schedule: '61 * * * *'\n")
    result = CliRunner().invoke(edugate, ["central-check", str(config)])
    assert result.exit_code == 2 and "central.yaml:3: push.schedule: '61 * * * *' is not a cron expression" in \
        result.output
    config.write_text("push:\n  url: https://warehouse.example/in\n")
    result = CliRunner().invoke(edugate, ["central-check", str(config)])
    assert result.exit_code == 2 and "central.yaml:1: push: secret_file is required with url" in result.output
    (tmp_path / "short").write_text("too short")
    config.write_text("push:\n  url: https://warehouse.example/in\n  secret_file: short\n")
    result = cli("now", "--config", str(config))
    assert result.exit_code == 2 and "at least 32 are needed" in result.output


def test_a_store_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, ("http://127.0.0.1:9", tmp_path / "events.sqlite"), "http://127.0.0.1:9/in")
    result = cli("now", "--period", DAY, "--config", str(config))
    assert result.exit_code == 2 and "store http://127.0.0.1:9 not answering" in result.output
    assert cli("now", "--period", "2026-13", "--config", str(config)).exit_code == 2
