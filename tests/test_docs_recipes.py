"""The commands the docs give operators do what the docs say (issue 13, items 11, 13, 14): the ``mosquitto_sub``
recipe shows QoS 1 and the retained flag (run here against a real Mosquitto), VictoriaMetrics is always shown
with a loopback or private listen address, and the simulators are run with ``edugate sim``, not a bare
``python -m`` that needs the project's environment."""

from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edugate.simulators.servers import Mosquitto
from tests.helpers import REPO, wait_for

DOCS = sorted({*REPO.glob("docs/**/*.md"), REPO / "README.md", *REPO.glob("drivers/*/README.md")})


def doc_lines() -> Iterator[tuple[Path, int, str]]:
    """Every line of the docs, with continuation lines (``\\`` at the end) joined."""
    for path in DOCS:
        pending, start = "", 0
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield path.relative_to(REPO), start, pending + line
            pending = ""


def commands(program: str) -> list[tuple[str, str]]:
    """(where, the command line) of every ``program ...`` the docs show."""
    pattern = re.compile(rf"(?:^|[`\s]){re.escape(program)}\s+(-[^`]*)")
    return [(f"{path}:{number}", f"{program} {found.group(1).strip()}") for path, number, line in doc_lines()
            for found in pattern.finditer(line)]


def test_victoria_metrics_is_shown_with_a_private_listen_address() -> None:
    shown = commands("victoria-metrics") + [(f"{path}:{number}", line) for path, number, line in doc_lines()
                                            if 'ARGS="-storageDataPath' in line]  # Debian's service file
    assert len(shown) >= 2, "the central docs show how to start it"
    for where, command in shown:
        found = re.search(r"-httpListenAddr=(\S*?):(\d+)", command)
        assert found, f"{where}: no -httpListenAddr, so it listens on every interface: {command}"
        address = ipaddress.ip_address(found.group(1) or "0.0.0.0")
        assert address.is_loopback or (address.is_private and not address.is_unspecified), f"{where}: {command}"
    warned = [p for p in DOCS if "-httpListenAddr" in p.read_text() and "every interface" in p.read_text()]
    assert {p.name for p in warned} >= {"operators.md", "central.md"}


def test_every_mosquitto_sub_recipe_can_show_qos_1_and_the_retained_flag() -> None:
    shown = commands("mosquitto_sub")
    assert len(shown) >= 2
    for where, command in shown:
        args = shlex.split(command, comments=True)
        assert "-q" in args and args[args.index("-q") + 1] == "1", f"{where}: {command}"
        assert "-V" in args and args[args.index("-V") + 1] in ("mqttv5", "5"), f"{where}: {command}"
        assert "--retain-as-published" in args, f"{where}: {command}"


def operators_recipe(broker: Mosquitto) -> list[str]:
    [(_, command)] = [(w, c) for w, c in commands("mosquitto_sub") if w.startswith("docs/operators.md")]
    args = [a.replace("<broker>", broker.host).replace("<school>/<gateway>", "s/g")
            for a in shlex.split(command, comments=True)]
    return [*args, "-p", str(broker.port)]


def watch(broker: Mosquitto, args: list[str], client_id: str, gw: str) -> list[str]:
    """Run ``args`` (a mosquitto_sub) until it has subscribed, publish what gateway ``s/gw`` publishes on two of
    its topics (the state retained, a record not), and return the two lines it printed."""
    proc = subprocess.Popen([*args, "-i", client_id, "-C", "2", "-W", "10"], stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: f"{client_id} " in broker.log_path.read_text(), 10, f"{client_id} to subscribe")
        gateway = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw")
        gateway.connect(broker.host, broker.port)
        gateway.loop_start()
        gateway.publish(f"edu/v1/s/{gw}/state", b'{"status":"online","ts":1}', qos=1, retain=True).wait_for_publish(5)
        gateway.publish(f"edu/v1/s/{gw}/telemetry", b"[]", qos=1).wait_for_publish(5)
        gateway.loop_stop()
        gateway.disconnect()
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out.splitlines()


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="needs mosquitto-clients (scripts/setup.sh)")
def test_the_operators_recipe_shows_qos_1_and_the_retained_flag(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mosquitto", extra_conf="log_type subscribe")
    broker.start()
    try:
        recipe = watch(broker, operators_recipe(broker), "recipe", "g")
        plain = watch(broker, ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", "edu/v1/s/c/#",
                               "-F", "%t qos=%q retained=%r %p"], "plain", "c")
    finally:
        broker.stop()
    assert recipe == ['edu/v1/s/g/state qos=1 retained=1 {"status":"online","ts":1}',
                      "edu/v1/s/g/telemetry qos=1 retained=0 []"]
    # the control: the default subscription (QoS 0, MQTT 3.1.1) shows neither
    assert plain == ['edu/v1/s/c/state qos=0 retained=0 {"status":"online","ts":1}',
                     "edu/v1/s/c/telemetry qos=0 retained=0 []"]


def test_the_simulators_are_run_with_edugate_sim() -> None:
    bare = re.compile(r"python3? -m (edugate\.)?simulators\.|^from simulators\.|^import simulators\b")
    found = [f"{path}:{number}: {line.strip()}" for path, number, line in doc_lines()
             if bare.search(line.strip()) and path.as_posix() != "docs/drivers/README.md"]
    assert found == [], "use 'edugate sim NAME' (any environment) instead"
    guide = (REPO / "docs" / "drivers" / "README.md").read_text()  # the driver author's guide says why
    assert "works only with that environment's Python" in guide
