"""A camera that counts people (driver ``camera``): frames are read and counted in memory, only counts leave.

Every ``sample_every_s`` the driver's one worker thread reads a frame from the source (:mod:`.source`: V4L2,
RTSP or a video file) and hands it straight to the person detector (:mod:`.detector`); the frame never leaves
that thread's call: the event loop, the pipeline, the outbox, the logs and MQTT only ever see an int. Every
``interval_s`` the driver emits one reading ``{"people": median of the last `smoothing` counts, "frames": frames
counted since the last reading}``.

The detector runs off the event loop (card taps and the outbox keep their timing): one worker thread, one call at
a time, so at most one frame is in memory; a count slower than ``budget_ms`` is counted as an overrun
(``overruns``), samples missed because the detector is slower than ``sample_every_s`` as ``skipped_samples``.
OpenCV and onnxruntime come with the ``[ml]`` extra and are imported only when the driver runs, so a config
naming a camera is checked on a gateway without them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, urlsplit

from pydantic import Field, model_validator

from edugate.common.mqtt import read_password_file
from edugate.contract.records import Emit, Reading, Rejected
from edugate.drivers.base import Backoff, DeviceConfig, DeviceState, Driver, Outage

if TYPE_CHECKING:
    from edugate.drivers.camera.detector import Detector
    from edugate.drivers.camera.source import FrameSource

log = logging.getLogger(__name__)


class CameraConfig(DeviceConfig):
    """A camera whose frames are counted on the gateway; only the counts leave."""

    driver: Literal["camera"]
    source: str = Field(min_length=1, max_length=1024, description="Where frames come from: a V4L2 device "
                        "(/dev/video0), an RTSP stream (rtsp://user@camera/stream, its password in "
                        "password_file) or a video file.")
    password_file: Path | None = Field(None, description="File holding the stream's password (an RTSP camera's): "
                                       "read at start and put into the source's address in memory only; logs and "
                                       "the status page show it as ***. The source then names the user but no "
                                       "password (rtsp://user@camera/stream).")
    detector: Literal["ssdlite", "hog"] = Field("ssdlite", description="ssdlite: the SSDLite-MobileNetV2 person "
                                                 "detector (ONNX); hog: OpenCV's HOG people detector (baseline).")
    threshold: float | None = Field(None, gt=0, lt=1, description="Score from which a box counts as a person "
                                    "(ssdlite); default: the one its evaluation chose (the model's manifest).")
    sample_every_s: float = Field(1.0, ge=0.05, le=3600, description="Time between frames counted.")
    interval_s: float = Field(10.0, ge=0.1, le=86400, description="Time between readings (people, frames).")
    smoothing: int = Field(5, ge=1, le=100, description="A reading's people is the median of this many last "
                           "counts (one person hidden for a frame does not move it).")
    budget_ms: float = Field(40.0, gt=0, le=60000, description="A count slower than this is counted as an overrun.")
    width: int = Field(640, ge=64, le=4096, description="Frame width asked of a V4L2 camera.")
    height: int = Field(480, ge=48, le=4096, description="Frame height asked of a V4L2 camera.")
    loop: bool = Field(True, description="A video file starts again at its end (the simulator, a demo).")
    file_fps: float = Field(10.0, gt=0, le=240, description="Frames per second of a video file: with "
                            "sample_every_s it sets how many frames a sample moves on (recordings only).")
    model_manifest: Path | None = Field(None, description="A manifest.json naming another person detector "
                                        "(model people-ssdlite); default: the one shipped in EduGate.")
    reopen_max_s: float = Field(30.0, ge=0.1, le=3600, description="When the camera fails, try again after 0.5 s, "
                                "then twice as long each time, up to this many seconds apart.")


    @model_validator(mode="after")
    def _password_file_needs_a_stream_user(self) -> CameraConfig:
        if self.password_file is not None:
            parts = urlsplit(self.source)
            if not parts.scheme or "://" not in self.source:
                raise ValueError("password_file is for a network stream (rtsp://user@camera/stream); this source "
                                 "is a device or a file")
            if parts.password is not None:
                raise ValueError("the source holds a password and password_file is given: keep the password only "
                                 "in password_file (rtsp://user@camera/stream)")
            if not parts.username:
                raise ValueError("password_file is given but the source names no user: write it as "
                                 "rtsp://user@camera/stream")
        return self

    def stream_address(self) -> str:
        """The address to open: ``source`` with the password of ``password_file`` in it (URL-encoded). Only the
        worker thread holds it; what is shown is :func:`edugate.drivers.camera.source.redacted` of it.
        :class:`edugate.common.mqtt.PasswordFileError` (a ValueError) if the file cannot be used."""
        if self.password_file is None:
            return self.source
        password = read_password_file(self.password_file, f"{self.id}: password_file")
        scheme, _, rest = self.source.partition("://")
        user, _, host = rest.partition("@")
        return f"{scheme}://{user}:{quote(password, safe='')}@{host}"


class CameraDriver(Driver[CameraConfig]):
    """Emits ``people`` counts; see the module docstring."""

    config_model = CameraConfig

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"camera-{config.id}")
        self._source: FrameSource | None = None
        self.counts: deque[int] = deque(maxlen=config.smoothing)
        self.where = config.id

    def _open(self) -> tuple[Detector, FrameSource]:
        """On the worker thread: the detector and the source (OpenCV/onnxruntime are imported here)."""
        from edugate.drivers.camera.detector import make_detector
        from edugate.drivers.camera.source import FrameSource, redacted

        cfg = self.config
        self.where = f"{cfg.id} (camera {redacted(cfg.source)})"
        step = max(1, round(cfg.sample_every_s * cfg.file_fps))
        address = cfg.stream_address()  # with the password of password_file: held by the source, never shown
        self.where = f"{cfg.id} (camera {redacted(address)})"
        return make_detector(cfg.detector, cfg.threshold, cfg.model_manifest), FrameSource(
            address, cfg.width, cfg.height, file_step=step, loop=cfg.loop)

    @staticmethod
    def _count_one(source: FrameSource, detector: Detector) -> tuple[int, float]:
        """On the worker thread: read one frame and count the people in it. The frame goes no further."""
        frame = source.read()
        start = time.perf_counter()
        people = detector.count(frame)
        del frame
        return people, (time.perf_counter() - start) * 1000.0

    async def run(self, emit: Emit) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        outage = Outage(self.health, log, cfg.id)
        backoff = Backoff(first=min(0.5, cfg.reopen_max_s), cap=cfg.reopen_max_s)
        while True:  # the detector: a missing model or library is logged once and retried slowly
            try:
                detector, source = await loop.run_in_executor(self._worker, self._open)
                break
            except ImportError as exc:
                outage.down(f"the camera driver needs the [ml] extra (OpenCV, onnxruntime): {exc}")
            except Exception as exc:  # DetectorError and onnxruntime's own: say which and why, retry later
                outage.down(str(exc))
            await backoff.sleep()
        self._source = source
        outage.where = self.where
        log.info("%s: counting people with %s %s every %g s, a reading every %g s (frames stay in memory)",
                 self.where, detector.name, detector.version, cfg.sample_every_s, cfg.interval_s)
        backoff.reset()
        last_emit = next_sample = loop.time()
        frames = 0
        while True:
            try:
                people, ms = await loop.run_in_executor(self._worker, self._count_one, source, detector)
            except Exception as exc:  # SourceError, or a frame the detector refused
                if outage.down(str(exc), key=type(exc).__name__):
                    self.counts.clear()  # counts from before the outage say nothing about the room now
                await backoff.sleep()
                next_sample = loop.time()
                continue
            outage.up()
            backoff.reset()
            frames += 1
            self.counts.append(people)
            self.health.count("frames")
            if ms > cfg.budget_ms:
                self.health.count("overruns")
            if loop.time() - last_emit >= cfg.interval_s - 1e-3:
                last_emit = loop.time()
                await self._emit(emit, frames)
                frames = 0
            next_sample += cfg.sample_every_s
            late = loop.time() - next_sample
            if late > 0.1 * cfg.sample_every_s:  # the detector is slower than the sampling: skip, count
                skipped = math.ceil(late / cfg.sample_every_s)
                self.health.count("skipped_samples", skipped)
                next_sample += skipped * cfg.sample_every_s
            await asyncio.sleep(max(0.0, next_sample - loop.time()))

    async def _emit(self, emit: Emit, frames: int) -> None:
        people = int(statistics.median_low(self.counts))
        try:
            await emit(Reading(self.config.id, {"people": people, "frames": frames}, time.time()))
        except Rejected as exc:
            self.health.count("rejected")
            log.warning("%s: reading rejected: %s", self.where, exc)
            return
        self.health.ok()
        self.health.count("readings")

    async def close(self) -> None:
        if self._source is not None:
            source, self._source = self._source, None
            await asyncio.get_running_loop().run_in_executor(self._worker, source.close)
        self._worker.shutdown(wait=False, cancel_futures=True)
        self.health.state = DeviceState.STOPPED
