"""The downlink: signed, expiring commands from central, checked and dispatched on the gateway.

A command arrives on ``edu/v1/{school}/{gateway}/cmd/{name}`` as a JSON envelope signed by central with
Ed25519 (contract: docs/mqtt-contract.md section 9; operators: docs/commands.md). :class:`Downlink`
checks it (signature, target, topic, lifetime, clock, replay, name, arguments), runs the handler that a
gateway component registered for the name in a :class:`CommandRegistry`, and returns the ``cmd-result``
message to publish. It knows nothing of MQTT clients: the uplink hands it (topic, payload) and publishes
what it returns.

The envelope, its canonical form, signing and key loading are the wire contract (``edugate.contract.commands``).
Central signs the canonical JSON of every envelope field except ``sig``::

    json.dumps(envelope_without_sig, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field, ValidationError

from edugate.common.ratelimit import LimitedLog
from edugate.contract import __version__
from edugate.contract import commands as contract_commands
from edugate.contract.commands import (  # noqa: F401 - the envelope's names, re-exported for the gateway's callers
    COMMAND_ID_PATTERN,
    ENVELOPE_FIELDS,
    MAX_PAYLOAD_BYTES,
    MAX_TIMESTAMP_MS,
    NAME_PATTERN,
    NAME_RE,
    CommandKeyError,
    CommandRejected,
    Envelope,
    Target,
    canonical_json,
    check_shape,
    check_signature,
    decode_envelope,
    fingerprint,
    sign_command,
    signed_bytes,
)
from edugate.contract.commands import format_errors as _format_errors
from edugate.contract.topics import TOPIC_ROOT
from edugate.drivers.base import CommandError
from edugate.gateway.downlink.config import DownlinkConfig, DownlinkSetupError
from edugate.gateway.downlink.registry import (  # noqa: F401 - re-exported: components import them from here too
    Command,
    CommandArgs,
    CommandRegistry,
    Handler,
    current_command_id,
)

log = logging.getLogger(__name__)



def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file, or :class:`DownlinkSetupError` saying what is wrong with it."""
    try:
        return contract_commands.load_public_key(path)
    except CommandKeyError as exc:
        raise DownlinkSetupError(str(exc)) from None


def load_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    """Fingerprint -> key for every file (the same key listed twice counts once)."""
    try:
        return contract_commands.load_public_keys(paths)
    except CommandKeyError as exc:
        raise DownlinkSetupError(str(exc)) from None


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Central's Ed25519 signing key (for tests and the demo); :class:`DownlinkSetupError` when unusable."""
    try:
        return contract_commands.load_private_key(path)
    except CommandKeyError as exc:
        raise DownlinkSetupError(str(exc)) from None


# ---------------------------------------------------------------- replay store


class ReplayStoreFull(Exception):
    """Too many live command ids to remember one more."""


