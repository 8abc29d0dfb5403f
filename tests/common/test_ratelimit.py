"""The one log limiter: the first lines of each kind show at once, the rest are counted, and the count is said."""

from __future__ import annotations

import logging

import pytest

from edugate.common.ratelimit import LimitedLog, LogLimiter


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_passes_then_lines_are_held_and_counted_per_key() -> None:
    clock = _Clock()
    limiter = LogLimiter(burst=2, window_s=10, clock=clock)
    assert [limiter.allow("a"), limiter.allow("a"), limiter.allow("a"), limiter.allow("a")] == [0, 0, None, None]
    assert limiter.allow("b") == 0  # another kind has its own budget
    assert limiter.held("a") == 2
    clock.now = 10.0
    assert limiter.allow("a") == 2  # the first line after the window says what was held back
    assert limiter.held("a") == 0


def test_limited_log_says_how_many_lines_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.limited")
    clock = _Clock()
    limited = LimitedLog(logger, burst=1, window_s=3600, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        assert limited.warning("bad message from %s", "gw-1") is True
        assert [limited.warning("bad message from %s", "gw-1") for _ in range(5)] == [False] * 5
        clock.now = 3600.0
        assert limited.warning("bad message from %s", "gw-2") is True
    assert [r.getMessage() for r in caplog.records] == [
        "bad message from gw-1", "bad message from gw-2 (5 more like it were not logged)"]


def test_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="burst"):
        LogLimiter(burst=0)
