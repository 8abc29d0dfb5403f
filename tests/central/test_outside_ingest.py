"""The ingest worker as an outside checker breaks it: a third-party MQTT client publishing garbage on every
``edu/v1/...`` topic, against a real Mosquitto and a real VictoriaMetrics.

Expected (docs/mqtt-contract.md, *What the worker skips*): each bad message or record is counted and logged
naming its topic and reason, nothing odd reaches the store (no series name or label value outside the
contract's alphabet, no line injected through a newline), and the worker keeps storing good data.
"""

from __future__ import annotations

import logging
import re

import pytest

from edugate.central.ingest.lineproto import LineEncoder
from edugate.contract.topics import InvalidTopic, parse_topic
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central import BASE_TS, Publisher, event, telemetry, topic, wait_until
from tests.central.ingest.test_worker import running_worker
from tests.vmquery import export

SCHOOL = "school-1"
NAME_RE = re.compile(r"edugate_[A-Za-z0-9_]+")
LABEL_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # ids, device, type, labels (rooms are checked apart)


@pytest.mark.parametrize("name", ["edu/v1/school-1/gw-a\n/telemetry", "edu/v1/school-1\n/gw-a/event",
                                  "edu/v1/school-1/gw-a/telemetry/extra", "edu/v1/sch ool/gw-a/state",
                                  'edu/v1/sch"ool/gw-a/state', "edu/v1/trường/gw-a/telemetry"])
