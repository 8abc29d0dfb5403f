"""Self-update with rollback (issue 19): ``gateway.update`` sent signed through a real Mosquitto to a gateway
that runs from a real environment under a temporary install root (``versions/<v>/`` venvs, a ``current``
symlink), fetching the wheel over HTTP from a local server. The new version is installed beside the running one
(a real ``python -m venv`` and ``pip install``), checked, started and kept only if healthy.

The CI test uses wheels zipped straight from this checkout (seconds, no build): version 0.1.0 as it is, and a
"broken release" 0.1.1 whose uplink never connects, which must be rolled back. The slow test builds the real
wheel with pip (once per session) and goes 0.1.0 -> a good 0.1.1 (kept) -> a broken 0.1.2 (rolled back) with
the outbox under load. Run it by name: ``.venv/bin/pytest -m slow tests/e2e/test_self_update.py``.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edugate.gateway.update.installer import SHARED_PTH, Layout, UpdateError, fetch, install, prune
from edugate.simulators.servers import Mosquitto
from tests.e2e.test_remote_config import Commander
from tests.helpers import REPO, RUNNING, Collector, GatewayProcess, outbox_ready, outbox_state, undelivered, wait_for

SCHOOL, GATEWAY = "up-school", "gw-up"
BROKEN_UPLINK = ("    async def run(self) -> None:\n",
                 "    async def run(self) -> None:\n        raise OSError('a broken release: this uplink never "
                 "connects')\n")


# ---------------------------------------------------------------- wheels


def checkout_files() -> dict[str, bytes]:
    """The files of the package as setup.py maps them (``edugate/<folder>/...``), straight from the checkout."""
    tree = ast.parse((REPO / "setup.py").read_text())
    folders = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                   if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FOLDERS")
    files: dict[str, bytes] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"edugate/{path.relative_to(REPO)}"] = path.read_bytes()
    return files


def checkout_entry_points() -> str:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
    return "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n"
                   for group, points in groups.items())


def make_wheel(out: Path, version: str, files: dict[str, bytes], entry_points: str,
               patch: dict[str, tuple[str, str]] | None = None) -> Path:
    """A wheel of ``files`` as version ``version`` (its ``__version__`` too), with text replacements ``patch``."""
    files = dict(files)
    init = "edugate/contract/__init__.py"
    files[init] = files[init].replace(b'__version__ = "0.1.0"', f'__version__ = "{version}"'.encode())
    for name, (old, new) in (patch or {}).items():
        assert old.encode() in files[name], f"{name}: the patch does not apply"
        files[name] = files[name].replace(old.encode(), new.encode(), 1)
    info = f"edugate-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: edugate\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edugate-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()}"
                     f",{len(data)}\n" for name, data in files.items()) + f"{info}/RECORD,,\n"
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"edugate-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{info}/RECORD", record)
    return wheel


def wheel_contents(wheel: Path) -> tuple[dict[str, bytes], str]:
    """A built wheel's package files and entry points (to derive other versions from it)."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        files = {n: zf.read(n) for n in names if ".dist-info/" not in n}
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        return files, zf.read(entry).decode()


@functools.cache
def pip_built_wheel(out: Path) -> Path:
    """The real wheel of this checkout, built by pip from a copy (as scripts/check_wheel.sh does)."""
    src = out / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__",
                                                             "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out / "dist"),
                    str(src)], check=True, capture_output=True)
    return next((out / "dist").glob("edugate-*.whl"))


@pytest.fixture(scope="module")
def quick_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A broken 0.1.1 zipped from the checkout (without the 12 MB person-detector weights, which a synthetic
    site does not load)."""
    out = tmp_path_factory.mktemp("wheels")
    files = {name: data for name, data in checkout_files().items() if not name.endswith(".onnx")}
    return {"0.1.1": make_wheel(out, "0.1.1", files, checkout_entry_points(),
                                {"edugate/gateway/runtime/uplink.py": BROKEN_UPLINK})}


@pytest.fixture
def wheel_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A package repository over HTTP: (base URL, its folder)."""
    folder = tmp_path / "repo"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- the installed gateway


