"""Central sees which card identity rule each gateway runs under and flags a school whose gateways differ
(issue 22): two real gateways of one school (``edugate run``, one under the demo's rule, one under a rule
keeping 24 bits of 125 kHz cards) on a real Mosquitto; their ``card_rule`` arrives in a real ingest worker's
fleet table; ``edugate central-doctor`` reads the retained states and names the school and both gateways; the
fleet page (its body, served by central's app) shows the warning."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edugate.central.cli import app as central_cli
from edugate.central.fleet import FleetTable, parse_state
from edugate.central.ingest.doctor import retained_states
from edugate.central.web.pages import Central, StateFollower, Store, create_central_app
from edugate.common.card_identity import CardIdentityRule
from edugate.common.mqtt import BrokerConfig
from edugate.common.web.auth import SessionSigner, UserStore
from edugate.common.web.site import SiteAuth
from edugate.contract.topics import parse_topic
from edugate.gateway.runtime.card_rule import state_card_rule
from edugate.simulators.servers import Mosquitto, VictoriaMetrics
from tests.helpers import GatewayProcess, ingest_stats, wait_for
from tests.web.fakes import users_file

SCHOOL = "rule-school"
RULES = {"gw-a": {"version": 1, "prox_bits": 40, "nfc_bytes": "all"},
         "gw-b": {"version": 2, "prox_bits": 24, "nfc_bytes": "all"}}


def fleet_body(tmp_path: Path, table: FleetTable, store_url: str) -> str:
    auth = SiteAuth(UserStore(users_file(tmp_path / "central-users.json")), SessionSigner(b"c" * 32),
                    "edugate_central_session", "edugate web-user add NAME --role admin --users-file x")
    central = Central(StateFollower(table=table, connected=True), Store(store_url))
    with TestClient(create_central_app(central, auth), base_url="http://central.local") as client:
        client.post("/login", data={"username": "victor", "password": "victor-viewer-pw-1", "next": "/fleet"})
        answer = client.get("/fleet/body")
        assert answer.status_code == 200, answer.text
        page = client.get(f"/gateways/{SCHOOL}/gw-b")
        assert page.status_code == 200 and "Card identity rule" in page.text, page.text
        return answer.text + page.text


def test_central_flags_a_school_whose_gateways_use_different_card_rules(
        mosquitto: Mosquitto, victoria: VictoriaMetrics, ingest: Path, tmp_path: Path) -> None:
    gateways = [GatewayProcess(tmp_path / name, {
        "school": SCHOOL, "gateway": name, "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "privacy": {"card_identity": rule}}) for name, rule in RULES.items()]
    try:
        for gw in gateways:
            gw.start()
        stats = tmp_path / "ingest.stats.json"

        def fleet() -> dict[str, dict]:
            return {r["gateway"]: r for r in ingest_stats(stats).get("fleet", []) if r["school"] == SCHOOL}

        wait_for(lambda: all(r["card_rule"] for r in fleet().values()) and len(fleet()) == 2, 30,
                 "both gateways' card rules in the ingest worker's fleet table")
        expected = {name: state_card_rule(CardIdentityRule(**rule)) for name, rule in RULES.items()}
        assert {name: row["card_rule"] for name, row in fleet().items()} == expected
        assert expected["gw-a"]["fingerprint"] != expected["gw-b"]["fingerprint"]

        result = CliRunner().invoke(central_cli, ["central-doctor", "--broker-pid", str(mosquitto.proc.pid),  # type: ignore[union-attr]
                                                  "--broker", mosquitto.url, "--wait", "1"])
        assert result.exit_code == 1, result.output
        assert f"WARNING: school {SCHOOL}: its gateways use different card identity rules (version 1 " \
               f"({expected['gw-a']['fingerprint']}) on gw-a; version 2 ({expected['gw-b']['fingerprint']}) " \
               "on gw-b)" in result.output

        table = FleetTable()
        for name, payload in retained_states(BrokerConfig(brokers=[f"{mosquitto.host}:{mosquitto.port}"]), None,
                                             1.0).items():
            doc, _ = parse_state(payload)
            topic = parse_topic(name)
            assert doc is not None
            table.apply(topic.school, topic.gateway, doc, 0)
        body = fleet_body(tmp_path, table, victoria.url)
        assert 'data-kind="card_rule"' in body and "its gateways use different card identity rules" in body
        assert body.count("rule differs") == 2
        for name, rule in expected.items():
            assert f"card rule {rule['version']} · {rule['fingerprint']}" in body, name
    finally:
        for gw in gateways:
            if gw.proc is not None:
                gw.stop()
