"""A gateway over its disk budget during a broker outage (issue 12), end to end: the outbox files stay within the
budget, the over-budget condition reaches central as an event in the event log, and the thinning is counted in
the health records central stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edugate.gateway.runtime.outbox import MIN_WAL_LIMIT
from edugate.simulators.servers import SHIPPED_CONF, Mosquitto, VictoriaMetrics
from tests.e2e.test_durability import Worker
from tests.helpers import GatewayProcess, outbox_state, wait_for
from tests.vmquery import export

BUDGET_MB = 0.25


def outbox_files(outbox: Path) -> int:
    return sum(p.stat().st_size for p in outbox.parent.glob(outbox.name + "*") if p.name.endswith(("sqlite", "-wal")))


def over_budget_events(events_db: Path) -> list[tuple[str, str]]:
    if not events_db.exists():
        return []
    conn = sqlite3.connect(events_db, timeout=10)
    try:
        return list(conn.execute("SELECT device, data FROM events WHERE type = 'outbox_over_budget'"))
    finally:
        conn.close()


def test_over_budget_reaches_central_as_an_event_and_the_files_stay_in_budget(tmp_path: Path,
                                                                            victoria: VictoriaMetrics) -> None:
    broker = Mosquitto(tmp_path / "broker", conf_file=SHIPPED_CONF)
    broker.start()
    worker = Worker(tmp_path, broker, victoria).start()
    broker.stop()  # the school's uplink is down from the start: everything waits in the outbox
    cfg = {
        "school": "test-school", "gateway": "gw-budget",
        "uplink": {"port": broker.port, "health_interval_s": 1},
        "storage": {"path": str(tmp_path / "gw" / "outbox.sqlite"), "budget_mb": BUDGET_MB},
        "devices": [
            {"id": "fast", "driver": "synthetic", "interval_s": 0.002, "values": 9, "room": "lab-1"},
            {"id": "door", "driver": "synthetic", "interval_s": 0.05, "values": 0, "event_every": 1},
        ],
    }
    gw = GatewayProcess(tmp_path / "gw", cfg).start()
    budget = int(BUDGET_MB * 1024 * 1024)
    largest = 0

    def thinned_three_times_over() -> bool:
        nonlocal largest
        largest = max(largest, outbox_files(gw.outbox_path))
        try:
            next_seq, queued = outbox_state(gw.outbox_path)
        except sqlite3.OperationalError:  # the gateway is still creating its tables
            return False
        return next_seq - 1 > 3 * len(queued) + 1000

    try:
        wait_for(thinned_three_times_over, 60, "the outbox to thin three times its size", interval=0.02)
        assert largest <= budget + MIN_WAL_LIMIT + 64 * 1024, f"{largest} bytes on disk for {budget}"
        broker.start()
        found = wait_for(lambda: over_budget_events(worker.events_db), 30, "the outbox_over_budget event centrally")
        device, data = found[0]
        assert device == "_gateway" and '"budget_bytes":262144' in data.replace(" ", "")
        thinned = wait_for(lambda: [v for s in export(victoria.url, '{__name__="edugate_telemetry_thinned"}')
                                    for v in s["values"] if v > 0], 30, "a health record counting the thinning")
        assert max(thinned) > 0
        assert gw.stop() == 0
    finally:
        if gw.proc is not None:
            gw.kill()
        worker.stop()
        broker.stop()
    assert "over its budget" in gw.log()
    assert gw.log().count("over its budget") <= 3, "one summary line per minute, not one per commit"
