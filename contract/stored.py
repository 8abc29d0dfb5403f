"""Central's confirmation of what it stored: the payload of ``edu/v1/{school}/{gateway}/stored``.

Central's ingest publishes one after each store write that held records of the gateway (the time-series write
and the event-store commit both succeeded): ``{"telemetry": [[first, last], ...], "event": [[first, last], ...]}``,
inclusive ranges of sequence numbers, sorted, not overlapping, a kind left out when it has none. A range
``[a, b]`` of a kind says: every record of that kind with ``a <= seq <= b`` that the gateway sent has been stored
(or refused as invalid, which sending again cannot change). One MQTT message of the gateway holds the records of one
kind that were queued between its first and last seq, so the range of a message covers exactly its records; ranges
of consecutive messages are merged only where they touch. docs/mqtt-contract.md, *End-to-end acknowledgement*.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import orjson

KINDS: Final = ("telemetry", "event")
MAX_RANGES: Final = 10_000  # per kind and message; more is refused as malformed
MAX_SEQ: Final = 2**63 - 1

Range = tuple[int, int]


class InvalidConfirmation(ValueError):
    """A ``stored`` payload that is not the documented JSON object."""


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Sorted ranges, overlapping or touching ones (``b + 1 == a``) joined; gaps stay gaps."""
    out: list[Range] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


@dataclass
class Confirmation:
    """Seq ranges per kind (``telemetry``, ``event``)."""

    ranges: dict[str, list[Range]] = field(default_factory=dict)

    def add(self, kind: str, first: int, last: int) -> None:
        self.ranges.setdefault(kind, []).append((first, last))

    def __bool__(self) -> bool:
        return any(self.ranges.values())

    def encode(self) -> bytes:
        return orjson.dumps({kind: [list(r) for r in merge(rs)] for kind, rs in self.ranges.items() if rs})

    @property
    def records_upto(self) -> int:
        """The highest seq confirmed, of any kind (0: none)."""
        return max((last for rs in self.ranges.values() for _, last in rs), default=0)


def parse(payload: bytes) -> Confirmation:
    """Read a ``stored`` payload; raise :class:`InvalidConfirmation` saying what is wrong and where."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidConfirmation(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidConfirmation(f"expected a JSON object, got {type(doc).__name__}")
    unknown = set(doc) - set(KINDS)
    if unknown:
        raise InvalidConfirmation(f"unknown key(s) {sorted(unknown)}: only {', '.join(KINDS)}")
    out = Confirmation()
    for kind, ranges in doc.items():
        if not isinstance(ranges, list) or len(ranges) > MAX_RANGES:
            raise InvalidConfirmation(f"{kind!r}: expected a list of at most {MAX_RANGES} [first, last] ranges")
        for index, item in enumerate(ranges):
            if not (isinstance(item, list) and len(item) == 2 and all(type(v) is int for v in item)
                    and 0 <= item[0] <= item[1] <= MAX_SEQ):
                raise InvalidConfirmation(f"{kind!r}[{index}]: expected [first, last] with 0 <= first <= last, "
                                          f"got {str(item)[:60]}")
            out.add(kind, item[0], item[1])
    return out