class InstalledGateway(GatewayProcess):
    """``/opt/edugate/current/bin/python -m edugate.cli run`` under a temporary install root."""

    root: Path = Path()

    def start(self) -> InstalledGateway:
        log = self.log_path.open("ab")
        argv = [str(Layout(self.root).current / "bin" / "python"), "-m", "edugate.cli", "run", str(self.config_path)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        RUNNING.add(self.proc)
        log.close()
        wait_for(lambda: outbox_ready(self.outbox_path), 30, "the installed gateway to create its outbox")
        return self


def installed_gateway(tmp_path: Path, wheel: Path | None, broker: Mosquitto, key: Path,
                      interval_s: float) -> InstalledGateway:
    """A gateway started from ``<root>/current``: ``wheel`` installed as the first version, or (None) this
    checkout's own environment as it (the running version may be any environment, e.g. a package's venv)."""
    config = {"school": SCHOOL, "gateway": GATEWAY,
              "uplink": {"host": "127.0.0.1", "port": broker.port, "reconnect_max_s": 0.2},
              "downlink": {"enabled": True, "public_keys": [f"{key}.pub.pem"]},
              "devices": [{"id": "tick", "driver": "synthetic", "interval_s": interval_s, "values": 0}]}
    gw = InstalledGateway(tmp_path / "gw", config)
    gw.root = tmp_path / "opt"
    layout = Layout(gw.root)
    layout.switch(install(layout, wheel, config=gw.config_path, share_from=Path(sys.prefix)) if wheel
                  else Path(sys.prefix))
    return gw.start()


def events(collector: Collector, event_type: str) -> list[dict[str, Any]]:
    with collector.lock:
        return [r for r in collector.records["event"] if r.get("type") == event_type]


def offer(server: tuple[str, Path], wheel: Path) -> dict[str, str]:
    """Put the wheel in the repository; the command's url and sha256 for it."""
    shutil.copy(wheel, server[1] / wheel.name)
    return {"url": f"{server[0]}/{wheel.name}", "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest()}


def current(gw: InstalledGateway) -> Path:
    return Layout(gw.root).running()


def assert_nothing_lost(gw: GatewayProcess, collector: Collector) -> None:
    wait_for(lambda: not undelivered(collector, gw.outbox_path), 15, "every committed record at the collector")
    next_seq, queued = outbox_state(gw.outbox_path)
    assert next_seq > 20
    assert collector.distinct() | queued == set(range(1, next_seq))


# ---------------------------------------------------------------- tests


def test_a_broken_release_is_rolled_back_and_a_wrong_wheel_never_installed(
        mosquitto: Mosquitto, central_key: Path, tmp_path: Path, quick_wheels: dict[str, Path],
        wheel_server: tuple[str, Path]) -> None:
    collector = Collector(mosquitto.port, client_id="up-collector").start()
    gw = installed_gateway(tmp_path, None, mosquitto, central_key, interval_s=0.02)
    send = Commander(mosquitto, central_key, SCHOOL, GATEWAY)
    send.wait_ready()
    first = current(gw)
    try:
        # a wheel whose hash is not the signed one: refused, nothing installed
        wrong = offer(wheel_server, quick_wheels["0.1.1"]) | {"sha256": "0" * 64}
        answer = send("gateway.update", wrong)
        assert answer["status"] == "ok" and answer["result"]["installing"] == "0.1.1", answer
        failed = wait_for(lambda: events(collector, "gateway.update_failed"), 20, "gateway.update_failed")
        assert failed[0]["data"]["cmd_id"] == answer["id"] and "is not the one the signed command gives" in \
            failed[0]["data"]["reason"]
        assert not (gw.root / "versions" / "0.1.1").exists()

        # the broken release: installed beside, started, not healthy in 2 s, the previous version restored
        answer = send("gateway.update", offer(wheel_server, quick_wheels["0.1.1"]) | {"deadline_s": 2})
        assert answer["status"] == "ok", answer
        rolled = wait_for(lambda: events(collector, "gateway.update_rolled_back"), 60, "the rollback event")
        data = rolled[0]["data"]
        assert data["cmd_id"] == answer["id"] and data["from_version"] == "0.1.0" and data["to_version"] == "0.1.1"
        assert "not healthy within 2 s: the uplink is not connected" in data["reason"]
        trial = events(collector, "gateway.update_trial")  # written by 0.1.1 itself, delivered after the rollback
        assert trial and trial[0]["data"]["cmd_id"] == answer["id"]
        assert current(gw) == first
        assert "a broken release: this uplink never connects" in gw.log(), "0.1.1 really ran"
        assert gw.proc is not None and gw.proc.poll() is None, "the same process throughout"
        wait_for(lambda: len(outbox_state(gw.outbox_path)[1]) < 5, 15, "the records kept during the trial sent")
        assert gw.stop() == 0
        assert_nothing_lost(gw, collector)
    finally:
        if gw.proc is not None:
            gw.kill()
        send.close()
        collector.stop()


@pytest.mark.slow
def test_update_kept_when_healthy_then_rolled_back_under_load(
        mosquitto: Mosquitto, central_key: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        wheel_server: tuple[str, Path]) -> None:
    built = pip_built_wheel(tmp_path_factory.getbasetemp() / "pip-wheel")
    files, entry_points = wheel_contents(built)
    out = tmp_path / "wheels"
    good = make_wheel(out, "0.1.1", files, entry_points)
    broken = make_wheel(out, "0.1.2", files, entry_points, {"edugate/gateway/runtime/uplink.py": BROKEN_UPLINK})
    collector = Collector(mosquitto.port, client_id="up-collector-slow").start()
    gw = installed_gateway(tmp_path, built, mosquitto, central_key, interval_s=0.002)  # ~500 records/s
    send = Commander(mosquitto, central_key, SCHOOL, GATEWAY)
    send.wait_ready()
    try:
        answer = send("gateway.update", offer(wheel_server, good) | {"deadline_s": 30})
        assert answer["status"] == "ok", answer
        kept = wait_for(lambda: events(collector, "gateway.updated"), 120, "the gateway.updated event")
        assert kept[0]["data"] == {"cmd_id": answer["id"], "from_version": "0.1.0", "to_version": "0.1.1"}
        assert current(gw).name == "0.1.1"
        assert send("ping")["result"]["version"] == "0.1.1"

        answer = send("gateway.update", offer(wheel_server, broken) | {"deadline_s": 10})
        assert answer["status"] == "ok", answer
        rolled = wait_for(lambda: events(collector, "gateway.update_rolled_back"), 120, "the rollback event")
        assert rolled[0]["data"]["to_version"] == "0.1.2" and rolled[0]["data"]["from_version"] == "0.1.1"
        assert current(gw).name == "0.1.1"
        assert send("ping")["result"]["version"] == "0.1.1"
        assert sorted(p.name for p in (gw.root / "versions").iterdir()) == ["0.1.0", "0.1.1", "0.1.2"]
        wait_for(lambda: len(outbox_state(gw.outbox_path)[1]) < 50, 60, "the records kept during the trial sent")
        assert gw.stop() == 0
        assert_nothing_lost(gw, collector)
    finally:
        if gw.proc is not None:
            gw.kill()
        send.close()
        collector.stop()


def test_fetch_keeps_only_the_signed_wheel_and_switch_is_atomic(tmp_path: Path) -> None:
    wheel = tmp_path / "edugate-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    into = tmp_path / "wheels"
    assert fetch(wheel.as_uri(), sha, into).read_bytes() == wheel.read_bytes()
    with pytest.raises(UpdateError, match="is not the one the signed command gives"):
        fetch(str(wheel), "0" * 64, tmp_path / "other")
    assert not list((tmp_path / "other").iterdir()), "nothing kept of a wheel with another hash"
    with pytest.raises(UpdateError, match="not an EduGate wheel file name"):
        fetch(str(tmp_path / "something-1.0.tar.gz"), sha, into)
    with pytest.raises(UpdateError, match="give an http, https or file URL"):
        fetch("ftp://example.org/edugate-1.0-py3-none-any.whl", sha, into)
    layout = Layout(tmp_path / "opt")
    for version in ("1.0", "1.1"):
        (layout.versions / version).mkdir(parents=True)
        layout.switch(layout.versions / version)
        assert layout.running() == (layout.versions / version).resolve()
        assert os.readlink(layout.current) == f"versions/{version}"


def test_prune_keeps_the_versions_whose_libraries_are_shared(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "opt")
    sites = {}
    for version in ("1.0", "1.1", "1.2", "1.3"):
        sites[version] = layout.versions / version / "lib" / "python3.11" / "site-packages"
        sites[version].mkdir(parents=True)
    (sites["1.2"] / SHARED_PTH).write_text(f"{sites['1.0']}\n")  # 1.2 installed with deps: shared from 1.0
    (sites["1.3"] / SHARED_PTH).write_text(f"{sites['1.2']}\n{sites['1.0']}\n")
    removed = prune(layout, {layout.versions / "1.3", layout.versions / "1.2"})
    assert [p.name for p in removed] == ["1.1"]
    assert sorted(p.name for p in layout.versions.iterdir()) == ["1.0", "1.2", "1.3"]
