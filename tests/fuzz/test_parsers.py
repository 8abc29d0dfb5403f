"""Property tests: every parser that takes outside bytes or text returns, or raises its own clear error (with a
message), for any input: random bytes and mutations of valid messages. Targets: tests/fuzz/targets.py; the
longer campaign and its counts: scripts/fuzz.py, docs/security.md."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import Target, Unclear, inputs, targets

TARGETS = targets()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_parser_returns_or_says_what_is_wrong(name: str) -> None:
    target = TARGETS[name]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(inputs(target))
    def check(data: bytes) -> None:
        target.check(data)

    check()


def test_the_seeds_are_valid_messages() -> None:
    """The mutations start from messages each parser accepts (else they would not reach past its first check)."""
    for name, target in TARGETS.items():
        results = {target.check(seed) for seed in target.seeds}
        assert "ok" in results, f"{name}: no seed is accepted"


def test_the_harness_catches_an_unclear_rejection_and_a_crash() -> None:
    def silent(data: bytes) -> None:
        raise ValueError("")

    def crash(data: bytes) -> None:
        raise IndexError("index out of range")

    with pytest.raises(Unclear, match="without a message"):
        Target("silent", silent, (ValueError,)).check(b"x")
    with pytest.raises(IndexError):
        Target("crash", crash, (ValueError,)).check(b"x")
    assert Target("fine", lambda data: None, ()).check(b"x") == "ok"

