"""Door and lab access decided on the gateway from the allow-list pushed by central."""

from __future__ import annotations

from pathlib import Path

import pytest

from edugate.gateway.runtime.clock import Clock
from edugate.gateway.runtime.outbox import Outbox
from edugate.gateway.runtime.pipeline import Pipeline
from edugate.gateway.services.access import AccessControl, AllowList, AllowListRejected
from tests.gateway.services.cards import ALICE, BOB, tap


async def test_door_decides_from_the_allowlist_and_persists_it(outbox: Outbox, tmp_path: Path) -> None:
    path = tmp_path / "allowlist.json"
    access = AccessControl(path, {"door-1": "lab-2", "door-2": "hall"})
    pipe = Pipeline(outbox, Clock("always"), {"door-1": "lab-2", "door-2": "hall"}, rules=[access.stage])
    # no allow-list yet: deny, and say why
    rec = await pipe.submit(tap("door-1", ALICE, "door"))
    assert rec["data"]["decision"] == "deny" and rec["data"]["reason"] == "no allow-list"
    access.replace(AllowList(version=3, lists={"lab-2": [ALICE], "door-2": [BOB]}))
    allowed = await pipe.submit(tap("door-1", ALICE, "door"))
    assert allowed["data"].items() >= {"decision": "allow", "allowlist_version": 3}.items()
    assert (await pipe.submit(tap("door-1", BOB, "door")))["data"]["decision"] == "deny"
    assert (await pipe.submit(tap("door-2", BOB, "door")))["data"]["decision"] == "allow"
    # attendance readers are not access-controlled
    assert "decision" not in (await pipe.submit(tap("door-2", BOB, "attendance")))["data"]
    # older or equal versions are refused; the file survives a restart
    with pytest.raises(AllowListRejected, match="not newer than 3"):
        access.replace(AllowList(version=3, lists={"*": [BOB]}))
    again = AccessControl(path, {"door-1": "lab-2"})
    assert again.allowlist is not None and again.allowlist.version == 3
    assert again.allowlist.allowed(ALICE, "door-1", "lab-2")
    assert access.status() == {"allowlist_version": 3, "allow": 2, "deny": 2}


def test_allowlist_only_takes_pseudonyms() -> None:
    with pytest.raises(ValueError, match=r"lists\.lab-2\.0"):
        AllowList.model_validate({"version": 1, "lists": {"lab-2": ["04A22B1C"]}})
