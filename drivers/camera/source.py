"""Where frames come from: a V4L2 device (``/dev/video0``), an RTSP stream (``rtsp://…``, e.g. a school's existing
IP camera) or a video file (a recording, or the simulator's synthetic video), through OpenCV.

Every call blocks (OpenCV decodes on the calling thread): the driver calls :meth:`FrameSource.read` on its worker
thread, never on the event loop. A frame lives only in the caller's local variables: nothing here keeps, writes
or logs one. Stream addresses may hold a password: :func:`redacted` is what may be logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LIVE_DROP = 4  # frames thrown away before each sample of a live source: OpenCV's buffer holds stale ones


class SourceError(Exception):
    """The source cannot be opened or read; the message names it (password removed)."""


def redacted(source: str) -> str:
    """``rtsp://user:secret@host/x`` -> ``rtsp://user:***@host/x`` (the form logs and errors show)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", source, flags=re.I)


def kind_of(source: str) -> str:
    """``v4l2``, ``stream`` or ``file``."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.I):
        return "stream"
    if source.startswith("/dev/video") or source.startswith("/dev/v4l/"):
        return "v4l2"
    return "file"


@dataclass
class FrameSource:
    """One opened source. For a file, each :meth:`read` moves ``file_step`` frames on (as if a live camera had
    run ``sample_every_s`` seconds) and starts again at the end when ``loop`` is set."""

    source: str
    width: int = 640
    height: int = 480
    file_step: int = 1
    loop: bool = True

    def __post_init__(self) -> None:
        self.kind = kind_of(self.source)
        self.where = redacted(self.source)
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        self.close()
        if self.kind == "file" and not Path(self.source).is_file():
            raise SourceError("no such video file")
        backend = {"v4l2": cv2.CAP_V4L2, "stream": cv2.CAP_FFMPEG}.get(self.kind, cv2.CAP_ANY)
        capture = cv2.VideoCapture(self.source, backend)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"OpenCV cannot open it ({self.kind})")
        if self.kind == "v4l2":
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.kind != "file":
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._capture = capture

    @property
    def is_open(self) -> bool:
        return self._capture is not None

    def read(self) -> np.ndarray:
        """The next frame to count (BGR uint8); raises :class:`SourceError` when the source gives none."""
        if self._capture is None:
            self.open()
        capture = self._capture
        assert capture is not None
        skip = self.file_step - 1 if self.kind == "file" else LIVE_DROP
        for _ in range(skip):
            if not capture.grab():
                break
        ok, frame = capture.read()
        if not ok and self.kind == "file" and self.loop:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = capture.read()
        if not ok or frame is None:
            self.close()
            ended = "the video ended" if self.kind == "file" else "no frame"
            raise SourceError(ended)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return frame

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
