"""Camera frames never leave the gateway's process (issue 14, invariant 5): only counts do.

The real gateway runs in this process with a ``camera`` device reading the simulator's lossless video of real
pedestrians, against a real Mosquitto, an ingest worker, VictoriaMetrics and central's event log. While people
counts flow to the store, a client subscribed to ``#`` keeps every MQTT payload. Then everything is scanned for the
frames the driver decoded (the simulator's video is lossless, so these are the exact bytes it had in memory): the
marker block stamped on every frame, samples of every frame's rows and of the detector's 300 × 300 RGB input, raw,
in hex and in base64, and any JPEG/PNG image, in the gateway's log (every level), the ingest log, the outbox, the
gateway's and the broker's folders, the store's folder, VictoriaMetrics' export, the event log, the MQTT traffic,
and the gateway's temp folder (``TMPDIR`` and Python's ``tempfile`` pointed at a folder of the test's own). None
is found; the counts are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml

from edugate.gateway.config import load_config
from edugate.gateway.runtime.gateway import Gateway
from edugate.simulators.camera import MARKER, VTEST, marker, write_video
from tests.helpers import outbox_state, wait_async, wait_for
from tests.vmquery import export

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(not VTEST.is_file(), reason="Debian's opencv-doc is not installed (scripts/setup.sh)")]

SCHOOL, GATEWAY = "cam-school", "gw-cam"
# an image's header: JPEG's start-of-image with its first segment (JFIF header or quantisation tables,
# as OpenCV, libjpeg and FFmpeg write them), PNG's signature with its header chunk; long enough that compressed
# store files do not hold them by chance
IMAGE_MAGIC = {"JPEG (JFIF)": b"\xff\xd8\xff\xe0\x00\x10JFIF",
               "JPEG (tables)": b"\xff\xd8\xff\xdb\x00\x43\x00", "PNG": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}


def frames_of(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def canaries(frames: list[np.ndarray]) -> dict[str, bytes]:
    """Byte strings that are in a frame (or in the detector's input made from it) and nowhere else, each also in
    hex and base64 (at the three alignments a base64 encoder may start at)."""
    raw: dict[str, bytes] = {}
    for row in range(0, MARKER, 8):
        raw[f"marker row {row}"] = marker()[row].tobytes()
    for i, frame in enumerate(frames):
        for y in (100, 240, 400):
            raw[f"frame {i} row {y}"] = frame[y, 200:264].tobytes()
        rgb = cv2.cvtColor(cv2.resize(frame, (300, 300)), cv2.COLOR_BGR2RGB)
        raw[f"frame {i} detector input row 150"] = rgb[150, 100:164].tobytes()
    flat = [name for name, data in raw.items() if len(set(data)) < 16]
    assert len(flat) < len(raw) // 4, f"too many flat samples to be told from other bytes: {flat}"
    raw = {name: data for name, data in raw.items() if name not in flat}  # a flat run could be anywhere
    out = dict(raw)
    for name, data in raw.items():
        out[f"{name} (hex)"] = data.hex().encode()
        for shift in range(3):
            out[f"{name} (base64+{shift})"] = base64.b64encode(data[shift:shift + 45])[4:56]
    return out


class Everything:
    """A client subscribed to ``#`` keeping every payload that crosses the broker."""

    def __init__(self, port: int) -> None:
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="camera-privacy-all")
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_message = self._keep
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, "the '#' subscriber to connect")

    def _keep(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append(msg.topic.encode() + b" " + bytes(msg.payload))

    def people(self) -> list[int]:
        with self.lock:
            found = [json.loads(p.split(b" ", 1)[1]) for p in self.payloads if b"/telemetry" in p.split(b" ", 1)[0]]
        return [r["values"]["people"] for batch in found for r in batch if "people" in r.get("values", {})]

    def stop(self) -> bytes:
        self.client.loop_stop()
        self.client.disconnect()
        return b"\n".join(self.payloads)


@pytest.fixture
def gateway_log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gateway.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old_level)
    handler.close()


def files_under(folder: Path, skip: Path) -> Iterator[tuple[Path, bytes]]:
    """(path, bytes) of every regular file under ``folder`` but ``skip``."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and path != skip:
            yield path, path.read_bytes()


async def test_frames_never_leave_the_process_only_counts_do(
        mosquitto, victoria, ingest, gateway_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "gateway-tmp"  # the gateway's temp folder (Python's tempfile, and TMPDIR for OpenCV/FFmpeg)
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    video = tmp_path / "camera-source" / "pedestrians.mkv"
    video.parent.mkdir()
    write_video(video, "pedestrians", frames=8, start=200)
    frames = frames_of(video)
    assert len(frames) == 8 and np.array_equal(frames[0][:MARKER, :MARKER], marker())
    gw_dir = tmp_path / "gw"
    gw_dir.mkdir()
    path = gw_dir / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "school": SCHOOL, "gateway": GATEWAY,
        "uplink": {"port": mosquitto.port, "health_interval_s": 1},
        "storage": {"path": str(gw_dir / "outbox.sqlite")},
        "privacy": {"secret_file": str(gw_dir / "school.key")},
        "devices": [{"id": "room101-cam", "driver": "camera", "room": "room-101", "source": str(video),
                     "sample_every_s": 0.05, "interval_s": 0.2, "file_fps": 20, "smoothing": 3}],
    }, sort_keys=False))
    cfg = load_config(path)
    everything = Everything(mosquitto.port)
    gw = Gateway(cfg)
    running = asyncio.create_task(gw.run())
    try:
        camera = gw.drivers["room101-cam"]
        await wait_async(lambda: len(everything.people()) >= 3 and camera.health.counters.get("frames", 0) >= 8, 40,
                         "three people counts over MQTT, every frame of the video counted")
        await wait_async(lambda: sum(len(s["values"]) for s in export(victoria.url, '{__name__=~".*people.*"}')) >= 3,
                         20, "people counts in VictoriaMetrics", interval=0.2)
        await wait_async(lambda: not outbox_state(cfg.storage.path)[1], 20, "every record acknowledged")
        frames_counted = camera.health.counters["frames"]
    finally:
        gw.stop()
        await asyncio.wait_for(running, 30)
    traffic = everything.stop()
    assert frames_counted >= 8, "the driver must have decoded every frame of the video at least once"
    assert all(3 <= p <= 7 for p in everything.people()), everything.people()

    store = json.dumps(export(victoria.url, '{__name__=~".+"}')).encode()
    places: dict[str, bytes] = {"MQTT traffic ('#')": traffic, "VictoriaMetrics export": store}
    # logs, outbox, gateway state, broker, store, event log, and the gateway's temp folder
    for file, data in files_under(tmp_path, skip=video):
        places[str(file.relative_to(tmp_path))] = data
    assert b"people" in places["MQTT traffic ('#')"] and b"people" in store, "the scan must see the counts"
    assert any(name.startswith("gw/outbox.sqlite") for name in places), sorted(places)
    assert b"counting people" in places["gateway.log"], "the scan must see the gateway's log"

    marks = canaries(frames)
    for where, data in places.items():
        for name, needle in marks.items():
            assert needle not in data, f"frame bytes ({name}) found in {where}"
        for kind, magic in IMAGE_MAGIC.items():
            assert magic not in data, f"a {kind} image found in {where}"
