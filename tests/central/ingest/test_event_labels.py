"""Event labels: a label value outside the label alphabet is encoded, not dropped; what cannot be a label is
counted and said (issue 13, defect 2: the door's ``reason: no allow-list`` never became a label)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edugate.central.ingest.lineproto import EVENT_TAG_VALUE_RE, LineEncoder, encode_label
from edugate.contract.topics import Topic
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.central import BASE_TS, Publisher, event, topic, wait_until
from tests.central.ingest.test_worker import running_worker
from tests.vmquery import export

EVENTS = Topic("school-1", "gw-a", "event")


def convert(records: list[dict[str, Any]]):
    return LineEncoder().convert(orjson.dumps(records), EVENTS, BASE_TS + 3_600_000)


def test_the_doors_no_allow_list_reason_becomes_a_label() -> None:
    deny = event(1, data={"card": "p1-" + "0" * 32, "role": "door", "decision": "deny", "allowlist_version": 0,
                          "reason": "no allow-list"})
    conv = convert([deny])
    assert conv.lines == [
        f"edugate_event,school=school-1,gateway=gw-a,device=door-2,room=lab-1,type=card_tap,role=door,decision=deny,"
        f"reason=no_allow-list count=1,allowlist_version=0.0 {BASE_TS + 10}"]
    assert conv.dropped_labels == 0 and conv.problems == []


@pytest.mark.parametrize(("raw", "label"), [
    ("no allow-list", "no_allow-list"),
    ("charged", "charged"),
    ("P2", "P2"),
    ("Tiết 2 (sáng)", "Ti_t_2__s_ng_"),
    ("a,b=c\\d", "a_b_c_d"),
    ("  ", "__"),
])
def test_label_values_are_encoded_into_the_label_alphabet(raw: str, label: str) -> None:
    assert encode_label(raw) == label
    assert EVENT_TAG_VALUE_RE.match(label)


@pytest.mark.parametrize(("value", "why"), [
    ("x" * 41, "longer than 40 characters"),
    ("", "an empty string"),
    ({"nested": 1}, "an object"),
    (["a"], "an array"),
    (3, "a number"),
])
def test_values_that_cannot_be_labels_are_counted_and_said(value: Any, why: str) -> None:
    conv = convert([event(2, data={"decision": "deny", "reason": value})])
    [line] = conv.lines  # the event itself is still stored, with its other labels
    assert ",decision=deny " in line and "reason=" not in line
    assert conv.dropped_labels == 1 and conv.invalid_records == 0
    [problem] = conv.problems
    assert str(problem).startswith("record [0] value 'reason': label dropped: ")
    assert why in str(problem)


def test_late_minutes_stay_a_field_not_a_dropped_label() -> None:
    conv = convert([event(3, type_="attendance_summary", data={"period": "P1", "present": 25, "late": 3})])
    assert conv.lines[0].endswith(f",period=P1 count=1,present=25.0,late=3.0 {BASE_TS + 30}")
    assert conv.dropped_labels == 0


def test_the_worker_stores_the_encoded_label_and_counts_the_dropped(mosquitto: Mosquitto,
                                                                   victoria: VictoriaMetrics) -> None:
    deny = event(1, data={"role": "door", "decision": "deny", "reason": "no allow-list"})
    too_long = event(2, data={"role": "door", "decision": "deny", "reason": "y" * 60})
    with running_worker(mosquitto, victoria.url) as worker:
        pub = Publisher(mosquitto.host, mosquitto.port)
        pub.publish(topic("school-1", "gw-a", "event"), [deny, too_long])
        pub.close()
        wait_until(lambda: worker.stats.messages_acked == 1, 20, 0.1, "the message acknowledged")
        assert worker.stats.labels_dropped == 1
        assert worker.stats.as_dict()["labels_dropped"] == 1
    series = wait_until(lambda: (found := export(victoria.url, '{__name__="edugate_event_count"}'))
                        and len(found) == 2 and found, 20, 0.2, "both events' counts in the store")
    reasons = sorted(s["metric"].get("reason", "") for s in series)
    assert reasons == ["", "no_allow-list"]
