"""Alert rules on the pipeline: hysteresis and minimum duration against storms, every condition, quiet hours,
rules from the config, a rules file re-read without a restart and signed pushes, acknowledgement, restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from edugate.common.yamlconfig import ConfigError
from edugate.contract.records import Reading, Rejected
from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.alerts import (
    AlertRule,
    AlertsConfig,
    AlertsService,
    NoSuchAlert,
    PushedRules,
    RulesRejected,
    parse_rules,
)
from tests.helpers import assert_stops_when_cancelled_as_it_wakes, wait_for_async

TZ = "Asia/Ho_Chi_Minh"
DEVICES: dict[str, tuple[str | None, str | None]] = {
    "fridge-1": ("bio-lab", "thermometer"), "co2-10a": ("class-10a", "modbus"),
    "co2-10b": ("class-10b", "modbus"), "hood-1": ("chem-lab", "modbus")}
T0 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=ZoneInfo(TZ)).timestamp()  # a Wednesday, 10:00 local


def fridge_rule(**overrides: Any) -> dict[str, Any]:
    return {"id": "fridge-too-warm", "device": "fridge-1", "value": "temperature", "above": 8.0,
            "hysteresis": 0.5, "severity": "critical"} | overrides


def service(tmp_path: Path, *rules: dict[str, Any], **section: Any) -> AlertsService:
    cfg = AlertsConfig.model_validate({"rules": list(rules), **section})
    return AlertsService(cfg, DEVICES, TZ, state_file=tmp_path / "alerts.json", now=T0)


async def feed(pipe: Pipeline, device: str, series: list[float], name: str = "temperature", start: float = T0,
               every_s: float = 10.0) -> float:
    """Readings through the real pipeline (validated, committed to the outbox); returns the next time."""
    for i, value in enumerate(series):
        await pipe.submit(Reading(device, {name: value}, ts=start + i * every_s))
    return start + len(series) * every_s


def states(alerts: AlertsService) -> list[tuple[str, str, str]]:
    return [(e.device, e.data["rule"], e.data["state"]) for e in alerts.take_events()]


def pipeline(outbox: Outbox, alerts: AlertsService) -> Pipeline:
    rooms = {d: room for d, (room, _) in DEVICES.items()}
    return Pipeline(outbox, Clock("always"), rooms, rules=[alerts.stage])


async def test_a_value_hovering_at_the_limit_raises_one_alert_not_a_storm(outbox: Outbox, tmp_path: Path) -> None:
    hover = [8.1 if i % 2 else 7.9 for i in range(200)]  # crosses 8.0 two hundred times
    calm = service(tmp_path / "a", fridge_rule())
    naive = service(tmp_path / "b", fridge_rule(hysteresis=0.0))
    for alerts, expected in ((calm, 1), (naive, 100)):
        pipe = pipeline(outbox, alerts)
        t = await feed(pipe, "fridge-1", hover)
        events = alerts.take_events()
        raised = [e for e in events if e.data["state"] == "raised"]
        assert len(raised) == expected, "hysteresis keeps one alert; without it every crossing is one"
        if expected == 1:
            assert raised[0].data.items() >= {"rule": "fridge-too-warm", "severity": "critical", "condition": "above",
                                              "name": "temperature", "value": 8.1, "limit": 8.0, "active": 1}.items()
            assert raised[0].ts == pytest.approx(T0 + 10)
            assert not [e for e in events if e.data["state"] == "cleared"], "7.9 is not 0.5 below the limit"
            await feed(pipe, "fridge-1", [7.6, 7.5, 7.4], start=t)
            cleared = [e for e in alerts.take_events() if e.data["state"] == "cleared"]
            assert len(cleared) == 1 and cleared[0].data["value"] == 7.5 and cleared[0].data["active"] == 0
            assert cleared[0].data["duration_s"] == pytest.approx(t + 10 - (T0 + 10))
    assert calm.status()["raised"] == 1 and calm.status()["cleared"] == 1 and not calm.status()["active"]


async def test_minimum_duration_raises_only_when_the_condition_holds(outbox: Outbox, tmp_path: Path) -> None:
    alerts = service(tmp_path, fridge_rule(hysteresis=0.0, for_s=60))
    pipe = pipeline(outbox, alerts)
    # above for 50 s at a time (6 readings 10 s apart), then one reading below: never 60 s in a row
    t = T0
    for _ in range(20):
        t = await feed(pipe, "fridge-1", [8.5] * 6 + [7.0], start=t)
    assert states(alerts) == []
    t = await feed(pipe, "fridge-1", [8.5] * 7, start=t)  # 0, 10, ... 60 s: raised at the seventh
    assert states(alerts) == [("fridge-1", "fridge-too-warm", "raised")]
    assert alerts.active[("fridge-too-warm", "fridge-1")].raised_at == int((t - 10) * 1000)


async def test_below_band_rate_and_selection_by_room_and_driver(outbox: Outbox, tmp_path: Path) -> None:
    alerts = service(
        tmp_path,
        {"id": "hood-airflow-low", "driver": "modbus", "room": "chem-lab", "value": "airflow", "below": 0.4,
         "hysteresis": 0.05},
        {"id": "co2-high", "driver": "modbus", "value": "co2", "above": 1000, "hysteresis": 100},
        {"id": "fridge-band", "device": "fridge-1", "value": "temperature", "below": 2, "above": 8},
        {"id": "fridge-door", "device": "fridge-1", "value": "temperature", "rate_per_min": 3, "hysteresis": 1})
    pipe = pipeline(outbox, alerts)
    await feed(pipe, "hood-1", [0.5, 0.38, 0.42, 0.46], name="airflow")
    assert states(alerts) == [("hood-1", "hood-airflow-low", "raised"), ("hood-1", "hood-airflow-low", "cleared")]
    await feed(pipe, "co2-10a", [900, 1050, 950, 1200, 880], name="co2")
    await feed(pipe, "co2-10b", [700, 800], name="co2")
    assert states(alerts) == [("co2-10a", "co2-high", "raised"), ("co2-10a", "co2-high", "cleared")]
    await feed(pipe, "hood-1", [1500], name="co2", start=T0 + 100)  # the hood's device is modbus too
    assert states(alerts) == [("hood-1", "co2-high", "raised")]
    # fridge: 5.0 -> 5.2 (1.2/min) -> 6.0 (4.8/min: door open) -> 6.2 (1.2/min <= 3-1: cleared) -> 1.5 (below)
    await feed(pipe, "fridge-1", [5.0, 5.2, 6.0, 6.2, 1.5], every_s=10, start=T0 + 1000)
    assert states(alerts) == [("fridge-1", "fridge-door", "raised"), ("fridge-1", "fridge-door", "cleared"),
                              ("fridge-1", "fridge-band", "raised"), ("fridge-1", "fridge-door", "raised")]
    band = alerts.active[("fridge-band", "fridge-1")]
    assert (band.condition, band.value, band.limit) == ("outside", 1.5, 2.0)


async def test_no_data_for_n_minutes_raises_and_clears_when_data_comes_back(outbox: Outbox, tmp_path: Path) -> None:
    alerts = service(tmp_path, {"id": "fridge-silent", "device": "fridge-1", "no_data_min": 10,
                                "severity": "critical"})
    pipe = pipeline(outbox, alerts)
    alerts.check(now=T0 + 9 * 60)
    assert states(alerts) == [], "counted from the start"
    alerts.check(now=T0 + 10 * 60 + 1)
    assert states(alerts) == [("fridge-1", "fridge-silent", "raised")]
    alerts.check(now=T0 + 30 * 60)
    assert states(alerts) == [], "raised once"
    await feed(pipe, "fridge-1", [4.0], start=T0 + 31 * 60)
    assert states(alerts) == [("fridge-1", "fridge-silent", "cleared")]
    alerts.check(now=T0 + 40 * 60)
    assert states(alerts) == []
    alerts.check(now=T0 + 41 * 60 + 1)
    assert states(alerts) == [("fridge-1", "fridge-silent", "raised")]


async def test_quiet_hours_hold_back_new_alerts_but_not_critical_ones(outbox: Outbox, tmp_path: Path) -> None:
    night = dt.datetime(2026, 12, 2, 22, 0, tzinfo=ZoneInfo(TZ)).timestamp()
    morning = dt.datetime(2026, 12, 3, 7, 0, tzinfo=ZoneInfo(TZ)).timestamp()
    alerts = service(tmp_path, fridge_rule(), {"id": "co2-high", "room": "class-10a", "value": "co2", "above": 1000},
                     {"id": "hood-low", "device": "hood-1", "value": "airflow", "below": 0.4, "quiet_hours": "none"},
                     {"id": "co2-b", "device": "co2-10b", "value": "co2", "above": 1000,
                      "quiet_hours": {"start": "23:00", "end": "23:30"}},
                     quiet_hours={"start": "18:00", "end": "06:30"})
    pipe = pipeline(outbox, alerts)
    await feed(pipe, "co2-10a", [1500, 1600], name="co2", start=night)
    await feed(pipe, "fridge-1", [9.0], start=night)
    await feed(pipe, "hood-1", [0.2], name="airflow", start=night)
    await feed(pipe, "co2-10b", [1500], name="co2", start=night)
    assert states(alerts) == [("fridge-1", "fridge-too-warm", "raised"), ("hood-1", "hood-low", "raised"),
                              ("co2-10b", "co2-b", "raised")], "CO2 at night: nobody is in class"
    await feed(pipe, "co2-10a", [1500], name="co2", start=morning)
    assert states(alerts) == [("co2-10a", "co2-high", "raised")], "after the quiet hours it is raised"


async def test_rules_file_is_reread_without_a_restart_and_a_bad_one_keeps_the_rules(
        outbox: Outbox, tmp_path: Path) -> None:
    rules_file = tmp_path / "alert-rules.yaml"
    rules_file.write_text("rules:\n  - {id: fridge-too-warm, device: fridge-1, value: temperature, above: 8}\n")
    alerts = service(tmp_path, rules_file=str(rules_file))
    pipe = pipeline(outbox, alerts)
    await feed(pipe, "fridge-1", [7.0, 9.0])
    assert states(alerts) == [("fridge-1", "fridge-too-warm", "raised")]
    rules_file.write_text("rules:\n  - {id: fridge-too-warm, device: fridge-1, value: temperature, above: 10}\n"
                          "  - {id: fridge-too-cold, device: fridge-1, value: temperature, below: 1}\n")
    os.utime(rules_file, (T0 + 5, T0 + 5))
    alerts.check(now=T0 + 60)
    assert [r["id"] for r in alerts.status()["rules"]] == ["fridge-too-warm", "fridge-too-cold"]
    await feed(pipe, "fridge-1", [9.5, 0.5], start=T0 + 100)
    assert states(alerts) == [("fridge-1", "fridge-too-warm", "cleared"), ("fridge-1", "fridge-too-cold", "raised")], \
        "9.5 is within the new limit of 10: the raised alert clears"
    # a typo: reported with its line, counted once, the rules in force stay
    rules_file.write_text("rules:\n  - {id: fridge-too-warm, device: fridge-1, value: temperature, abve: 8}\n")
    os.utime(rules_file, (T0 + 9, T0 + 9))
    alerts.check(now=T0 + 200)
    alerts.check(now=T0 + 205)
    status = alerts.status()
    assert status["rules_error"] is not None and f"{rules_file}:2: rules[0].abve: unknown key" in status["rules_error"]
    assert status["reload_errors"] == 1 and len(status["rules"]) == 2
    # the rule leaves the file: its raised alert is cleared, saying why
    rules_file.write_text("rules:\n  - {id: fridge-too-warm, device: fridge-1, value: temperature, above: 10}\n")
    os.utime(rules_file, (T0 + 12, T0 + 12))
    alerts.check(now=T0 + 300)
    events = alerts.take_events()
    assert [(e.data["rule"], e.data["state"], e.data["cause"]) for e in events] == [
        ("fridge-too-cold", "cleared", "rule_removed")]
    assert alerts.status()["rules_error"] is None


def test_rules_are_validated_with_clear_messages(tmp_path: Path) -> None:
    bad = [({"id": "x", "value": "t"}, "give exactly one condition"),
           ({"id": "x", "value": "t", "above": 5, "rate_per_min": 1}, "give exactly one condition"),
           ({"id": "x", "above": 5}, "'value' names the value"),
           ({"id": "x", "value": "t", "above": 5, "below": 6}, "below (6) must be less than above (5)"),
           ({"id": "x", "value": "t", "above": 5, "below": 4, "hysteresis": 0.5}, "too wide"),
           ({"id": "Bad Id", "value": "t", "above": 5}, "should match pattern")]
    for rule, message in bad:
        with pytest.raises(ValidationError, match=re.escape(message)):
            AlertRule.model_validate(rule)
    with pytest.raises(ValidationError, match="used twice"):
        AlertsConfig.model_validate({"rules": [fridge_rule(), fridge_rule()]})
    with pytest.raises(ConfigError, match=r"rules.yaml:3: rules\[1\]: rule b: give exactly one condition"):
        parse_rules("rules:\n  - {id: a, value: t, above: 1}\n  - {id: b, value: t}\n", "rules.yaml")


async def test_pushed_rules_override_by_id_and_survive_a_restart_with_raised_alerts(
        outbox: Outbox, tmp_path: Path) -> None:
    alerts = service(tmp_path, fridge_rule(), {"id": "co2-high", "driver": "modbus", "value": "co2", "above": 1000})
    handlers = alerts.commands()
    result = await handlers["alerts.rules.set"].handler(PushedRules.model_validate(
        {"version": 2, "rules": [fridge_rule(above=6.0),
                                 {"id": "co2-high", "value": "co2", "above": 1, "enabled": False}]}))
    assert result == {"version": 2, "pushed": 2, "in_force": 1}
    with pytest.raises(RulesRejected, match="not newer than 2"):
        alerts.replace_pushed(PushedRules(version=2, rules=[]))
    pipe = pipeline(outbox, alerts)
    await feed(pipe, "fridge-1", [7.0])
    await feed(pipe, "co2-10a", [5000], name="co2")
    assert states(alerts) == [("fridge-1", "fridge-too-warm", "raised")]
    assert alerts.status()["rules"][0]["source"] == "command"
    ack = await handlers["alerts.ack"].handler(handlers["alerts.ack"].args.model_validate(
        {"rule": "fridge-too-warm", "device": "fridge-1", "by": "ms-lan"}))
    assert ack["acknowledged_by"] == "ms-lan" and not ack["already"]
    assert [(e.data["state"], e.data["by"]) for e in alerts.take_events()] == [("acknowledged", "ms-lan")]
    with pytest.raises(NoSuchAlert, match="no raised alert"):
        alerts.acknowledge("co2-high", "co2-10a", "ms-lan")
    # restart: the raised alert and the pushed rules come back; a value still too high raises nothing new
    again = service(tmp_path, fridge_rule(), {"id": "co2-high", "driver": "modbus", "value": "co2", "above": 1000})
    assert again.status()["rules_version"] == 2
    assert again.active[("fridge-too-warm", "fridge-1")].acked_by == "ms-lan"
    pipe = pipeline(outbox, again)
    await feed(pipe, "fridge-1", [7.0, 5.0], start=T0 + 100)
    assert states(again) == [("fridge-1", "fridge-too-warm", "cleared")]


async def test_alert_events_are_emitted_durably_by_the_service_task(outbox: Outbox, tmp_path: Path) -> None:
    alerts = service(tmp_path, fridge_rule())
    pipe = pipeline(outbox, alerts)
    committed: list[dict[str, Any]] = []

    async def emit(item: Any) -> dict[str, Any] | None:
        record = await pipe.submit(item)
        assert record is not None
        committed.append(record)
        return record

    task = asyncio.create_task(alerts.run(emit))
    try:
        await feed(pipe, "fridge-1", [9.0, 9.5, 7.0])
        await wait_for_async(lambda: len(committed) == 2, 10, "the raised and cleared events committed")
    finally:
        task.cancel()
    assert [(r["type"], r["data"]["state"], r["room"], r["seq"] > 0) for r in committed] == [
        ("alert", "raised", "bio-lab", True), ("alert", "cleared", "bio-lab", True)]
    assert committed[0]["ts"] == int((T0) * 1000) and alerts.pending_events() == []


async def test_an_event_the_pipeline_refuses_is_counted_and_does_not_block_the_next(tmp_path: Path) -> None:
    alerts = service(tmp_path, fridge_rule(hysteresis=0.0))
    refused = {"fridge-1"}
    committed: list[str] = []

    async def emit(item: Any) -> dict[str, Any] | None:
        if item.device in refused:
            refused.clear()
            raise Rejected(f"{item.device!r}: refused once")
        committed.append(item.data["state"])
        return {}

    task = asyncio.create_task(alerts.run(emit))
    try:
        for value, ts in ((9.0, T0), (7.0, T0 + 10)):
            alerts.stage({"kind": "telemetry", "device": "fridge-1", "ts": int(ts * 1000),
                          "values": {"temperature": value}})
        await wait_for_async(lambda: committed == ["cleared"], 10, "the second event past the refused first")
    finally:
        task.cancel()
    assert alerts.status()["dropped_events"] == 1


async def test_alert_events_not_in_the_outbox_when_the_gateway_dies_are_sent_after_the_restart(
        outbox: Outbox, tmp_path: Path) -> None:
    """kill -9 between raising (the state file says raised) and the service's task putting the event in the
    outbox: the restarted service sends it, with its own timestamp; once sent it is not pending any more."""
    first = service(tmp_path, fridge_rule())
    await feed(pipeline(outbox, first), "fridge-1", [9.0])  # raised; the task that sends it never ran
    assert [e.data["state"] for e in first.pending_events()] == ["raised"]
    again = service(tmp_path, fridge_rule())  # the restart, from the state file only
    assert ("fridge-too-warm", "fridge-1") in again.active
    pipe = pipeline(outbox, again)
    committed: list[dict[str, Any]] = []

    async def emit(item: Any) -> dict[str, Any] | None:
        record = await pipe.submit(item)
        assert record is not None
        committed.append(record)
        return record

    task = asyncio.create_task(again.run(emit))
    try:
        await wait_for_async(lambda: committed, 10, "the event from before the restart committed")
        await feed(pipe, "fridge-1", [5.0], start=T0 + 60)
        await wait_for_async(lambda: len(committed) == 2, 10, "the clearing committed")
    finally:
        task.cancel()
    assert [(r["type"], r["data"]["state"], r["ts"]) for r in committed] == [
        ("alert", "raised", int(T0 * 1000)), ("alert", "cleared", int((T0 + 60) * 1000))]
    third = service(tmp_path, fridge_rule())  # another restart: nothing pending, nothing raised
    assert third.pending_events() == [] and third.active == {}


async def test_stopping_the_service_as_it_wakes_up_stops_it(tmp_path: Path) -> None:
    """A cancellation that meets the wake-up must not be lost (Python 3.11's ``asyncio.wait_for`` drops it,
    gh-86296), or stopping the gateway waits for ever."""
    alerts = service(tmp_path, fridge_rule(), check_interval_s=300)

    async def emit(item: Any) -> None:
        return None

    await assert_stops_when_cancelled_as_it_wakes(lambda: alerts.run(emit), lambda: getattr(alerts, "_wakeup", None))
