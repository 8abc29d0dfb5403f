"""Experiment sessions under ``kill -9``: a real ``edugate run`` gets signed ``sessions.start`` / ``sessions.stop``
commands and is killed the moment the session's metadata on disk changed (before its ``session`` events may be
in the outbox). Central finds a session from those events, so after every restart each session must still
have its start and its stop at the broker, at the session's own times.

Slow (a dozen gateway starts): ``pytest -m slow tests/web/test_sessions_kill9.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edugate.simulators.servers import Mosquitto
from edugate.simulators.thermometer import ThermometerSimulator
from tests.e2e.conftest import central_key  # noqa: F401 - fixture
from tests.helpers import REPO, Collector, GatewayProcess, outbox_state, wait_async

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCHOOL, GATEWAY, ROUNDS = "lab-school", "gw-stem", 4


def metas(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in folder.glob("s-*.json"):
        try:
            found[path.stem] = json.loads(path.read_text())
        except ValueError:  # being replaced
            continue
    return found


async def test_session_events_survive_kill_9(mosquitto: Mosquitto, central_key: Path,  # noqa: F811
                                             tmp_path: Path) -> None:
    config = {
        "school": SCHOOL, "gateway": GATEWAY,
        "uplink": {"port": mosquitto.port, "health_interval_s": 3600},
        "downlink": {"enabled": True, "public_keys": [f"{central_key}.pub.pem"]},
        "sessions": {},
        "devices": [{"id": "probe-a", "driver": "thermometer", "room": "lab-1", "port": str(tmp_path / "tty"),
                     "names": {"T": "temperature"}}],
    }
    folder = tmp_path / "gw" / "sessions"
    collector = Collector(mosquitto.port, client_id="sessions-kill9").start()
    gw = GatewayProcess(tmp_path / "gw", config)

    def send(name: str, args: dict[str, Any]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "edugate.central.command_tools", "send", "--key", f"{central_key}.pem",
             "--broker", mosquitto.url, "--school", SCHOOL, "--gateway", GATEWAY, "--name", name,
             "--args", json.dumps(args), "--ttl", "60", "--timeout", "20"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def kill_when(changed: Callable[[], Any], command: tuple[str, dict[str, Any]], what: str) -> Any:
        births = len(collector.states)
        gw.start()
        await wait_async(lambda: any(d.get("status") == "online" for d in collector.states[births:]), 20,
                         "the gateway online")
        # the gateway subscribes to its commands just after its birth, with a clean session: a command sent in
        # between is lost, so it is sent again every 3 s until it shows (a repeat is refused: already recording,
        # or stopped already)
        senders = []
        try:
            for _ in range(10):
                senders.append(send(*command))
                try:
                    return await wait_async(changed, 3, what, interval=0.0005)
                except AssertionError:
                    continue
            raise AssertionError(f"timed out after 30 s waiting for {what}")
        finally:
            gw.kill()  # at once: its events may still be on their way to the outbox
            for sender in senders:
                sender.kill()
                sender.wait()

    ids: list[str] = []
    async with ThermometerSimulator(tmp_path / "tty"):
        for i in range(ROUNDS):
            before = set(metas(folder))
            start = ("sessions.start", {"name": f"Round {i}", "devices": ["probe-a"], "by": "ops"})
            [session] = await kill_when(lambda b=before: [s for s in metas(folder) if s not in b], start,
                                        f"round {i}: the session's metadata written")
            ids.append(session)
            stop = ("sessions.stop", {"session": session, "by": "ops"})
            await kill_when(lambda s=session: metas(folder).get(s, {}).get("stopped_at"), stop,
                            f"round {i}: the stop written")
        births = len(collector.states)
        gw.start()  # a last run sends whatever the kills left behind
        await wait_async(lambda: any(d.get("status") == "online" for d in collector.states[births:])
                         and not any(m.get("unsent") for m in metas(folder).values())
                         and not outbox_state(gw.outbox_path)[1], 30, "everything sent after the last restart")
        assert gw.stop() == 0
    collector.stop()

    with collector.lock:
        events = {(r["data"]["session"], r["data"]["action"], r["ts"]) for r in collector.records["event"]
                  if r["type"] == "session"}
    on_disk = metas(folder)
    for session in ids:
        meta = on_disk[session]
        assert meta["unsent"] == []
        assert (session, "started", meta["started_at"]) in events, (session, sorted(events))
        assert (session, "stopped", meta["stopped_at"]) in events, (session, sorted(events))
