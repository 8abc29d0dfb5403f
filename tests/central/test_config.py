"""central.yaml: validated like the gateway's config (file:line: path: message, exit code 2); flags override it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edugate.central.config import CentralConfig, load_central_config, override_broker
from edugate.central.eventstore import EventStore
from edugate.cli.main import app
from edugate.common.mqtt import BrokerConfig
from edugate.simulators.servers import Mosquitto, VictoriaMetrics, free_port
from tests.central import Publisher, event, telemetry, topic, wait_until
from tests.helpers import REPO
from tests.vmquery import sample_count

runner = CliRunner()


def write(tmp_path: Path, text: str | bytes, name: str = "central.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_the_example_is_valid() -> None:
    result = runner.invoke(app, ["central-check", str(REPO / "config" / "central.yaml")])
    assert result.exit_code == 0, result.output
    assert "OK: broker mqtt.edu.example.org:8883, mqtt2.edu.example.org:8883 (TLS)" in result.output
    cfg = load_central_config(REPO / "config" / "central.yaml")
    assert cfg.signing.private_key == Path("/etc/edugate-central/central-cmd.pem")
    assert cfg.events.db == Path("/var/lib/edugate-central/events.sqlite")


def test_every_problem_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, (
        "broker:\n"
        "  brokers: [\"broker:70000\"]\n"
        "  client_id: central\n"
        "store:\n"
        "  url: 127.0.0.1:8428\n"
        "ingest:\n"
        "  group: a/b\n"
        "  batch_lines: 0\n"
        "pages:\n"
        "  port: 8090\n"
        "  port: 8091\n"
        "  timezone: Mars/Olympus\n"
        "  colour: blue\n"
    ))
    result = runner.invoke(app, ["central-check", str(path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{path}:2: broker.brokers[0]: 'broker:70000': the port must be a number from 1 to 65535",
        f"{path}:5: store.url: '127.0.0.1:8428': the store URL must start with http:// or https://",
        f"{path}:7: ingest.group: group 'a/b': use letters, digits, '-' and '_' ('' = not shared)",
        f"{path}:8: ingest.batch_lines: Input should be greater than or equal to 1",
        f"{path}:11: pages.port: key 'port' appears twice",
        f"{path}:12: pages.timezone: unknown time zone 'Mars/Olympus' (use an IANA name like Asia/Ho_Chi_Minh)",
        f"{path}:13: pages.colour: unknown key (a typo?)",
        f"{path}: 7 problem(s); nothing was started",
    ]


def test_one_client_id_per_process_not_per_broker_section(tmp_path: Path) -> None:
    path = write(tmp_path, "ingest:\n  client_id: ingest-1\nbroker:\n  client_id: central\n")
    result = runner.invoke(app, ["central-check", str(path)])
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (
        f"{path}:3: broker: client_id is not used by central: each central process has its own, set "
        "ingest.client_id (one per worker) and pages.client_id")


@pytest.mark.parametrize(("text", "message"), [
    (b"pages:\n  host: caf\xe9\n", ":2: not UTF-8 text (byte 0xe9 at offset 18): save the file as UTF-8"),
    ("pages: [1\n", ":2: invalid YAML: expected ',' or ']'"),
    ("- just a list\n", ":1: the file must be a YAML mapping (key: value)"),
])
def test_unreadable_files_are_one_clear_problem(tmp_path: Path, text: str | bytes, message: str) -> None:
    path = write(tmp_path, text)
    result = runner.invoke(app, ["central-check", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"{path}{message}"), result.output
    assert "Traceback" not in result.output


def test_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", "--config", str(tmp_path / "nope.yaml"), "--client-id", "w1"])
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in result.output


def test_no_file_gives_the_flag_defaults() -> None:
    cfg = load_central_config(None)
    assert cfg == CentralConfig()
    assert cfg.broker.brokers == ["127.0.0.1:1883"] and cfg.broker.tls is None
    assert cfg.store.url == "http://127.0.0.1:8428" and cfg.store.bucket == "edugate"
    assert cfg.ingest.client_id is None and cfg.ingest.group == ""
    assert (cfg.ingest.batch_lines, cfg.ingest.batch_ms, cfg.ingest.queue_mb) == (10_000, 50, 64)
    assert (cfg.pages.host, cfg.pages.port, cfg.pages.client_id) == ("127.0.0.1", 8090, "edugate-central")
    assert cfg.pages.users_path() == Path("/var/lib/edugate-central/web-users.json")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", "broker:\n  password_file: pw\n  tls: {ca_file: ca.pem}\nevents: {db: ev.db}\n"
                 "pages: {data_dir: /srv/c}\nsigning: {private_key: k.pem}\n")
    cfg = load_central_config(path)
    assert cfg.broker.password_file == tmp_path / "etc" / "pw"
    assert cfg.broker.tls is not None and cfg.broker.tls.ca_file == tmp_path / "etc" / "ca.pem"
    assert cfg.events.db == tmp_path / "etc" / "ev.db"
    assert cfg.pages.data_dir == Path("/srv/c")
    assert cfg.signing.private_key == tmp_path / "etc" / "k.pem"


def test_broker_flags_override_the_file() -> None:
    base = BrokerConfig(brokers=["a:1883", "b:1883"], username="file-user")
    assert override_broker(base) == base
    tls = override_broker(base, url="mqtts://c", ca_file=Path("/ca.pem"))
    assert tls.brokers == ["c:8883"] and tls.tls is not None and tls.tls.ca_file == Path("/ca.pem")
    assert tls.username == "file-user"
    moved = override_broker(base, port=1999, username="flag-user")
    assert moved.brokers == ["a:1999"] and moved.username == "flag-user"
    assert override_broker(base, url="mqtt://c:1884", host="d").brokers == ["d:1884"]
    with pytest.raises(ValueError, match="port must be a number between 1 and 65535"):
        override_broker(base, url="mqtt://c:70000")
    with pytest.raises(ValueError, match="key_file is given without cert_file"):
        override_broker(base, key_file=Path("/k.pem"))


def test_ingest_runs_from_the_file_with_flags_overriding_it(tmp_path: Path, mosquitto: Mosquitto,
                                                           victoria: VictoriaMetrics) -> None:
    """The file names the store, the event log, the stats file and the client id; its broker is wrong (nothing
    listens there) and ``--broker`` overrides it: records arrive in the store and the event log."""
    config = write(tmp_path, f"broker:\n  brokers: [\"127.0.0.1:{free_port()}\"]\n"
                   f"store:\n  url: {victoria.url}\n"
                   "ingest:\n  client_id: ingest-from-file\n  stats_file: stats.json\n  summary_interval_s: 0\n"
                   "events:\n  db: events.sqlite\n")
    log = (tmp_path / "ingest.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edugate.central.cli_ingest", "--config", str(config),
                             "--broker", mosquitto.url], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    stats_path = tmp_path / "stats.json"

    def stats() -> dict[str, object]:
        assert proc.poll() is None, (tmp_path / "ingest.log").read_text()
        try:
            loaded = json.loads(stats_path.read_text())
        except (OSError, ValueError):
            return {}
        assert isinstance(loaded, dict)
        return loaded

    publisher = None
    try:
        wait_until(lambda: stats().get("subscribed"), 20, 0.05, "the worker to subscribe")
        publisher = Publisher(mosquitto.host, mosquitto.port)
        publisher.publish(topic("school-1", "gw-a", "telemetry"), [telemetry(1), telemetry(2)])
        publisher.publish(topic("school-1", "gw-a", "event"), [event(3)])
        wait_until(lambda: sample_count(victoria.url, '{__name__="edugate_temperature_c"}') >= 2, 30, 0.2,
                   "two temperature samples in the store named by the file")
        store = EventStore(tmp_path / "events.sqlite")
        try:
            found = wait_until(lambda: store.query(type_="card_tap", limit=10), 20, 0.1, "the event in the log")
        finally:
            store.close()
        assert [(e["gateway"], e["device"]) for e in found] == [("gw-a", "door-2")]
    finally:
        if publisher is not None:
            publisher.close()
        proc.terminate()
        assert proc.wait(20) == 0
        log.close()
