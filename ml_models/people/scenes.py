"""Rendered classroom scenes: real people cut out of Debian's pedestrian video, pasted into a drawn classroom.

The pedestrian video's camera does not move, so the median of its frames is the empty scene; a person is where a
frame differs from it. :data:`SILHOUETTES` are 35 such cut-outs, each checked by eye to be exactly one whole
person (merged pairs and people cut by the lamp post or the frame's edge were left out). A scene pastes 0-6 of
them (0-8 small ones), at known places, into the simulator's empty classroom
(``edugate.simulators.camera.classroom``), so its count is known exactly. Three kinds, 12 scenes each:

- ``standing``: people 170-260 px tall standing in front of the desks, fully visible;
- ``seated``: the same sizes, with a desk drawn over the lower 45 % of each one (as pupils sitting at desks);
- ``small``: people 45-70 px tall at the back of the room.

What this does not show: real classroom light, real seated postures (these are walking people with their legs
hidden), children, uniforms, crowding. The cut-outs have hard edges, which a detector may find easier or harder
than real pixels. The figures are a check of size and occlusion effects, not of classroom accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import cv2
import numpy as np

from edugate.ml_models.people.frames import read_frames
from edugate.simulators.camera import classroom

SIZE = (640, 480)
# (frame of vtest.avi, x, y, w, h) of one person each, found by the background difference below, checked by eye
SILHOUETTES: tuple[tuple[int, int, int, int, int], ...] = (
    (0, 501, 157, 28, 77), (0, 254, 220, 30, 89), (0, 639, 241, 46, 84), (200, 488, 146, 29, 78),
    (200, 85, 154, 26, 61), (200, 221, 192, 29, 77), (200, 705, 253, 37, 102), (200, 617, 265, 34, 105),
    (280, 116, 147, 24, 69), (280, 357, 165, 31, 68), (280, 405, 242, 32, 79),
    (320, 302, 167, 38, 84), (320, 204, 174, 40, 68), (320, 258, 194, 25, 86), (400, 590, 140, 27, 64),
    (400, 274, 201, 28, 86), (400, 686, 301, 58, 111), (440, 495, 169, 27, 71), (440, 299, 202, 22, 90),
    (440, 618, 256, 29, 98), (560, 380, 156, 28, 80), (560, 584, 159, 31, 76), (560, 643, 305, 28, 108),
    (600, 190, 144, 20, 70), (600, 569, 200, 28, 88), (600, 670, 209, 42, 88), (600, 454, 302, 52, 117),
    (600, 642, 305, 28, 108), (600, 283, 432, 48, 144), (640, 118, 145, 22, 69), (640, 363, 160, 31, 72),
    (640, 174, 162, 19, 68), (640, 642, 211, 38, 94), (640, 505, 248, 32, 92), (640, 336, 385, 52, 139),
)
KINDS = ("standing", "seated", "small")
PER_KIND = 12
DIFF = 35  # a pixel differing from the empty scene by more than this (in any channel) belongs to a person


@cache
def _background() -> np.ndarray:
    frames = [f for _, f in read_frames(list(range(0, 795, 8)))]
    return np.median(np.stack(frames), axis=0).astype(np.uint8)


@cache
def cutouts() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(BGR crop, mask) of every silhouette."""
    background = _background()
    frames = dict(read_frames(sorted({s[0] for s in SILHOUETTES})))
    out = []
    for index, x, y, w, h in SILHOUETTES:
        frame = frames[index]
        mask = (cv2.absdiff(frame, background).max(axis=2) > DIFF).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 5), np.uint8))
        out.append((frame[y:y + h, x:x + w].copy(), mask[y:y + h, x:x + w].copy()))
    return tuple(out)


def _paste(scene: np.ndarray, crop: np.ndarray, mask: np.ndarray, feet_x: int, feet_y: int,
           height: int) -> tuple[int, int, int, int]:
    scale = height / crop.shape[0]
    w = max(1, round(crop.shape[1] * scale))
    img = cv2.resize(crop, (w, height), interpolation=cv2.INTER_LINEAR)
    m = cv2.resize(mask, (w, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    x0, y0 = min(max(0, feet_x - w // 2), scene.shape[1] - w), feet_y - height
    region = scene[y0:y0 + height, x0:x0 + w]
    region[m] = img[m]
    return x0, y0, w, height


def render(kind: str, seed: int) -> tuple[np.ndarray, int]:
    """One scene of ``kind`` and how many people are in it."""
    rng = np.random.default_rng(seed)
    scene = classroom(SIZE)
    columns = 8 if kind == "small" else 6
    people = int(rng.integers(0, columns + 1))
    pieces = cutouts()
    slots = rng.permutation(columns)[:people]  # columns across the room, one person each: they rarely overlap
    width = SIZE[0] // columns
    placed = []
    for slot in sorted(slots):
        crop, mask = pieces[int(rng.integers(len(pieces)))]
        feet_x = int(width // 2 + slot * width + rng.integers(-8, 9))
        if kind == "small":
            height = int(rng.integers(45, 71))
            feet_y = int(rng.integers(215, 240))
        else:
            height = int(rng.integers(170, 261))
            feet_y = int(rng.integers(max(height + 5, 330), 476))
        placed.append(_paste(scene, crop, mask, feet_x, feet_y, height))
    if kind == "seated":
        for x0, y0, w, h in placed:  # a desk in front of each: its top at 55 % of the person's height
            top = y0 + int(0.55 * h)
            cv2.rectangle(scene, (x0 - 12, top), (x0 + w + 12, min(SIZE[1] - 1, y0 + h + 4)), (40, 80, 130), -1)
            cv2.rectangle(scene, (x0 - 12, top), (x0 + w + 12, top + 6), (30, 60, 100), -1)
    return scene, people


def cases() -> Iterator[tuple[str, np.ndarray, int, dict[str, int]]]:
    """(scene id, frame, people, tags) for every scene: 12 of each kind, fixed seeds."""
    for k, kind in enumerate(KINDS):
        for i in range(PER_KIND):
            frame, people = render(kind, 1000 * (k + 1) + i)
            tags = {"small": people if kind == "small" else 0, "seated": people if kind == "seated" else 0}
            yield f"{kind}-{i}", frame, people, tags
