"""Firmware updates cut at a random *moment* (not only between chunks): while FW_BEGIN prepares the slot, while a
chunk is written, while FW_COMMIT hashes the slot and replaces the boot record. Whatever the moment, the node
boots either its old image (slot A, 1.0.0) or the whole new one (slot B, 1.1.0, byte for byte), never anything
else, and the next attempt finishes the update. Three cases in CI (one per kind of cut); the loop of many is
``@pytest.mark.slow``. The real gateway process killed with SIGKILL is in ``tests/drivers/kit/test_e2e.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edugate.firmware_bridge.update.manifest import sign_image
from edugate.firmware_bridge.update.sender import UpdateSettings, send_update
from edugate.simulators.kit_node import KitNodeProcess
from tests.firmware_bridge.conftest import gateway_end

KEY = Ed25519PrivateKey.generate()
IMAGE = random.Random(23).randbytes(16_000)
SIGNED = sign_image(IMAGE, "microbit-v2", "1.1.0", KEY)
FAST = UpdateSettings(chunk_size=256, answer_s=1.0, retries=4, reboot_s=5.0)
CUTS = ("node reset", "cable pulled", "gateway gone")


def _pubkey(tmp: Path) -> Path:
    path = tmp / "central-fw.pub.pem"
    path.write_bytes(KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


async def _cut_once(kit: KitNodeProcess, how: str, rng: random.Random) -> str:
    """Start an update and cut it at a random moment: while FW_BEGIN prepares the slot, after a random byte,
    or around the end, where FW_COMMIT hashes the slot and switches. Returns where it aimed."""
    where = rng.choice(("begin", "transfer", "end"))
    at = {"begin": 0, "transfer": rng.randrange(1, len(IMAGE)),
          "end": len(IMAGE) - rng.choice((0, 256, 1024))}[where]
    async with gateway_end(kit) as (session, _):
        await session.handshake(5)
        reached = asyncio.Event()

        def progress(offset: int, _size: int) -> None:
            if offset >= at:
                reached.set()

        if where == "begin":
            reached.set()
        update = asyncio.create_task(send_update(session, SIGNED, IMAGE, KEY.public_key(), FAST, progress))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reached.wait(), 5)
        await asyncio.wait({update}, timeout=rng.uniform(0, 0.005))
        if how == "node reset":
            kit.kill()
        elif how == "cable pulled":
            kit.unplug()
        update.cancel()  # and in every case the gateway's end stops ("gateway gone") and its port closes
        with contextlib.suppress(asyncio.CancelledError):
            await update
    return where


async def _check_then_finish(kit: KitNodeProcess) -> str:
    """After a cut: the node runs a whole image, old or new; the next attempt completes. Returns what it booted."""
    kit.start()
    async with gateway_end(kit) as (session, _):
        hello = await session.handshake(5)  # answered after whatever was still on the line (a FW_COMMIT)
        boot = json.loads((kit.state_dir / "boot.json").read_text())
        booted = hello.firmware
        if booted == "1.0.0":
            assert (boot["active"], hello.slot) == (0, 0), boot
            result = await send_update(session, SIGNED, IMAGE, KEY.public_key(), FAST)
            assert (result.reason, result.version) == ("ok", "1.1.0"), result.detail
        else:
            assert (booted, hello.slot, boot["active"]) == ("1.1.0", 1, 1), boot
    assert (kit.state_dir / "slot1.bin").read_bytes() == IMAGE
    assert json.loads((kit.state_dir / "boot.json").read_text()) == {"active": 1, "versions": ["1.0.0", "1.1.0"]}
    assert not (kit.state_dir / "pending.json").exists()
    return booted


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", CUTS)
async def test_an_update_cut_at_a_random_moment_leaves_a_whole_image_and_the_next_attempt_finishes(
        make_kit: Callable[..., KitNodeProcess], tmp_path: Path, how: str) -> None:
    rng = random.Random(f"{how}-{random.randrange(1 << 30)}")
    kit = make_kit(board="microbit-v2", firmware="1.0.0", pubkey=_pubkey(tmp_path), interval_ms=5000)
    kit.start()
    await _cut_once(kit, how, rng)
    await _check_then_finish(kit)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_many_updates_cut_at_random_moments(make_kit: Callable[..., KitNodeProcess], tmp_path: Path) -> None:
    rng = random.Random(1717)
    outcomes: dict[tuple[str, str], int] = {}
    for i in range(60):
        kit = make_kit(board="microbit-v2", firmware="1.0.0", pubkey=_pubkey(tmp_path), interval_ms=5000)
        kit.start()
        where = await _cut_once(kit, CUTS[i % 3], rng)
        key = (where, await _check_then_finish(kit))
        outcomes[key] = outcomes.get(key, 0) + 1
        kit.close()
    print("cut where, then booted:", sorted(outcomes.items()))
    # cuts before the switch boot the old image; around FW_COMMIT either (timing decides), never anything else
    assert {("begin", "1.0.0"), ("transfer", "1.0.0")} <= set(outcomes)
    assert any(where == "end" for where, _ in outcomes)