class ReplayStore:
    """Ids of accepted commands, each kept until its ``expires_at``, in a small JSON file.

    The file is rewritten atomically (temporary file, fsync, rename) on every accepted command, so a
    command accepted once is refused as a replay after a restart or a power cut. It is bounded:
    ids are dropped once expired, and at most ``max_entries`` are kept. A store that cannot be read
    is set aside and replaced by an empty one whose ``floor_ms`` is the time of the reset: commands
    issued before it are refused, since they might have been seen.
    """

    VERSION = 1

    def __init__(self, path: Path, *, max_entries: int = 10_000, seen: Mapping[str, int] | None = None,
                 floor_ms: int = 0) -> None:
        self.path = path
        self.max_entries = max_entries
        self.seen: dict[str, int] = dict(seen or {})
        self.floor_ms = floor_ms
        self._lock = asyncio.Lock()

    @classmethod
    def open(cls, path: Path, *, max_entries: int = 10_000, now_ms: int) -> ReplayStore:
        """Load the store (a missing file is an empty store); set an unreadable one aside, see the class doc."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path, max_entries=max_entries)
        except OSError as exc:
            raise DownlinkSetupError(f"{path}: cannot read the command replay store: {exc.strerror}") from None
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("version") != cls.VERSION:
                raise ValueError("not a replay store document (version 1)")
            seen, floor = doc["seen"], doc["floor_ms"]
            if not isinstance(seen, dict) or not all(isinstance(v, int) for v in seen.values()) \
                    or not isinstance(floor, int):
                raise ValueError("bad 'seen' or 'floor_ms'")
        except (ValueError, KeyError) as exc:
            aside = path.with_name(path.name + ".corrupt")
            log.error("%s: the command replay store is unreadable (%s); set aside as %s. Starting empty: commands "
                      "issued before now (%s) are refused", path, exc, aside, _iso(now_ms))
            with contextlib.suppress(OSError):
                path.replace(aside)
            store = cls(path, max_entries=max_entries, floor_ms=now_ms)
            store.write(store.snapshot())
            return store
        return cls(path, max_entries=max_entries, seen=seen, floor_ms=floor)

    def __len__(self) -> int:
        return len(self.seen)

    def seen_until(self, cmd_id: str) -> int | None:
        """``expires_at`` of an accepted command with this id, or None."""
        return self.seen.get(cmd_id)

    def prune(self, now_ms: int) -> int:
        """Forget ids that expired before ``now_ms``; return how many."""
        expired = [k for k, exp in self.seen.items() if exp < now_ms]
        for k in expired:
            del self.seen[k]
        return len(expired)

    def add(self, cmd_id: str, expires_at: int, *, now_ms: int, clock_synced: bool) -> None:
        """Remember an id in memory (call :meth:`save` after). Expired ids are pruned first, but with an
        unsynchronised clock only when the store is full: a clock that is wrongly ahead would otherwise
        forget live ids."""
        if clock_synced or len(self.seen) >= self.max_entries:
            self.prune(now_ms)
        if len(self.seen) >= self.max_entries:
            raise ReplayStoreFull(f"{len(self.seen)} live command ids are remembered, the most this gateway keeps "
                                  "(downlink.replay_max_entries); wait for some to expire or use shorter lifetimes")
        self.seen[cmd_id] = expires_at

    def discard(self, cmd_id: str) -> None:
        self.seen.pop(cmd_id, None)

    def snapshot(self) -> bytes:
        return json.dumps({"version": self.VERSION, "floor_ms": self.floor_ms, "seen": self.seen},
                          separators=(",", ":")).encode()

    def write(self, data: bytes) -> None:
        """Replace the file atomically with ``data`` (blocking; see :meth:`save`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def save(self) -> None:
        """Persist the current ids off the event loop (an SD card fsync can take a while); in order."""
        async with self._lock:
            await asyncio.to_thread(self.write, self.snapshot())


# ---------------------------------------------------------------- registry

# ---------------------------------------------------------------- built-in commands


class ClockLike(Protocol):
    def now_ms(self) -> int: ...

    def synced(self) -> bool: ...


class SupportsCommand(Protocol):
    """What ``device.command`` needs of a device: :meth:`drivers.base.Driver.command`."""

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]: ...


DeviceLookup = Callable[[str], SupportsCommand | None]


class PingArgs(CommandArgs):
    """``ping`` takes no arguments."""


class DeviceCommandArgs(CommandArgs):
    device: str = Field(pattern=r"^[a-z0-9_][a-z0-9_-]{0,62}$", description="Device id on this gateway.")
    name: str = Field(min_length=1, max_length=64, description="The driver's command name.")
    args: dict[str, Any] = Field(default_factory=dict, description="The driver command's arguments.")


def register_builtins(registry: CommandRegistry, *, clock: ClockLike, school: str, gateway: str,
                      device_lookup: DeviceLookup | None = None) -> None:
    """``ping`` always; ``device.command`` when a device lookup is given (the runtime's ``drivers.get``)."""

    async def ping(_: PingArgs) -> dict[str, Any]:
        return {"time": clock.now_ms(), "synced": clock.synced(), "version": __version__,
                "school": school, "gateway": gateway, "commands": registry.names()}

    registry.register("ping", PingArgs, ping, description="Gateway time, clock sync, version and known commands.")
    if device_lookup is None:
        return

    async def device_command(args: DeviceCommandArgs) -> dict[str, Any]:
        device = device_lookup(args.device)
        if device is None:
            raise CommandError(f"unknown device {args.device!r} (not configured or not enabled on this gateway)")
        result = await device.command(args.name, args.args)
        return {"device": args.device, "name": args.name, "result": dict(result or {})}

    registry.register("device.command", DeviceCommandArgs, device_command,
                      description="Pass a command to one device's driver (Driver.command).")