def test_topic_ids_with_a_trailing_newline_or_odd_characters_are_refused(name: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(name)


@pytest.mark.parametrize("field,value", [("device", "door-2\n"), ("type", "card_tap\n")])
def test_a_trailing_newline_cannot_split_a_line(field: str, value: str) -> None:
    record = event(1, **{"device" if field == "device" else "type_": value})
    conv = LineEncoder().convert(_json([record]), parse_topic(topic(SCHOOL, "gw-a", "event")), BASE_TS)
    assert (conv.lines, conv.invalid_records) == ([], 1)
    assert field in str(conv.problems[0])


def test_a_value_name_with_a_newline_is_skipped_alone() -> None:
    record = telemetry(1, values={"temperature_c\n": 1.0, "humidity_pct": 40.0})
    conv = LineEncoder().convert(_json([record]), parse_topic(topic(SCHOOL, "gw-a", "telemetry")), BASE_TS)
    assert conv.invalid_values == 1 and len(conv.lines) == 1 and "\n" not in conv.lines[0]
    event_record = event(2, data={"decision": "allow", "late\n": 3, "n\nx": 4})
    conv = LineEncoder().convert(_json([event_record]), parse_topic(topic(SCHOOL, "gw-a", "event")), BASE_TS)
    assert len(conv.lines) == 1 and "\n" not in conv.lines[0]


def _json(value: object) -> bytes:
    import orjson
    return orjson.dumps(value)


def test_garbage_on_every_topic_is_counted_logged_and_never_stored(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edugate.central.ingest.worker")
    tele, evt, state = (topic(SCHOOL, "gw-a", kind) for kind in ("telemetry", "event", "state"))
    far_future = 7_258_118_400_000  # 2200-01-01
    garbage: list[tuple[str, bytes | list[object] | dict[str, object]]] = [
        (tele, b"NaN"),
        (tele, b'[{"seq": 1, "kind": "telemetry", "device": "d1", "ts": 1, "values": {"t": Infinity}}]'),
        (tele, b"[" + b"1," * 20_000 + b"1]"),  # a huge array of non-records
        (tele, [telemetry(2, ts="1763900000020"), telemetry(3, device='d"1'),  # type: ignore[arg-type]
                telemetry(4, device="d1\n"), telemetry(5, ts=far_future),
                telemetry(6, values={"temperature_c": "21.5"}), telemetry(7, room="lab\n1"),
                telemetry(8, values={"t\nedugate_injected": 1.0})]),
        (evt, [event(9, type_="card_tap\nedugate_injected"), event(10, device="dôor"),
               event(11, data={"decision": 'allow",x="1', "role": "a b\nc", "card": "p1-abc"})]),
        (topic(SCHOOL, "gw a", "event"), [event(13)]),
        (topic("trường", "gw-a", "telemetry"), [telemetry(14)]),
        (state, b"{not json"),
        (state, {"online": "yes"}),
        (topic(SCHOOL, 'gw"b', "state"), {"online": True}),
    ]
    good = telemetry(20)
    with running_worker(mosquitto, victoria.url, client_id="outside-ingest") as worker:
        pub = Publisher(mosquitto.host, mosquitto.port, client_id="third-party")
        pub.publish(state, b"retained junk", retain=True)
        for name, payload in garbage:
            pub.publish(name, payload)
        pub.publish(tele, [good])
        pub.close()
        wait_until(lambda: worker.stats.messages_acked >= len(garbage) + 2, 20, 0.05, "every message handled")
        stats = worker.stats
        assert stats.messages_invalid >= 8 and stats.records_invalid >= 20_001 + 5
    wait_until(lambda: any(s["metric"]["__name__"] == "edugate_humidity_pct" for s in export(victoria.url)),
               20, 0.1, "the good record stored")
    series = export(victoria.url, '{__name__=~".+"}')
    for s in series:
        metric = s["metric"]
        assert NAME_RE.fullmatch(metric["__name__"]), metric
        for label, value in metric.items():
            if label == "room":
                assert value == "lab-1", metric
            elif label != "__name__":
                assert LABEL_RE.fullmatch(value), metric
        assert metric.get("gateway") == "gw-a" and metric.get("school") == SCHOOL, metric
    stamps = {(s["metric"]["__name__"], ts) for s in series for ts in s["timestamps"]}
    good_ts, event_ts = good["ts"], event(11)["ts"]
    assert stamps == {("edugate_temperature_c", good_ts), ("edugate_humidity_pct", good_ts),
                      ("edugate_door_open", good_ts), ("edugate_event_count", event_ts)}
    decisions = [s["metric"].get("decision") for s in series if s["metric"]["__name__"] == "edugate_event_count"]
    assert decisions == ["allow__x__1"]  # a quote in a label value is encoded, never passed through
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "\nedugate_injected" not in text  # no log line forged through a record
    assert f"{tele}: message skipped (3 bytes): payload: not JSON" in text
    assert "edu/v1/trường/gw-a/telemetry: message skipped: school id 'trường'" in text
    assert "'device' must match" in text and "'ts' 7258118400000 is more than" in text


def test_a_record_too_big_for_the_store_is_skipped_alone_and_its_neighbours_stored(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, caplog: pytest.LogCaptureFixture) -> None:
    """30,000 values in one record would make a line over VictoriaMetrics' 256 KiB limit: the store would refuse
    (HTTP 400) the whole message with the good records next to it. The worker skips that record alone (the
    gateway's own limit, 256 values; events by the line's length), stores its neighbours; 25 garbage messages
    log at most LimitedLog's burst of lines (a sender of garbage cannot flood the journal)."""
    caplog.set_level(logging.WARNING, logger="edugate.central.ingest.worker")
    tele, evt = topic(SCHOOL, "gw-a", "telemetry"), topic(SCHOOL, "gw-a", "event")
    huge = telemetry(1, values={f"v{i}": float(i) for i in range(30_000)})
    huge_event = event(4, data={f"n{i}": i for i in range(30_000)})
    with running_worker(mosquitto, victoria.url, client_id="outside-big") as worker:
        pub = Publisher(mosquitto.host, mosquitto.port, client_id="third-party")
        pub.publish(tele, [huge, telemetry(2)])
        pub.publish(evt, [huge_event, event(5)])
        pub.publish(tele, [telemetry(3)])
        for _ in range(25):
            pub.publish(tele, b"{")
        pub.close()
        wait_until(lambda: worker.stats.messages_acked == 28, 20, 0.05, "every message handled")
        stats = worker.stats
        assert (stats.messages_rejected, stats.messages_invalid, stats.records_invalid) == (0, 25, 2)
    wait_until(lambda: sum(len(s["timestamps"]) for s in export(victoria.url, '{__name__=~"edugate_(door_open|'
                                                                             'event_count)"}')) == 3,
               20, 0.1, "the neighbours stored")
    assert not export(victoria.url, '{__name__=~"edugate_(v1|event_n1)"}')
    text = [r.getMessage() for r in caplog.records]
    assert any("record [0]: 30000 values in one record (at most 256)" in line for line in text), text
    assert any("record [0]: 'data' too big to store" in line for line in text), text
    assert sum("not JSON" in line for line in text) <= 20


def test_a_state_stamped_in_2200_cannot_freeze_the_fleet_table(mosquitto: Mosquitto, victoria: VictoriaMetrics) -> None:
    """The fleet table keeps a gateway's newest state: one stamped far ahead would hide every true one after it."""
    state = topic(SCHOOL, "gw-a", "state")
    with running_worker(mosquitto, victoria.url, client_id="outside-state") as worker:
        pub = Publisher(mosquitto.host, mosquitto.port, client_id="third-party")
        pub.publish(state, {"status": "online", "ts": 7_258_118_400_000})
        pub.publish(state, {"status": "offline", "ts": BASE_TS, "reason": "shutdown"})
        pub.close()
        wait_until(lambda: worker.stats.messages_acked == 2, 20, 0.05, "both states handled")
        assert worker.stats.messages_invalid == 1
        (entry,) = worker.fleet.snapshot()
        assert (entry["status"], entry["last_seen"]) == ("offline", BASE_TS)
