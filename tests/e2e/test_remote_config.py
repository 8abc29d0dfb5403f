"""Remote configuration with rollback (issue 18): ``config.get``, ``config.apply`` and ``driver.restart`` sent
signed with ``edugate send`` through a real Mosquitto to a real gateway process (``edugate run``), which
validates, writes, re-executes itself on the new file and keeps it only if it is healthy within the deadline.
"""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml

from edugate.contract.commands import load_private_key, sign_command
from edugate.gateway.update.trial import Trial, journal_path
from edugate.simulators.servers import Mosquitto
from tests.helpers import REPO, Collector, GatewayProcess, outbox_state, undelivered, wait_for

SCHOOL, GATEWAY = "rc-school", "gw-rc"


class Commander:
    """Central's side, in-process (``edugate send`` costs a second of interpreter start per command): signs with
    central's key, publishes on the gateway's ``cmd/{name}`` at QoS 1 and waits for the ``cmd-result`` with the
    command's id. (tests/e2e/test_downlink.py covers ``edugate send`` itself; config.get below uses it too.)"""

    def __init__(self, broker: Mosquitto, key: Path, school: str = SCHOOL, gateway: str = GATEWAY) -> None:
        self.key = load_private_key(Path(f"{key}.pem"))
        self.school, self.gateway = school, gateway
        self.results: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"central-cmd-{gateway}")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_connect = lambda c, *_: c.subscribe(f"edu/v1/{school}/{gateway}/cmd-result", qos=1)
        self.client.connect("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()
        assert subscribed.wait(10), "central's command client did not get its subscription"

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        with self.cond:
            self.results[doc["id"]] = doc
            self.cond.notify_all()

    def __call__(self, name: str, args: dict[str, Any] | None = None, timeout: float = 20) -> dict[str, Any]:
        envelope = sign_command(self.key, school=self.school, gateway=self.gateway, name=name, args=args or {},
                                ttl_s=120)
        self.client.publish(f"edu/v1/{self.school}/{self.gateway}/cmd/{name}", json.dumps(envelope), qos=1)
        with self.cond:
            if not self.cond.wait_for(lambda: envelope["id"] in self.results, timeout):
                raise AssertionError(f"no cmd-result for {name} {envelope['id']} within {timeout} s")
            return self.results[envelope["id"]]

    def wait_ready(self, timeout: float = 20) -> None:
        """Ping until the gateway answers: it has subscribed to its commands (a command published before that
        is not delivered: commands are not queued for a gateway)."""
        wait_for(lambda: self._answers_ping(), timeout, "the gateway to answer a ping", interval=0)

    def _answers_ping(self) -> bool:
        try:
            return self("ping", timeout=0.5)["status"] == "ok"
        except AssertionError:
            return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def cli_send(broker: Mosquitto, key: Path, name: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``edugate send``: its exit code and the gateway's cmd-result."""
    proc = subprocess.run(
        [sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{key}.pem", "--broker",
         broker.url, "--school", SCHOOL, "--gateway", GATEWAY, "--name", name, "--args", json.dumps(args),
         "--ttl", "120", "--timeout", "15"], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def site_config(broker: Mosquitto, key: Path) -> dict[str, Any]:
    return {"school": SCHOOL, "gateway": GATEWAY,
            "uplink": {"host": "127.0.0.1", "port": broker.port, "reconnect_max_s": 0.2},
            "downlink": {"enabled": True, "public_keys": [f"{key}.pub.pem"]},
            "devices": [{"id": "tick", "driver": "synthetic", "interval_s": 0.02, "values": 0}]}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def events(collector: Collector, event_type: str) -> list[dict[str, Any]]:
    with collector.lock:
        return [r for r in collector.records["event"] if r.get("type") == event_type]


def assert_nothing_lost(gw: GatewayProcess, collector: Collector) -> None:
    """Every seq the outbox ever gave out (on any config) reached the collector or is still queued in the outbox
    (committed just before the last stop): none lost across the restarts and rollbacks."""
    wait_for(lambda: not undelivered(collector, gw.outbox_path), 15, "every committed record at the collector")
    next_seq, queued = outbox_state(gw.outbox_path)
    assert next_seq > 20
    assert collector.distinct() | queued == set(range(1, next_seq))


def test_config_is_validated_applied_and_a_driver_restarted(mosquitto: Mosquitto, central_key: Path,
                                                             tmp_path: Path) -> None:
    collector = Collector(mosquitto.port, client_id="rc-collector").start()
    gw = GatewayProcess(tmp_path / "gw", site_config(mosquitto, central_key)).start()
    send = Commander(mosquitto, central_key)
    send.wait_ready()
    try:
        original = gw.config_path.read_bytes()
        code, got = cli_send(mosquitto, central_key, "config.get", {})
        assert code == 0 and got["result"]["yaml"] == original.decode()

        # an invalid config: every problem with its line comes back, and nothing changes
        bad = copy.deepcopy(gw.config)
        bad["uplink"]["port"] = 70000
        bad["devices"][0]["interval_sec"] = 1
        answer = send("config.apply", {"yaml": yaml.safe_dump(bad, sort_keys=False)})
        assert answer["status"] == "failed", answer
        reason = answer["reason"]
        assert f"{gw.config_path}:5: uplink.port: Input should be less than or equal to 65535" in reason
        assert "devices[0].interval_sec: unknown key" in reason
        assert gw.config_path.read_bytes() == original
        assert not list(gw.workdir.glob("gateway.yaml.*")), "no backup, journal or temporary file"

        # a valid config with a stale expected hash is refused too; a dry run changes nothing
        new = copy.deepcopy(gw.config)
        new["devices"].append({"id": "tock", "driver": "synthetic", "interval_s": 0.05, "values": 0})
        text = yaml.safe_dump(new, sort_keys=False)
        answer = send("config.apply", {"yaml": text, "expect_sha256": "0" * 64})
        assert answer["status"] == "failed" and "changed since it was read" in answer["reason"]
        for key, value, refusal in (("gateway", "gw-other", "school/gateway would change"),
                                    ("storage", {"path": str(tmp_path / "elsewhere.sqlite")}, "would move the outbox")):
            answer = send("config.apply", {"yaml": yaml.safe_dump(new | {key: value})})
            assert answer["status"] == "failed" and refusal in answer["reason"], answer
        answer = send("config.apply", {"yaml": text, "dry_run": True})
        assert answer["status"] == "ok" and answer["result"]["applied"] is False
        assert gw.config_path.read_bytes() == original

        # a valid one is applied: the gateway restarts on it and reports config.applied
        answer = send("config.apply", {"yaml": text, "expect_sha256": got["result"]["sha256"], "deadline_s": 20})
        assert answer["status"] == "ok" and answer["result"]["applied"], answer
        applied = wait_for(lambda: events(collector, "config.applied"), 30, "the config.applied event")
        assert applied[0]["data"]["cmd_id"] == answer["id"]
        assert events(collector, "config.trial")[0]["data"]["cmd_id"] == answer["id"]
        assert gw.config_path.read_text() == text
        assert (gw.workdir / "gateway.yaml.prev").read_bytes() == original
        assert not (gw.workdir / "gateway.yaml.trial.json").exists()
        assert gw.proc is not None and gw.proc.poll() is None, "the same process runs on"
        wait_for(lambda: collector.by_device().get("tock"), 10, "records of the device the new config added")

        # driver.restart: the device's driver is replaced and reads again
        answer = send("driver.restart", {"device": "tick"})
        assert answer["status"] == "ok" and answer["result"] == {"device": "tick", "restarted": True}, answer
        before = collector.by_device()["tick"]
        wait_for(lambda: collector.by_device()["tick"] > before + 5, 10, "records of the restarted driver")
        answer = send("driver.restart", {"device": "nope"})
        assert answer["status"] == "failed" and "unknown device 'nope'" in answer["reason"]
        assert gw.stop() == 0
        assert_nothing_lost(gw, collector)
    finally:
        if gw.proc is not None:
            gw.kill()
        send.close()
        collector.stop()


def test_config_that_breaks_the_uplink_is_rolled_back_and_reported(mosquitto: Mosquitto, central_key: Path,
                                                                   tmp_path: Path) -> None:
    collector = Collector(mosquitto.port, client_id="rc-collector-2").start()
    gw = GatewayProcess(tmp_path / "gw", site_config(mosquitto, central_key)).start()
    send = Commander(mosquitto, central_key)
    send.wait_ready()
    try:
        original = gw.config_path.read_bytes()
        wait_for(lambda: collector.by_device().get("tick"), 10, "the first records")
        broken = copy.deepcopy(gw.config)
        broken["uplink"]["port"] = closed_port()  # valid, but no broker there
        answer = send("config.apply", {"yaml": yaml.safe_dump(broken, sort_keys=False), "deadline_s": 2})
        assert answer["status"] == "ok" and answer["result"]["restarting"], answer
        rolled = wait_for(lambda: events(collector, "config.rolled_back"), 40, "the config.rolled_back event")
        assert rolled[0]["data"]["cmd_id"] == answer["id"]
        assert "not healthy within 2 s: the uplink is not connected" in rolled[0]["data"]["reason"]
        assert gw.config_path.read_bytes() == original
        assert not (gw.workdir / "gateway.yaml.trial.json").exists()
        assert "config.applied" not in {r["type"] for r in collector.records["event"]}
        # the records the device made while the broken config ran were kept and arrive now
        wait_for(lambda: len(outbox_state(gw.outbox_path)[1]) < 5, 15, "the records kept during the trial sent")
        assert gw.proc is not None and gw.proc.poll() is None
        assert gw.stop() == 0
        assert_nothing_lost(gw, collector)
    finally:
        if gw.proc is not None:
            gw.kill()
        send.close()
        collector.stop()


@pytest.mark.slow
def test_a_trial_that_dies_or_cannot_start_is_rolled_back(mosquitto: Mosquitto, central_key: Path,
                                                           tmp_path: Path) -> None:
    """kill -9 during the trial: the next start undoes the change; a config the gateway cannot start on (a
    missing key file, which validation cannot see) is undone at once."""
    collector = Collector(mosquitto.port, client_id="rc-collector-3").start()
    gw = GatewayProcess(tmp_path / "gw", site_config(mosquitto, central_key)).start()
    send = Commander(mosquitto, central_key)
    send.wait_ready()
    journal = gw.workdir / "gateway.yaml.trial.json"
    try:
        original = gw.config_path.read_bytes()
        broken = copy.deepcopy(gw.config)
        broken["uplink"]["port"] = closed_port()
        first = send("config.apply", {"yaml": yaml.safe_dump(broken, sort_keys=False), "deadline_s": 600})
        assert first["status"] == "ok", first
        wait_for(lambda: journal.exists() and json.loads(journal.read_text())["phase"] == "trial", 15,
                 "the trial to start")
        gw.kill()  # a crash or power cut during the trial
        gw.start()
        send.wait_ready()
        rolled = wait_for(lambda: events(collector, "config.rolled_back"), 20, "the config.rolled_back event")
        assert rolled[0]["data"]["cmd_id"] == first["id"]
        assert "stopped during the trial" in rolled[0]["data"]["reason"]
        assert gw.config_path.read_bytes() == original

        keyless = copy.deepcopy(gw.config)
        keyless["downlink"]["public_keys"] = [str(tmp_path / "missing.pub.pem")]
        second = send("config.apply", {"yaml": yaml.safe_dump(keyless)})
        assert second["status"] == "ok", second
        rolled = wait_for(lambda: [e for e in events(collector, "config.rolled_back")
                                   if e["data"]["cmd_id"] == second["id"]], 20, "the second rollback")
        assert "the gateway cannot start" in rolled[0]["data"]["reason"] and "missing.pub.pem" in \
            rolled[0]["data"]["reason"]
        assert gw.config_path.read_bytes() == original
        assert gw.stop() == 0
        assert_nothing_lost(gw, collector)
    finally:
        if gw.proc is not None:
            gw.kill()
        send.close()
        collector.stop()


def test_a_journal_edited_by_hand_is_set_aside_and_the_gateway_starts(tmp_path: Path) -> None:
    """A journal this EduGate cannot read never keeps a gateway from starting: set aside, logged, no guess."""
    config = tmp_path / "gateway.yaml"
    config.write_text("school: s\n")
    journal = journal_path(config)
    for text in ("{not json", json.dumps({"version": 1, "kind": "config"}), json.dumps({"version": 9})):
        journal.write_text(text)
        assert Trial.resume(config) is None
        assert not journal.exists() and journal.with_suffix(".corrupt").read_text() == text


def test_a_change_interrupted_before_it_was_made_is_reported_not_tried(tmp_path: Path) -> None:
    """Power lost between the journal and the new file: the next start reports it, and runs the old file."""
    config = tmp_path / "gateway.yaml"
    config.write_text("school: s\n")
    Trial.begin(config, "config", "cmd-1", 60, [], config=str(config), backup=str(config) + ".prev",
                report={"sha256": "f" * 64, "previous_sha256": "0" * 64})
    trial = Trial.resume(config)
    assert trial is not None and trial.phase == "rolled_back"
    assert "interrupted before it was made" in trial.doc["reason"]
    assert config.read_text() == "school: s\n"