# ---------------------------------------------------------------- the downlink


@dataclass
class DownlinkStats:
    received: int = 0
    ok: int = 0
    failed: int = 0
    rejected: int = 0
    rejected_by_code: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        """For the gateway health record (numbers only)."""
        return {"commands_received": self.received, "commands_ok": self.ok, "commands_failed": self.failed,
                "commands_rejected": self.rejected}


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def _span(ms: int) -> str:
    s = abs(ms) // 1000
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172_800:
        return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 >= 60 else "")
    return f"{s // 86_400} days"


Publish = Callable[[str, bytes], Awaitable[None]]
"""Publishes one cmd-result (topic, payload) at QoS 1."""


@dataclass(frozen=True)
class _Accepted:
    """A command that passed every check (its id is recorded): ready to run."""

    envelope: Envelope
    command: Command
    args: BaseModel
    key_name: str


def _lane(c: _Accepted) -> str:
    """Commands of one lane run one at a time: a device's own commands, or the gateway-wide ones."""
    device = getattr(c.args, "device", None) if c.envelope.name == "device.command" else None
    return f"device:{device}" if isinstance(device, str) else "gateway"


class Downlink:
    """Checks and runs the commands of one gateway; see the module doc.

    ``await downlink.handle(topic, payload)`` returns ``(result_topic, result_payload)`` to publish at
    QoS 1, or None when the message is not for the downlink (another topic, an empty payload).
    ``await downlink.dispatch(topic, payload, publish)`` (the uplink's way) checks the command at once and
    runs its handler in a task, so that a long command does not hold up the next ones; see :meth:`dispatch`.
    """

    def __init__(self, config: DownlinkConfig, *, school: str, gateway: str, keys: Mapping[str, Ed25519PublicKey],
                 registry: CommandRegistry, replay: ReplayStore, clock: ClockLike) -> None:
        if not keys:
            raise DownlinkSetupError("the downlink needs at least one central public key")
        self.config = config
        self.school, self.gateway = school, gateway
        self.keys = dict(keys)
        self.registry = registry
        self.replay = replay
        self.clock = clock
        self.stats = DownlinkStats()
        self.cmd_prefix = f"{TOPIC_ROOT}/{school}/{gateway}/cmd/"
        self.result_topic = f"{TOPIC_ROOT}/{school}/{gateway}/cmd-result"
        self.rejection_log = LimitedLog(log)  # a sender of garbage cannot flood the journal
        self._lanes: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: DownlinkConfig, *, school: str, gateway: str, outbox_path: Path, clock: ClockLike,
                    device_lookup: DeviceLookup | None = None) -> Downlink:
        """Load the keys and the replay store and register the built-in commands.

        Raises :class:`DownlinkSetupError` naming the file when a key or the store cannot be used.
        """
        keys = load_public_keys(config.public_keys)
        replay = ReplayStore.open(config.replay_path(outbox_path), max_entries=config.replay_max_entries,
                                  now_ms=clock.now_ms())
        registry = CommandRegistry()
        register_builtins(registry, clock=clock, school=school, gateway=gateway, device_lookup=device_lookup)
        log.info("downlink: trusting %d central key(s) (%s); %d command id(s) remembered in %s", len(keys),
                 ", ".join(keys), len(replay), replay.path)
        return cls(config, school=school, gateway=gateway, keys=keys, registry=registry, replay=replay, clock=clock)

    async def handle(self, topic: str, payload: bytes | bytearray | str) -> tuple[str, bytes] | None:
        """Check and run one command message; return the cmd-result (topic, payload) to publish."""
        checked = await self._check(topic, payload)
        if not isinstance(checked, _Accepted):
            return checked
        return await self._run(checked.envelope, checked.command, checked.args, checked.key_name)

    async def dispatch(self, topic: str, payload: bytes | bytearray | str, publish: Publish) -> None:
        """Check one command message now, in arrival order, and run its handler in a task of its own.

        The uplink's message loop calls this: a long handler (a kit's firmware update) must not hold up the
        commands behind it, nor anything else the loop receives. Handlers of one *lane* still run one after the
        other, in arrival order: ``device.command`` for the same device, and every gateway-wide command (config,
        certificates, self-update) with each other. A rejection is published before this returns; a handler's
        result with ``publish`` when it is done (a failed publish is logged: the connection is gone)."""
        checked = await self._check(topic, payload)
        if not isinstance(checked, _Accepted):
            if checked is not None:
                await publish(*checked)
            return
        lane = self._lanes.setdefault(_lane(checked), asyncio.Lock())
        task = asyncio.create_task(self._run_in_lane(lane, checked, publish), name=f"command-{checked.envelope.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def running(self) -> int:
        """Commands dispatched whose result is not published yet."""
        return len(self._tasks)

    async def _run_in_lane(self, lane: asyncio.Lock, c: _Accepted, publish: Publish) -> None:
        async with lane:
            answer = await self._run(c.envelope, c.command, c.args, c.key_name)
        try:
            await publish(*answer)
        except Exception as exc:  # the broker connection went away meanwhile: the result cannot be sent
            log.warning("command %s %s: its result could not be published (%s: %s)", c.envelope.name, c.envelope.id,
                        type(exc).__name__, exc)

    async def _check(self, topic: str, payload: bytes | bytearray | str) -> _Accepted | tuple[str, bytes] | None:
        """The accepted command, or the rejection to publish, or None (not a command message)."""
        if not topic.startswith(self.cmd_prefix):
            return None
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        if not data:
            return None  # an empty retained message clears a retained command: nothing to answer
        topic_name = topic[len(self.cmd_prefix):]
        self.stats.received += 1
        obj: dict[str, Any] | None = None
        try:
            obj = decode_envelope(data)
            envelope, key_name = self._verify(obj, topic_name)
            command = self.registry.get(envelope.name)
            if command is None:
                raise CommandRejected("unknown_command", f"unknown command {envelope.name!r} (this gateway knows: "
                                      f"{', '.join(self.registry.names())})")
            try:
                args = command.args_model.model_validate(envelope.args)
            except ValidationError as exc:
                raise CommandRejected("bad_args", "bad args: " + _format_errors(exc, ("args",))) from None
            await self._remember(envelope)
        except CommandRejected as rej:
            return self._rejected(obj, topic_name, rej)
        return _Accepted(envelope, command, args, key_name)

    # ------------------------------------------------------------------ checks

    def _verify(self, obj: dict[str, Any], topic_name: str) -> tuple[Envelope, str]:
        envelope = check_shape(obj)
        key_name = check_signature(obj, self.keys)
        target = envelope.target
        if (target.school, target.gateway) != (self.school, self.gateway):
            raise CommandRejected("wrong_target", f"addressed to {target.school}/{target.gateway}, this gateway is "
                                  f"{self.school}/{self.gateway}")
        if envelope.name != topic_name:
            raise CommandRejected("name_mismatch", f"the topic says {topic_name!r}, the envelope {envelope.name!r}")
        self._check_times(envelope)
        return envelope, key_name

    def _check_times(self, env: Envelope) -> None:
        now, synced = self.clock.now_ms(), self.clock.synced()
        lifetime = env.expires_at - env.issued_at
        if lifetime <= 0:
            raise CommandRejected("bad_lifetime", "expires_at is not after issued_at")
        if lifetime > self.config.max_lifetime_s * 1000:
            raise CommandRejected("lifetime_too_long", f"lifetime {_span(lifetime)} is longer than this gateway "
                                  f"accepts ({_span(self.config.max_lifetime_s * 1000)}, downlink.max_lifetime_s)")
        clock = f"gateway time {_iso(now)}" + ("" if synced else "; the gateway clock is NOT synchronised (no NTP "
                                                "yet, and a Raspberry Pi has no RTC): fix its time sync")
        if env.issued_at > now + self.config.clock_skew_s * 1000:
            raise CommandRejected("not_yet_valid", f"issued {_span(env.issued_at - now)} ahead of the gateway clock "
                                  f"(allowed skew {self.config.clock_skew_s} s; issued_at {_iso(env.issued_at)}; "
                                  f"{clock})")
        if env.expires_at < now:
            raise CommandRejected("expired", f"expired {_span(now - env.expires_at)} ago (expires_at "
                                  f"{_iso(env.expires_at)}; {clock})")
        if env.issued_at < self.replay.floor_ms:
            raise CommandRejected("replay", f"issued before {_iso(self.replay.floor_ms)}, when this gateway's replay "
                                  "store was reset, so it may have run already: sign it again (a new id)")
        until = self.replay.seen_until(env.id)
        if until is not None:
            raise CommandRejected("replay", f"replay: command id {env.id!r} was accepted before (remembered until "
                                  f"{_iso(until)}); sign it again for a new id")

    async def _remember(self, env: Envelope) -> None:
        """Persist the id before running the command, so not even a crash lets it run twice."""
        try:
            self.replay.add(env.id, env.expires_at, now_ms=self.clock.now_ms(), clock_synced=self.clock.synced())
        except ReplayStoreFull as exc:
            raise CommandRejected("replay_store_full", str(exc)) from None
        try:
            await self.replay.save()
        except OSError as exc:
            self.replay.discard(env.id)
            raise CommandRejected("replay_store_error", f"cannot record the command id in {self.replay.path} "
                                  f"({exc.strerror or exc}); refusing to run it unrecorded") from None

    # ------------------------------------------------------------------ answers

    async def _run(self, env: Envelope, command: Command, args: BaseModel, key_name: str) -> tuple[str, bytes]:
        started = time.monotonic()
        token = current_command_id.set(env.id)
        try:
            async with asyncio.timeout(self.config.handler_timeout_s) as deadline:
                result = await command.handler(args)
        except CommandError as exc:
            return self._failed(env, str(exc) or type(exc).__name__)
        except TimeoutError as exc:
            if deadline.expired():
                return self._failed(env, f"no result within {self.config.handler_timeout_s:g} s "
                                    "(downlink.handler_timeout_s); the action may have happened in part")
            return self._failed(env, f"timeout: {exc}" if str(exc) else "timeout")
        except Exception as exc:  # a handler bug must become a 'failed' answer, never take the uplink down
            log.exception("command %s %s: handler crashed", env.name, env.id)
            return self._failed(env, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            current_command_id.reset(token)
        try:
            body = dict(result or {})
            json.dumps(body)  # must be publishable
        except (TypeError, ValueError) as exc:
            log.error("command %s %s: the handler's result is not a JSON object: %s", env.name, env.id, exc)
            return self._failed(env, f"internal error: the handler's result is not a JSON object ({exc})")
        self.stats.ok += 1
        log.info("command %s %s (key %s): ok in %.0f ms", env.name, env.id, key_name,
                 (time.monotonic() - started) * 1000)
        return self._answer(env.id, env.name, "ok", result=body)

    def _failed(self, env: Envelope, reason: str) -> tuple[str, bytes]:
        self.stats.failed += 1
        log.warning("command %s %s failed: %s", env.name, env.id, reason)
        return self._answer(env.id, env.name, "failed", reason=reason)

    def _rejected(self, obj: dict[str, Any] | None, topic_name: str, rej: CommandRejected) -> tuple[str, bytes]:
        self.stats.rejected += 1
        self.stats.rejected_by_code[rej.code] += 1
        cmd_id = obj.get("id") if obj is not None else None
        cmd_id = cmd_id[:128] if isinstance(cmd_id, str) else None
        name = obj.get("name") if obj is not None else None
        name = name[:64] if isinstance(name, str) else topic_name[:64]
        self.rejection_log.warning("command rejected (%s) on %r, id %r: %s", rej.code,
                                    self.cmd_prefix + topic_name[:64], cmd_id, rej.reason)
        return self._answer(cmd_id, name, "rejected", code=rej.code, reason=rej.reason)

    def _answer(self, cmd_id: str | None, name: str, status: str, **fields: Any) -> tuple[str, bytes]:
        doc = {"id": cmd_id, "name": name, "status": status, **fields, "ts": self.clock.now_ms(),
               "synced": self.clock.synced()}
        return self.result_topic, json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
