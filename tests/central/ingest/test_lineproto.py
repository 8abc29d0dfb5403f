"""Payload -> line protocol, on plain dicts (no servers)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edugate.central.fleet import FleetTable, InvalidState, parse_state
from edugate.central.ingest.lineproto import LineEncoder, escape_tag, state_line
from edugate.contract.topics import Topic
from tests.central import BASE_TS, event, telemetry

TELEMETRY = Topic("school-1", "gw-a", "telemetry")
EVENTS = Topic("school-1", "gw-a", "event")
NOW = BASE_TS + 3_600_000


def convert(records: Any, topic: Topic = TELEMETRY, encoder: LineEncoder | None = None):
    payload = records if isinstance(records, bytes) else orjson.dumps(records)
    return (encoder or LineEncoder()).convert(payload, topic, NOW)


def test_telemetry_line_has_tags_fields_and_ms_timestamp() -> None:
    conv = convert([telemetry(7, values={"temperature_c": 21.5, "co2_ppm": 415, "fan_on": True, "heater": False})])
    assert conv.lines == [
        f"edugate,school=school-1,gateway=gw-a,device=lab1-th,room=lab-1 "
        f"temperature_c=21.5,co2_ppm=415,fan_on=1,heater=0 {BASE_TS + 70}"
    ]
    assert (conv.records, conv.points, conv.invalid_records, conv.max_seq) == (1, 4, 0, 7)
    assert not conv.problems


def test_room_is_optional_and_escaped() -> None:
    conv = convert([telemetry(1, room=None), telemetry(2, room='Lab 2, "west"=\\'), telemetry(3, room="")])
    assert conv.lines[0].startswith("edugate,school=school-1,gateway=gw-a,device=lab1-th ")
    assert conv.lines[1].startswith(
        'edugate,school=school-1,gateway=gw-a,device=lab1-th,room=Lab\\ 2\\,\\ "west"\\=\\\\ ')
    assert conv.lines[2].startswith("edugate,school=school-1,gateway=gw-a,device=lab1-th ")  # "" = no room
    assert escape_tag("a b,c=d\\e") == "a\\ b\\,c\\=d\\\\e"


def test_gateway_health_record() -> None:
    conv = convert([telemetry(9, "_gateway", room=None, values={"uptime_s": 12.5, "outbox_records": 3,
                                                                  "devices_online": 2, "cpu_percent": 7.25})])
    assert conv.lines == [f"edugate,school=school-1,gateway=gw-a,device=_gateway "
                          f"uptime_s=12.5,outbox_records=3,devices_online=2,cpu_percent=7.25 {BASE_TS + 90}"]


def test_strings_are_allowed_but_not_stored() -> None:
    conv = convert([telemetry(1, values={"firmware": "1.2.3", "rssi_dbm": -61})])
    assert conv.lines == [f"edugate,school=school-1,gateway=gw-a,device=lab1-th,room=lab-1 rssi_dbm=-61 {BASE_TS + 10}"]
    assert (conv.ignored_values, conv.invalid_values, conv.problems) == (1, 0, [])
    only_strings = convert([telemetry(2, values={"firmware": "1.2.3"})])
    assert only_strings.lines == [] and only_strings.invalid_records == 0 and only_strings.ignored_values == 1


def test_numbers_keep_their_precision() -> None:
    values = {"a": 0.1, "b": 1e-7, "c": 12345678901234567, "d": -0.0, "e": 1.5e300}
    line = convert([telemetry(1, values=values)]).lines[0]
    assert " a=0.1,b=1e-07,c=12345678901234567,d=-0.0,e=1.5e+300 " in line


def test_events_become_counts_with_a_type_tag() -> None:
    conv = convert([event(5), event(6, room=None, type_="door_forced")], EVENTS)
    assert conv.lines == [
        f"edugate_event,school=school-1,gateway=gw-a,device=door-2,room=lab-1,type=card_tap,decision=allow "
        f"count=1 {BASE_TS + 50}",
        f"edugate_event,school=school-1,gateway=gw-a,device=door-2,type=door_forced,decision=allow "
        f"count=1 {BASE_TS + 60}",
    ]
    assert conv.points == 2


def test_event_labels_are_whitelisted_and_numbers_become_fields() -> None:
    tap = event(7, data={"card": "p1-" + "a" * 32, "role": "door", "direction": "in", "decision": "deny",
                         "allowlist_version": 7, "late": False, "note": "free text"})
    summary = event(8, type_="attendance_summary", data={"date": "2026-11-23", "period": "P1", "present": 25,
                                                          "late": 3})
    conv = convert([tap, summary], EVENTS)
    assert conv.lines == [
        f"edugate_event,school=school-1,gateway=gw-a,device=door-2,room=lab-1,type=card_tap,role=door,direction=in,"
        f"decision=deny,late=false count=1,allowlist_version=7.0 {BASE_TS + 70}",
        f"edugate_event,school=school-1,gateway=gw-a,device=door-2,room=lab-1,type=attendance_summary,period=P1 "
        f"count=1,present=25.0,late=3.0 {BASE_TS + 80}",
    ]
    assert "p1-" not in "".join(conv.lines), "a pseudonym must never become a label or field"
    assert conv.points == 2 + 1 + 2


@pytest.mark.parametrize(("change", "reason"), [
    ({"seq": None}, "'seq' must be a non-negative integer, got nothing"),
    ({"seq": -1}, "'seq' must be a non-negative integer"),
    ({"seq": True}, "'seq' must be a non-negative integer"),
    ({"seq": "12"}, "'seq' must be a non-negative integer"),
    ({"ts": None}, "'ts' must be a positive integer"),
    ({"ts": 1763900000123.5}, "'ts' must be a positive integer"),
    ({"ts": "2025-11-23T10:00:00Z"}, "'ts' must be a positive integer"),
    ({"ts": NOW + 2 * 86_400_000}, "in the future"),
    ({"kind": "event"}, "'kind' must be 'telemetry' on a telemetry topic"),
    ({"kind": None}, "'kind' must be 'telemetry'"),
    ({"device": None}, "'device' must match"),
    ({"device": "Lab 1"}, "'device' must match"),
    ({"room": 12}, "'room' must be a string"),
    ({"room": "lab\n1"}, "'room' must be a string of at most 64 printable characters"),
    ({"room": "x" * 65}, "'room' must be a string"),
    ({"synced": "yes"}, "'synced' must be true or false"),
    ({"values": None}, "'values' must be a non-empty object, got null"),
    ({"values": []}, "'values' must be a non-empty object, got an array"),
    ({"values": {}}, "'values' must be a non-empty object"),
])
def test_invalid_records_are_skipped_with_a_reason(change: dict[str, Any], reason: str) -> None:
    bad = telemetry(2) | change
    bad = {k: v for k, v in bad.items() if v is not None}
    conv = convert([telemetry(1), bad, telemetry(3)])
    assert len(conv.lines) == 2, "the good records around the bad one are kept"
    assert conv.invalid_records == 1
    assert len(conv.problems) == 1
    assert conv.problems[0].index == 1
    assert reason in conv.problems[0].reason
    assert str(conv.problems[0]).startswith("record [1]: ")


def test_a_record_that_is_not_an_object() -> None:
    conv = convert([telemetry(1), 42, "x", None])
    assert len(conv.lines) == 1 and conv.invalid_records == 3 and conv.records == 4
    assert conv.problems[0].reason == "a record must be an object, got a number"


def test_event_shape() -> None:
    conv = convert([event(1) | {"type": "Card Tap"}, event(2) | {"data": [1]}, {**event(3), "type": None},
                    event(4)], EVENTS)
    assert len(conv.lines) == 1 and conv.invalid_records == 3
    reasons = [p.reason for p in conv.problems]
    assert "'type' must be a string matching" in reasons[0]
    assert reasons[1] == "'data' must be an object, got an array"


@pytest.mark.parametrize(("value", "reason"), [
    (None, "expected a number or boolean, got null"),
    ([1, 2], "expected a number or boolean, got an array"),
    ({"v": 1}, "expected a number or boolean, got an object"),
])
def test_invalid_values_are_skipped_and_the_rest_of_the_record_kept(value: Any, reason: str) -> None:
    conv = convert([telemetry(1, values={"ok": 1.5, "bad": value})])
    assert conv.lines == [f"edugate,school=school-1,gateway=gw-a,device=lab1-th,room=lab-1 ok=1.5 {BASE_TS + 10}"]
    assert conv.invalid_values == 1 and conv.invalid_records == 0
    assert str(conv.problems[0]) == f"record [0] value 'bad': {reason}"


def test_badly_named_values() -> None:
    conv = convert([telemetry(1, room=None, values={"with space": 1, "ok": 2, "pm2.5": 3, "_x": 4, "1st": 5})])
    assert conv.lines == [f"edugate,school=school-1,gateway=gw-a,device=lab1-th ok=2,_x=4 {BASE_TS + 10}"]
    assert conv.invalid_values == 3
    assert [p.value for p in conv.problems] == ["with space", "pm2.5", "1st"]


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", "not JSON"),
    (b"", "not JSON"),
    (b'[{"seq": 1, "values": {"x": 1e999}}]', "not JSON: number is infinity"),
    (b'[NaN]', "not JSON"),
    (b'{"seq": 1}', "expected a JSON array of records, got an object"),
    (b'"hello"', "expected a JSON array of records, got a string"),
])
def test_garbled_payloads(payload: bytes, reason: str) -> None:
    conv = convert(payload)
    assert conv.payload_invalid and conv.lines == [] and conv.records == 0
    assert conv.problems[0].index is None and reason in conv.problems[0].reason


def test_unsynced_records_are_stored_and_counted() -> None:
    conv = convert([telemetry(1, synced=False), telemetry(2)])
    assert len(conv.lines) == 2 and conv.unsynced == 1


def test_encoder_caches_do_not_mix_topics() -> None:
    encoder = LineEncoder()
    a = convert([telemetry(1)], TELEMETRY, encoder).lines[0]
    b = convert([telemetry(1)], Topic("school-2", "gw-a", "telemetry"), encoder).lines[0]
    assert "school=school-1," in a and "school=school-2," in b


def test_state_line() -> None:
    assert state_line("s1", "gw-a", True, 123) == "edugate_gateway,school=s1,gateway=gw-a online=1 123"
    assert state_line("s1", "gw-a", False, 124) == "edugate_gateway,school=s1,gateway=gw-a online=0 124"


def test_parse_state_documents() -> None:
    online = {"status": "online", "ts": BASE_TS, "version": "0.1.0", "started_at": BASE_TS - 5000,
              "devices": {"lab1-th": {"state": "online", "error_count": 0, "last_error": None},
                          "door-2": {"state": "error", "error_count": 3, "last_error": "timeout"},
                          "weird": "x"}}
    doc, problems = parse_state(orjson.dumps(online))
    assert doc is not None and doc.online and doc.ts == BASE_TS and len(doc.devices) == 2
    assert problems == ["devices['weird'] must be an object with a string 'state'; ignored"]
    will, _ = parse_state(b'{"status": "offline", "reason": "connection lost"}')
    assert will is not None and not will.online and will.ts is None and will.reason == "connection lost"
    assert parse_state(b"") == (None, [])
    for bad, reason in [(b"[]", "JSON object"), (b'{"status": "up"}', "'status'"),
                        (b'{"status": "online", "ts": "now"}', "'ts'"), (b"\xff", "not JSON")]:
        with pytest.raises(InvalidState, match=reason):
            parse_state(bad)


def test_fleet_table_newest_document_wins() -> None:
    fleet = FleetTable()
    online, _ = parse_state(orjson.dumps({"status": "online", "ts": BASE_TS + 1000, "version": "0.1.0",
                                          "devices": {"door-2": {"state": "error", "error_count": 3,
                                                                 "last_error": "timeout"}}}))
    older, _ = parse_state(orjson.dumps({"status": "offline", "reason": "shutdown", "ts": BASE_TS}))
    will, _ = parse_state(b'{"status": "offline", "reason": "connection lost"}')
    assert online and older and will
    assert fleet.apply("s1", "gw-a", online, received_ms=BASE_TS + 1100) == BASE_TS + 1000
    fleet.apply("s1", "gw-a", older, received_ms=BASE_TS + 1200)  # stale: ignored by the table
    [row] = fleet.snapshot()
    assert row["status"] == "online" and row["last_seen"] == BASE_TS + 1000 and row["devices_total"] == 1
    assert row["devices_in_error"] == [{"device": "door-2", "state": "error", "error_count": 3,
                                        "last_error": "timeout"}]
    assert fleet.apply("s1", "gw-a", will, received_ms=BASE_TS + 5000) == BASE_TS + 5000
    [row] = fleet.snapshot()
    assert (row["status"], row["reason"], row["since"], row["last_seen"]) == \
        ("offline", "connection lost", BASE_TS + 5000, BASE_TS + 1000)
    fleet.forget("s1", "gw-a")
    assert fleet.snapshot() == []
