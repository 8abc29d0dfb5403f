"""Signed firmware updates, end to end over a pty: the gateway's checks, the node's checks, A/B slots, and
transfers interrupted at random points (node reset, gateway gone, cable pulled)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edugate.firmware_bridge.host.session import KitSession
from edugate.firmware_bridge.protocol import FwBegin, FwChunk, FwCommit, FwStatus, Nack, Reason
from edugate.firmware_bridge.update.manifest import Manifest, SignedManifest, sign_image
from edugate.firmware_bridge.update.sender import UpdateResult, UpdateSettings, send_update
from edugate.simulators.kit_node import KitNodeProcess
from tests.firmware_bridge.conftest import gateway_end

pytestmark = pytest.mark.timeout(30)

KEY = Ed25519PrivateKey.generate()
IMAGE = random.Random(17).randbytes(12_000)
FAST = UpdateSettings(chunk_size=256, answer_s=1.0, retries=4, reboot_s=5.0)


@pytest.fixture
def pubkey_file(tmp_path: Path) -> Path:
    path = tmp_path / "central-fw.pub.pem"
    path.write_bytes(KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def _boot_state(kit: KitNodeProcess) -> dict[str, object]:
    return json.loads((kit.state_dir / "boot.json").read_text())


def _kit(make_kit: Callable[..., KitNodeProcess], pubkey: Path, **kw: object) -> KitNodeProcess:
    kit = make_kit(board="microbit-v2", firmware="1.0.0", pubkey=pubkey, interval_ms=5000, **kw)
    kit.start()
    return kit


async def _update(session: KitSession, signed: SignedManifest, image: bytes = IMAGE,
                  progress: Callable[[int, int], None] | None = None) -> UpdateResult:
    return await send_update(session, signed, image, KEY.public_key(), FAST, progress)


# ---------------------------------------------------------------- the happy path, and refusals


async def test_update_switches_slot_after_the_whole_image_verifies(make_kit: Callable[..., KitNodeProcess],
                                                                   pubkey_file: Path) -> None:
    kit = _kit(make_kit, pubkey_file)
    async with gateway_end(kit) as (session, _):
        assert (await session.handshake(5)).firmware == "1.0.0"
        result = await _update(session, sign_image(IMAGE, "microbit-v2", "1.1.0", KEY))
        assert (result.reason, result.version, result.resumed_from) == ("ok", "1.1.0", 0), result.detail
        assert result.bytes_sent == len(IMAGE)
        assert session.hello is not None and (session.hello.firmware, session.hello.slot) == ("1.1.0", 1)
    assert _boot_state(kit) == {"active": 1, "versions": ["1.0.0", "1.1.0"]}
    assert (kit.state_dir / "slot1.bin").read_bytes() == IMAGE
    assert not (kit.state_dir / "pending.json").exists()
    kit.kill()
    kit.start()  # after a reset it boots the new slot
    async with gateway_end(kit) as (session, _):
        assert (await session.handshake(5)).firmware == "1.1.0"


@pytest.mark.parametrize(("case", "reason"), [
    ("tampered image", "bad-hash"), ("tampered manifest", "bad-signature"), ("other key", "bad-signature"),
    ("truncated", "truncated"), ("wrong board", "wrong-board"), ("downgrade", "downgrade"),
    ("same version", "downgrade")])
async def test_gateway_refuses_before_sending_anything(make_kit: Callable[..., KitNodeProcess], pubkey_file: Path,
                                                       case: str, reason: str) -> None:
    kit = _kit(make_kit, pubkey_file, extra=["--firmware", "1.2.0"])
    image, signed = IMAGE, sign_image(IMAGE, "microbit-v2", "1.3.0", KEY)
    if case == "tampered image":
        image = IMAGE[:100] + bytes((IMAGE[100] ^ 1,)) + IMAGE[101:]
    elif case == "tampered manifest":
        signed = SignedManifest(signed.manifest_bytes.replace(b"1.3.0", b"9.3.0"), signed.signature)
    elif case == "other key":
        signed = sign_image(IMAGE, "microbit-v2", "1.3.0", Ed25519PrivateKey.generate())
    elif case == "truncated":
        image = IMAGE[:-1]
    elif case == "wrong board":
        signed = sign_image(IMAGE, "esp32", "1.3.0", KEY)
    elif case == "downgrade":
        signed = sign_image(IMAGE, "microbit-v2", "1.1.9", KEY)
    elif case == "same version":
        signed = sign_image(IMAGE, "microbit-v2", "1.2.0", KEY)
    async with gateway_end(kit) as (session, _):
        await session.handshake(5)
        frames_out = session._seq
        result = await _update(session, signed, image)
        assert (result.reason, result.version) == (reason, "1.2.0"), result.detail
        assert session._seq == frames_out, "nothing may be sent for a refused update"
    assert not (kit.state_dir / "pending.json").exists()


async def test_downgrade_allowed_by_the_signed_manifest(make_kit: Callable[..., KitNodeProcess],
                                                        pubkey_file: Path) -> None:
    kit = _kit(make_kit, pubkey_file, extra=["--firmware", "2.0.0"])
    async with gateway_end(kit) as (session, _):
        await session.handshake(5)
        result = await _update(session, sign_image(IMAGE, "microbit-v2", "1.9.0", KEY, allow_downgrade=True))
        assert (result.reason, result.version) == ("ok", "1.9.0"), result.detail


async def test_node_checks_again_without_trusting_the_gateway(make_kit: Callable[..., KitNodeProcess],
                                                              pubkey_file: Path) -> None:
    """A gateway that skips its checks (or a forged frame): the node refuses by itself."""
    kit = _kit(make_kit, pubkey_file)
    good = sign_image(IMAGE, "microbit-v2", "1.1.0", KEY)
    async with gateway_end(kit) as (session, _):
        await session.handshake(5)

        async def begin(signed: SignedManifest) -> Nack | FwStatus:
            answer = await session.request(FwBegin(signed.manifest_bytes, signed.signature), 5)
            assert isinstance(answer, Nack | FwStatus)
            return answer

        forged = SignedManifest(good.manifest_bytes.replace(b"1.1.0", b"1.1.1"), good.signature)
        assert (await begin(forged)).reason == Reason.FW_BAD_SIGNATURE  # type: ignore[union-attr]
        assert (await begin(sign_image(IMAGE, "esp32", "1.1.0", KEY))).reason == Reason.FW_WRONG_BOARD  # type: ignore[union-attr]
        assert (await begin(sign_image(IMAGE, "microbit-v2", "0.9.0", KEY))).reason == Reason.FW_DOWNGRADE  # type: ignore[union-attr]

        # a tampered image sent under a good manifest: refused at commit, the node stays on 1.0.0
        tampered = bytes(b ^ 0xFF if i == 5000 else b for i, b in enumerate(IMAGE))
        assert await begin(good) == FwStatus(session._seq - 1, 0)
        for offset in range(0, len(tampered), 512):
            answer = await session.request(FwChunk(offset, tampered[offset:offset + 512]), 5)
            assert answer == FwStatus(session._seq - 1, min(offset + 512, len(IMAGE)))
        answer = await session.request(FwCommit(bytes.fromhex(good.manifest.sha256)), 5)
        assert isinstance(answer, Nack) and answer.reason == Reason.FW_BAD_HASH
        assert "discarded" in answer.detail
    assert _boot_state(kit) == {"active": 0, "versions": ["1.0.0", ""]}
    assert not (kit.state_dir / "pending.json").exists()


def test_manifest_round_trips_and_rejects_nonsense() -> None:
    signed = sign_image(b"abc", "esp32", "1.0.0", KEY)
    assert SignedManifest.from_json(signed.to_json()) == signed
    assert signed.manifest == Manifest("esp32", "1.0.0", 3, hashlib.sha256(b"abc").hexdigest(), False)
    with pytest.raises(Exception, match="not dotted numbers"):
        sign_image(b"abc", "esp32", "v1", KEY)


# ---------------------------------------------------------------- interrupted anywhere


async def _interrupt_at(session: KitSession, signed: SignedManifest, at: int, interrupt: Callable[[], None]) -> None:
    """Run an update and call ``interrupt`` once the node has confirmed ``at`` bytes; stop the update there."""
    reached = asyncio.Event()

    def progress(offset: int, _size: int) -> None:
        if offset >= at:
            reached.set()

    task = asyncio.create_task(_update(session, signed, progress=progress))
    done = asyncio.create_task(reached.wait())
    await asyncio.wait({task, done}, return_when=asyncio.FIRST_COMPLETED)
    interrupt()
    task.cancel()
    done.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("seed", range(6))
async def test_update_interrupted_at_a_random_point_resumes_or_restarts_cleanly(
        make_kit: Callable[..., KitNodeProcess], pubkey_file: Path, seed: int) -> None:
    rng = random.Random(seed)
    how = ["node reset", "gateway gone", "cable pulled"][seed % 3]
    at = rng.randrange(1, len(IMAGE))
    kit = _kit(make_kit, pubkey_file)
    signed = sign_image(IMAGE, "microbit-v2", "1.1.0", KEY)
    async with gateway_end(kit) as (session, _):
        await session.handshake(5)
        if how == "node reset":
            await _interrupt_at(session, signed, at, kit.kill)
        elif how == "gateway gone":
            await _interrupt_at(session, signed, at, lambda: None)
        else:
            await _interrupt_at(session, signed, at, kit.unplug)
    if seed == 5:  # the kept copy was damaged too (power cut while writing): it must restart from 0
        with (kit.state_dir / "slot1.bin").open("r+b") as f:
            f.write(b"\x00" * 64)

    kit.start()
    async with gateway_end(kit) as (session, _):
        # the node answers after it has handled what was already on the line (a chunk in flight)
        assert (await session.handshake(5)).firmware == "1.0.0"
        assert _boot_state(kit)["active"] == 0, "an interrupted update must leave the node on its old image"
        kept = (kit.state_dir / "slot1.bin").stat().st_size
        assert at <= kept <= len(IMAGE)
        result = await _update(session, signed)
        assert (result.reason, result.version) == ("ok", "1.1.0"), (how, at, result.detail)
        assert result.resumed_from == kept, "the next attempt continues where the node's copy ends"
        if seed == 5:
            assert result.bytes_sent >= len(IMAGE), "a damaged copy is discarded and sent again from 0"
    assert _boot_state(kit) == {"active": 1, "versions": ["1.0.0", "1.1.0"]}
    assert (kit.state_dir / "slot1.bin").read_bytes() == IMAGE
