"""The labelled frame set: frames of the pedestrian video ``vtest.avi`` that Debian's ``opencv-doc`` package
ships (``apt-get install opencv-doc``), read again from that file (the frames are not kept in the repository:
only their hand-made labels, ``labels.json``). Nothing here writes a frame anywhere: to look at one again,
read it with :func:`read_frames` in a Python session (frames are never stored or sent, not even these public ones,
so that no code path to do so exists to be copied).

Each label is the number of people a person looking at the frame counts (anyone whose body is at least half
in the picture; people far away at the top of the picture included), with notes on the hard cases.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
LABELS = HERE / "labels.json"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


class FramesMissing(FileNotFoundError):
    """The Debian video is not installed."""


def labels() -> dict[str, object]:
    doc: dict[str, object] = json.loads(LABELS.read_text())
    return doc


def video_path() -> Path:
    if not VTEST.is_file():
        raise FramesMissing(f"{VTEST} is missing: install Debian's opencv-doc package (apt-get install opencv-doc)")
    return VTEST


def read_frames(indices: list[int], path: Path | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame) for each frame index of the video, in the order given."""
    path = path or video_path()
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FramesMissing(f"{path}: OpenCV cannot open it")
    try:
        for index in indices:
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            if not ok:
                raise FramesMissing(f"{path}: has no frame {index}")
            yield index, frame
    finally:
        capture.release()


def labelled_frames(part: str = "frames") -> Iterator[tuple[int, np.ndarray, int]]:
    """(index, frame, people counted by hand) for every labelled frame of ``part`` (``frames``: the test set;
    ``calibration``: the frames that choose the detector's threshold)."""
    counts = {int(k): int(v["people"]) for k, v in labels()[part].items()}  # type: ignore[attr-defined]  # labels.json: {part: {frame: {...}}}
    for index, frame in read_frames(sorted(counts)):
        yield index, frame, counts[index]


def video_sha256(path: Path | None = None) -> str:
    return hashlib.sha256((path or video_path()).read_bytes()).hexdigest()
