"""The gateway's side of a firmware transfer: verify, then FW_BEGIN, FW_CHUNKs (stop-and-wait), FW_COMMIT.

The node answers every FW_BEGIN and FW_CHUNK with the offset it wants next, so a transfer resumes wherever
it broke: after a timeout, a node reset (a new HELLO), or a new attempt after the gateway itself died, the
sender sends FW_BEGIN again and continues from the node's offset. The node writes into its inactive slot
and switches only after FW_COMMIT verifies the whole image, so an interruption anywhere leaves it on its
old image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edugate.firmware_bridge.host.session import KitRefused, KitSession, NoAnswer
from edugate.firmware_bridge.protocol import MAX_PAYLOAD, Ack, FwBegin, FwChunk, FwCommit, FwStatus, Nack, Reason
from edugate.firmware_bridge.update.manifest import SignedManifest, UpdateRefused, check_update

log = logging.getLogger(__name__)

_NODE_REASONS = {
    Reason.FW_BAD_MANIFEST: "bad-manifest", Reason.FW_BAD_SIGNATURE: "bad-signature",
    Reason.FW_WRONG_BOARD: "wrong-board", Reason.FW_DOWNGRADE: "downgrade", Reason.FW_TOO_LARGE: "too-large",
    Reason.FW_BAD_HASH: "bad-hash", Reason.FW_IO_ERROR: "node-io-error",
}


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """``reason`` is ``ok`` or a short code (``bad-signature``, ``wrong-board``, ``no-answer``...) for cmd-result."""

    reason: str
    detail: str
    version: str | None = None
    """The version the node runs afterwards."""
    resumed_from: int = 0
    """The offset the node asked for at the first FW_BEGIN (more than 0: an earlier transfer was resumed)."""
    bytes_sent: int = 0

    @property
    def ok(self) -> bool:
        return self.reason == "ok"


@dataclass
class UpdateSettings:
    chunk_size: int = 256
    answer_s: float = 2.0
    retries: int = 5
    """Consecutive answers missing (or node restarts) before the sender gives up."""
    reboot_s: float = 10.0
    """How long the node may take to introduce itself with the new version after FW_COMMIT."""


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


async def send_update(session: KitSession, signed: SignedManifest, image: bytes, key: Ed25519PublicKey,
                      settings: UpdateSettings | None = None,
                      progress: Callable[[int, int], None] | None = None) -> UpdateResult:
    """Update the node on ``session`` (its HELLO already received). Never raises for a refusal or a lost node:
    the result says what happened. ``progress(offset, size)`` is called as the node confirms bytes."""
    cfg = settings or UpdateSettings()
    hello = session.hello
    if hello is None:
        return UpdateResult("no-node", "no kit has introduced itself on this line")
    try:
        manifest = check_update(signed, image, key, board=hello.board, running=hello.firmware)
    except UpdateRefused as exc:
        log.warning("firmware update refused before sending: %s", exc)
        return UpdateResult(exc.reason, str(exc), hello.firmware)
    chunk = max(16, min(cfg.chunk_size, hello.max_payload - 4, MAX_PAYLOAD - 4))
    sender = _Transfer(session, signed, image, cfg, chunk, progress)
    try:
        await sender.run()
    except _Failed as exc:
        current = session.hello.firmware if session.hello else None
        return UpdateResult(exc.reason, str(exc), current, sender.resumed_from or 0, sender.sent)
    new = session.hello
    assert new is not None
    if new.firmware != manifest.version:
        return UpdateResult("not-switched", f"the node came back with {new.firmware}, not {manifest.version}",
                            new.firmware, sender.resumed_from or 0, sender.sent)
    return UpdateResult("ok", f"{hello.firmware} -> {new.firmware} (slot {new.slot})", new.firmware,
                        sender.resumed_from or 0, sender.sent)


class _Transfer:
    def __init__(self, session: KitSession, signed: SignedManifest, image: bytes, cfg: UpdateSettings,
                 chunk: int, progress: Callable[[int, int], None] | None) -> None:
        self.session = session
        self.signed = signed
        self.image = image
        self.cfg = cfg
        self.chunk = chunk
        self.progress = progress
        self.resumed_from: int | None = None
        self.sent = 0
        self.failures = 0
        self.restarted_after_bad_hash = False

    def _trouble(self, why: str) -> None:
        self.failures += 1
        log.info("firmware transfer: %s (%d of %d tries)", why, self.failures, self.cfg.retries)
        if self.failures > self.cfg.retries:
            raise _Failed("no-answer", f"gave up after {self.cfg.retries} tries: {why}")

    async def _ask(self, message: FwBegin | FwChunk | FwCommit) -> Ack | Nack | FwStatus | None:
        try:
            return await self.session.request(message, self.cfg.answer_s)
        except NoAnswer as exc:
            self._trouble(str(exc))
        except ConnectionResetError as exc:
            self._trouble(str(exc))
        except OSError as exc:  # the port is gone (unplugged): nothing more can be sent on this line
            raise _Failed("disconnected", f"the kit's line was lost: {exc}") from None
        return None

    async def run(self) -> None:
        size = len(self.image)
        offset: int | None = None  # None: (re)send FW_BEGIN
        while True:
            if offset is None:
                answer = await self._ask(FwBegin(self.signed.manifest_bytes, self.signed.signature))
                if isinstance(answer, FwStatus):
                    offset = answer.next_offset
                    if self.resumed_from is None:
                        self.resumed_from = offset
                elif isinstance(answer, Nack):
                    if answer.reason != Reason.NOT_READY:
                        self._refused(answer)
                    self._trouble("the node is not ready (it has just restarted)")
                continue
            if offset >= size:
                before = self.session.hellos
                answer = await self._ask(FwCommit(bytes.fromhex(self.signed.manifest.sha256)))
                if isinstance(answer, Ack):
                    try:
                        await self.session.wait_hello(self.cfg.reboot_s, after=before)
                    except (NoAnswer, KitRefused) as exc:
                        raise _Failed("no-answer", f"the node switched slots but did not come back: {exc}") from None
                    return
                if isinstance(answer, Nack) and answer.reason == Reason.FW_BAD_HASH \
                        and not self.restarted_after_bad_hash:
                    # the node's copy was damaged (power cut while writing): it discarded it; start afresh
                    self.restarted_after_bad_hash = True
                    log.warning("firmware transfer: the node's copy did not verify; sending it again from 0")
                elif isinstance(answer, Nack):
                    if answer.reason not in (Reason.FW_NO_TRANSFER, Reason.NOT_READY, Reason.FW_INCOMPLETE):
                        self._refused(answer)
                    self._trouble(f"the node did not commit: {answer.reason_name}: {answer.detail}")
                offset = None
                continue
            data = self.image[offset:offset + self.chunk]
            answer = await self._ask(FwChunk(offset, data))
            if isinstance(answer, FwStatus):
                if answer.next_offset > offset:
                    self.failures = 0
                    self.sent += answer.next_offset - offset
                    if self.progress is not None:
                        self.progress(answer.next_offset, size)
                else:
                    self._trouble(f"no progress: the node asks for offset {answer.next_offset} after {offset}")
                offset = answer.next_offset
            elif isinstance(answer, Nack):
                if answer.reason not in (Reason.FW_NO_TRANSFER, Reason.NOT_READY):
                    self._refused(answer)
                self._trouble(f"the node forgot the transfer ({answer.reason_name}): it restarted")
                offset = None  # FW_BEGIN resumes it
            else:
                offset = None

    @staticmethod
    def _refused(answer: Nack) -> None:
        reason = _NODE_REASONS.get(answer.reason) if isinstance(answer.reason, Reason) else None
        raise _Failed(reason or answer.reason_name, f"the node refused: {answer.detail}")
