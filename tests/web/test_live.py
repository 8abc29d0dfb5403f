"""The gateway's in-memory recent history (ring buffers per device) and its CSV rendering."""

from __future__ import annotations

import asyncio
import csv
import io
import time

import pytest

from edugate.gateway.web.app import _events
from edugate.gateway.web.live import DeviceHistory, LiveData, TooManyClients


def reading(device: str, ts: float, room: str | None = "lab-1", **values: object) -> dict:
    return {"kind": "telemetry", "device": device, "room": room, "ts": int(ts * 1000), "seq": 1, "values": values}


def test_one_row_per_slot_newest_value_wins() -> None:
    hist = DeviceHistory(cap=10)
    hist.add(100.1, {"t": 1.0}, 1.0, 10)
    hist.add(100.6, {"t": 2.0, "h": 50.0}, 1.0, 10)  # same 1 s slot: replaces, adds a column
    hist.add(101.2, {"t": 3.0}, 1.0, 10)
    ts, cols = hist.rows(0)
    assert ts == [100.6, 101.2]
    assert cols == {"t": [2.0, 3.0], "h": [50.0, None]}


def test_ring_keeps_the_newest_rows_and_the_window() -> None:
    hist = DeviceHistory(cap=5)
    for i in range(12):
        hist.add(1000.0 + i, {"v": float(i)}, 1.0, 10)
    ts, cols = hist.rows(0)
    assert ts == [1007.0, 1008.0, 1009.0, 1010.0, 1011.0] and cols["v"] == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert hist.rows(1009.5)[0] == [1010.0, 1011.0]


def test_a_clock_stepping_back_starts_the_history_again() -> None:
    hist = DeviceHistory(cap=5)
    for t in (1000.0, 1001.0, 1002.0):
        hist.add(t, {"v": t}, 1.0, 10)
    hist.add(500.0, {"v": 1.0}, 1.0, 10)  # NTP corrected a Pi that had no RTC
    assert hist.rows(0) == ([500.0], {"v": [1.0]})


def test_observe_keeps_numbers_and_skips_the_gateway_and_strings() -> None:
    live = LiveData(window_s=60, resolution_s=1)
    now = time.time()
    live.observe(reading("lab1-th", now, temperature=22.5, ok=True, label="x"))
    live.observe(reading("_gateway", now, outbox_records=3))
    live.observe({"kind": "event", "device": "door-1", "ts": int(now * 1000), "type": "card_tap",
                  "data": {"card": "p1-secret"}})
    assert set(live.devices) == {"lab1-th"}
    history = live.history("lab1-th", now)
    assert history["values"] == {"temperature": [22.5], "ok": [1.0]} and history["room"] == "lab-1"
    assert live.latest["lab1-th"]["values"] == {"temperature": 22.5, "ok": True, "label": "x"}
    assert live.history("nothing", now) == {"device": "nothing", "room": None, "ts": [], "values": {}}


def test_columns_are_bounded() -> None:
    live = LiveData(window_s=60, resolution_s=1, max_columns=3)
    now = time.time()
    live.observe(reading("a", now, v1=1, v2=2))
    live.observe(reading("b", now, v1=1, v2=2))  # only one more column fits
    assert sum(len(h.cols) for h in live.devices.values()) == 3


def test_csv_has_one_row_per_device_and_time_in_the_school_zone() -> None:
    live = LiveData(window_s=3600, resolution_s=1)
    now = time.time()
    live.observe(reading("lab1-th", now - 2, temperature=22.5, humidity=40))
    live.observe(reading("lab1-co2", now - 1, co2=812))
    rows = list(csv.reader(io.StringIO(live.csv(["lab1-th", "lab1-co2"], "Asia/Ho_Chi_Minh", now))))
    assert rows[0] == ["time", "ts_ms", "device", "room", "co2", "humidity", "temperature"]
    assert rows[1][2:] == ["lab1-th", "lab-1", "", "40", "22.5"]
    assert rows[2][2:] == ["lab1-co2", "lab-1", "812", "", ""]
    assert rows[1][0].endswith("+07:00") and int(rows[1][1]) == int((now - 2) * 1000)


async def test_live_stream_sends_the_latest_then_new_readings_of_the_chosen_devices() -> None:
    live = LiveData(max_clients=1)
    now = time.time()
    live.observe(reading("lab1-th", now, temperature=21.0))
    stream = _events(live, {"lab1-th"})
    assert await anext(stream) == "retry: 2000\n\n"
    assert '"temperature":21.0' in await anext(stream)  # what the page shows before anything new
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    assert live.clients == 1
    with pytest.raises(TooManyClients), live.subscribe():
        pass
    live.observe(reading("other", now, v=1))  # not asked for
    live.observe(reading("lab1-th", now + 1, temperature=23.5))
    message = await asyncio.wait_for(pending, 2)
    assert message.startswith("event: telemetry\ndata: ") and '"temperature":23.5' in message
    await stream.aclose()
    assert live.clients == 0


def test_a_slow_client_loses_old_updates_not_the_pipeline() -> None:
    live = LiveData(queue_size=2)
    with live.subscribe() as queue:
        for i in range(5):
            live.observe(reading("a", 1000 + i, v=i))  # never blocks, never raises
        assert queue.qsize() == 2 and live.dropped_updates == 3
        assert queue.get_nowait()["values"] == {"v": 3}
