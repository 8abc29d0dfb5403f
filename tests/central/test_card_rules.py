"""One card identity rule per school (issue 22): the state's ``card_rule``, kept by the fleet table, compared.

Unit tests of the parts; ``tests/e2e/test_card_rule_fleet.py`` runs them through real gateways, Mosquitto, an
ingest worker and ``edugate central-doctor``."""

from __future__ import annotations

import orjson
import pytest

from edugate.central.card_rules import rule_mismatches
from edugate.central.fleet import CardRule, FleetTable, parse_state
from edugate.central.ingest.doctor import card_rule_mismatches
from edugate.common.card_identity import CardIdentityRule
from edugate.contract.state import card_rule_fingerprint, offline_will
from edugate.gateway.runtime.card_rule import state_card_rule

V1 = CardIdentityRule(version=1, prox_bits=40, nfc_bytes="all", replaces=0)


def online(rule: dict | None, ts: int = 1_763_900_000_000) -> bytes:
    doc: dict = {"status": "online", "ts": ts, "devices": {}}
    if rule is not None:
        doc["card_rule"] = rule
    return orjson.dumps(doc)


def test_the_fingerprint_is_of_the_settings_that_decide_pseudonyms() -> None:
    assert state_card_rule(V1) == {"version": 1, "fingerprint": "32bb1b3f"}  # the contract's documented example
    assert state_card_rule(None) == {"version": 0, "fingerprint": "44136fa3"}
    assert card_rule_fingerprint({"prox_bits": 40, "nfc_bytes": "all"}) == \
        card_rule_fingerprint({"nfc_bytes": "all", "prox_bits": 40}), "canonical: key order does not count"
    # replaces is history, not a setting; version is sent on its own
    assert state_card_rule(V1.model_copy(update={"replaces": None}))["fingerprint"] == "32bb1b3f"
    assert state_card_rule(CardIdentityRule(version=2, replaces=1))["fingerprint"] == "32bb1b3f"
    assert state_card_rule(CardIdentityRule(version=2, prox_bits=24, replaces=1))["fingerprint"] != "32bb1b3f"
    assert state_card_rule(CardIdentityRule(version=2, nfc_bytes=4, replaces=1))["fingerprint"] != "32bb1b3f"


def test_the_fleet_table_keeps_the_rule_through_the_last_will() -> None:
    doc, problems = parse_state(online({"version": 3, "fingerprint": "0a1b2c3d"}))
    assert problems == [] and doc is not None and doc.card_rule == CardRule(3, "0a1b2c3d")
    table = FleetTable()
    table.apply("s1", "g1", doc, 0)
    will, _ = parse_state(orjson.dumps(offline_will()))
    assert will is not None and will.card_rule is None
    table.apply("s1", "g1", will, 1_763_900_000_001)
    [row] = table.snapshot()
    assert row["status"] == "offline" and row["card_rule"] == {"version": 3, "fingerprint": "0a1b2c3d"}
    old, _ = parse_state(online(None))  # a gateway from before the field
    assert old is not None and old.card_rule is None


@pytest.mark.parametrize("bad", [[], "v3", {"version": "3", "fingerprint": "0a1b2c3d"},
                                 {"version": -1, "fingerprint": "0a1b2c3d"}, {"version": 3},
                                 {"version": 3, "fingerprint": "0A1B2C3D"}, {"version": 3, "fingerprint": "0a1b"}])
def test_a_malformed_rule_is_ignored_with_a_problem_saying_what(bad: object) -> None:
    doc, problems = parse_state(online(bad))  # type: ignore[arg-type]
    assert doc is not None and doc.online and doc.card_rule is None
    assert problems == ['\'card_rule\' must be {"version": <integer >= 0>, "fingerprint": <8 lower-case hex '
                        'digits>}; card_rule ignored']


def row(school: str, gateway: str, rule: dict | None) -> dict:
    return {"school": school, "gateway": gateway, "card_rule": rule}


def test_a_school_whose_gateways_differ_is_flagged_naming_them() -> None:
    a, b = state_card_rule(V1), state_card_rule(CardIdentityRule(version=2, prox_bits=24, replaces=1))
    rows = [row("s1", "gw-a", a), row("s1", "gw-c", a), row("s1", "gw-b", b), row("s1", "gw-old", None),
            row("s2", "gw-1", a), row("s2", "gw-2", a), row("s3", "gw-1", b), row("s4", "gw-1", a),
            row("s4", "gw-2", a | {"version": 2})]  # same settings, another version: also flagged
    found = rule_mismatches(rows)
    assert [m.school for m in found] == ["s1", "s4"]
    s1 = found[0]
    assert s1.gateways == ("gw-a", "gw-b", "gw-c"), "a gateway that reports no rule is not compared"
    assert s1.message == (
        f"school s1: its gateways use different card identity rules (version 1 (32bb1b3f) on gw-a, gw-c; "
        f"version 2 ({b['fingerprint']}) on gw-b): one card gets a different pseudonym at each; put the same "
        "privacy.card_identity on every gateway of the school (docs/drivers/cards.md)")
    assert rule_mismatches(rows[:2] + rows[4:7]) == []


def test_the_doctor_compares_the_retained_states() -> None:
    a, b = state_card_rule(V1), state_card_rule(None)
    states = {"edu/v1/s1/gw-a/state": online(a), "edu/v1/s1/gw-b/state": online(b),
              "edu/v1/s2/gw-a/state": online(a), "edu/v1/s2/gw-b/state": orjson.dumps(offline_will()),
              "edu/v1/s3/gw-a/state": b"not json", "edu/v1/s3/gw-b/state": online({"version": 1})}
    mismatches, problems = card_rule_mismatches(states)
    assert [(m.school, m.gateways) for m in mismatches] == [("s1", ("gw-a", "gw-b"))]
    assert problems[0].startswith("edu/v1/s3/gw-a/state: not JSON")
    assert problems[1].startswith("edu/v1/s3/gw-b/state: 'card_rule' must be")
