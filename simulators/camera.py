"""A simulated camera: a video file the ``camera`` driver reads as if it were a live camera, so the demo and the
tests run without one.

Two kinds of scene, written losslessly (FFV1 in Matroska) so that a test knows the exact bytes of every frame
the driver decodes:

- ``pedestrians``: frames of Debian's ``opencv-doc`` pedestrian video (``vtest.avi``, real people walking),
  resized to 640 × 480;
- ``empty``: a rendered empty classroom (wall, whiteboard, rows of desks), for a room nobody is in.

This file is the camera's side of the lens (what a real camera would see), made only as the simulator's input;
the gateway reads frames and never writes one. Each frame carries a *marker*: a 32 × 32 block of seeded random
pixels in its top-left corner. The privacy test looks for the marker's bytes (and the frame's other bytes) on disk,
in MQTT traffic and in the store.

    python -m edugate.simulators.camera /tmp/camera.mkv --scene pedestrians --frames 200
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
SIZE = (640, 480)
MARKER = 32


def marker(seed: int = 14) -> np.ndarray:
    """The 32 × 32 × 3 block of random pixels stamped on every frame (the same for one seed)."""
    return np.random.default_rng(seed).integers(0, 256, (MARKER, MARKER, 3), dtype=np.uint8)


def classroom(size: tuple[int, int] = SIZE) -> np.ndarray:
    """An empty classroom seen from the front corner: wall, floor, whiteboard and three rows of desks."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    img[: h * 45 // 100] = (200, 215, 225)  # wall (BGR)
    img[h * 45 // 100:] = (90, 110, 140)  # floor
    cv2.rectangle(img, (w // 5, h // 12), (w * 4 // 5, h * 3 // 10), (245, 245, 245), -1)  # whiteboard
    cv2.rectangle(img, (w // 5, h // 12), (w * 4 // 5, h * 3 // 10), (60, 60, 60), 2)
    for row, y in enumerate((h * 55 // 100, h * 70 // 100, h * 86 // 100)):
        depth = 0.7 + 0.15 * row
        for col in range(4):
            x0 = int(w * (0.08 + 0.23 * col))
            cv2.rectangle(img, (x0, y), (x0 + int(w * 0.17 * depth), y + int(h * 0.05 * depth)), (40, 80, 130), -1)
    return img


def pedestrian_frames(path: Path = VTEST, size: tuple[int, int] = SIZE, start: int = 0) -> Iterator[np.ndarray]:
    """Frames of the Debian pedestrian video from frame ``start``, resized; raises FileNotFoundError without
    ``opencv-doc``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: install Debian's opencv-doc package")
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    finally:
        capture.release()


def scene_frames(scene: str, frames: int, size: tuple[int, int] = SIZE, start: int = 0) -> Iterator[np.ndarray]:
    if scene == "empty":
        room = classroom(size)
        for _ in range(frames):
            yield room.copy()
    elif scene == "pedestrians":
        source = pedestrian_frames(size=size, start=start)
        for _, frame in zip(range(frames), source, strict=False):
            yield frame
    else:
        raise ValueError(f"unknown scene {scene!r} (known: pedestrians, empty)")


def write_video(path: Path, scene: str = "pedestrians", frames: int = 100, fps: float = 10.0,
                seed: int = 14, start: int = 0) -> int:
    """Write ``frames`` frames of ``scene`` (from its frame ``start``) to ``path`` (FFV1, lossless), each with the
    marker of ``seed``; returns how many were written."""
    stamp = marker(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), fps, SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write FFV1 video here")
    written = 0
    try:
        for frame in scene_frames(scene, frames, start=start):
            frame[:MARKER, :MARKER] = stamp
            writer.write(frame)
            written += 1
    finally:
        writer.release()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic camera video for the camera driver.")
    parser.add_argument("path", type=Path)
    parser.add_argument("--scene", choices=("pedestrians", "empty"), default="pedestrians")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--start", type=int, default=0, help="first frame of the scene")
    parser.add_argument("--seed", type=int, default=14, help="seed of the marker block")
    args = parser.parse_args()
    n = write_video(args.path, args.scene, args.frames, seed=args.seed, start=args.start)
    print(f"{args.path}: {n} frames of {args.scene}, {SIZE[0]}x{SIZE[1]}, FFV1")


if __name__ == "__main__":
    main()
