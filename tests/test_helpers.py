"""The one wait helper of the suite: returns what the condition returned, or fails naming what it waited for."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.helpers import wait_for, wait_for_async


def test_wait_for_returns_the_first_truthy_value() -> None:
    calls = itertools.count(1)
    assert wait_for(lambda: (n := next(calls)) >= 3 and n, 5, "the third call", interval=0.001) == 3


def test_wait_for_fails_naming_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.1 s waiting for the impossible \(last: \[\]\)"):
        wait_for(lambda: [], 0.1, "the impossible", interval=0.01)


async def test_wait_for_async_awaits_a_coroutine_condition_and_lets_the_loop_run() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)  # runs only if the wait yields to the loop

    async def ready() -> str | None:
        return "set" if done.is_set() else None

    assert await wait_for_async(ready, 5, "the event", interval=0.01) == "set"
    with pytest.raises(AssertionError, match="waiting for never"):
        await wait_for_async(lambda: 0, 0.05, "never", interval=0.01)
