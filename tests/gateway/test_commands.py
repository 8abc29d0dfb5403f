"""The downlink without a broker: signing, every rejection, the replay store, the registry, the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError
from typer.testing import CliRunner

from edugate.central.command_tools import app as cli_app
from edugate.common.ratelimit import LimitedLog
from edugate.contract import __version__
from edugate.drivers.base import CommandError
from edugate.gateway.downlink.commands import (
    CommandArgs,
    CommandRegistry,
    Downlink,
    DownlinkConfig,
    DownlinkSetupError,
    ReplayStore,
    fingerprint,
    load_private_key,
    load_public_key,
    sign_command,
    signed_bytes,
)

NOW = 1_763_900_000_000
MIN = 60_000


@dataclass
class FakeClock:
    now: int = NOW
    is_synced: bool = True

    def now_ms(self) -> int:
        return self.now

    def synced(self) -> bool:
        return self.is_synced


def write_public(key: Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture(scope="module")
def central() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def intruder() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class FakeDevice:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, Any]]] = []

    async def command(self, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
        if name == "explode":
            raise CommandError("relay 3 does not exist")
        self.calls.append((name, args))
        return {"done": name}


@dataclass
class Rig:
    """A downlink for school ``s``, gateway ``g``, with helpers to sign and send commands to it."""

    tmp: Path
    clock: FakeClock
    key: Ed25519PrivateKey
    downlink: Downlink
    device: FakeDevice

    def sign(self, name: str = "ping", args: Mapping[str, Any] | None = None, *, key: Ed25519PrivateKey | None = None,
             gateway: str = "g", ttl_s: float = 300, issued_at_ms: int | None = None, **kw: Any) -> dict[str, Any]:
        return sign_command(key or self.key, school="s", gateway=gateway, name=name, args=args, ttl_s=ttl_s,
                            issued_at_ms=self.clock.now if issued_at_ms is None else issued_at_ms, **kw)

    def send(self, envelope: Mapping[str, Any] | bytes, topic_name: str | None = None) -> dict[str, Any]:
        payload = envelope if isinstance(envelope, bytes) else json.dumps(envelope).encode()
        name = topic_name or (envelope["name"] if isinstance(envelope, Mapping) else "ping")
        answer = asyncio.run(self.downlink.handle(f"edu/v1/s/g/cmd/{name}", payload))
        assert answer is not None
        topic, body = answer
        assert topic == "edu/v1/s/g/cmd-result"
        return json.loads(body)

    def restart(self, **config: Any) -> Rig:
        """A new downlink on the same files, as after a gateway restart."""
        return make_rig(self.tmp, self.clock, self.key, **config)


def make_rig(tmp: Path, clock: FakeClock, key: Ed25519PrivateKey, *, extra_keys: tuple[Ed25519PrivateKey, ...] = (),
             **config: Any) -> Rig:
    tmp.mkdir(parents=True, exist_ok=True)
    paths = [write_public(k, tmp / f"central-{i}.pub.pem") for i, k in enumerate((key, *extra_keys))]
    cfg = DownlinkConfig(enabled=True, public_keys=paths, **config)
    device = FakeDevice()
    downlink = Downlink.from_config(cfg, school="s", gateway="g", outbox_path=tmp / "outbox.sqlite", clock=clock,
                                    device_lookup={"relay-1": device}.get)
    return Rig(tmp, clock, key, downlink, device)


@pytest.fixture
def rig(tmp_path: Path, clock: FakeClock, central: Ed25519PrivateKey) -> Rig:
    return make_rig(tmp_path, clock, central)


# ---------------------------------------------------------------- canonical form and the happy path


def test_canonical_form_is_the_documented_one(central: Ed25519PrivateKey) -> None:
    env = sign_command(central, school="s", gateway="g", name="device.command",
                       args={"z": 1, "a": {"y": "Trường", "b": [1, 2]}}, issued_at_ms=NOW, command_id="c-1")
    without_sig = {k: v for k, v in env.items() if k != "sig"}
    expected = json.dumps(without_sig, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert signed_bytes(env) == expected
    assert expected.startswith(b'{"args":{"a":{"b":[1,2],"y":"Tr\xc6\xb0\xe1\xbb\x9dng"},"z":1},"expires_at":')
    assert signed_bytes(dict(reversed(list(env.items())))) == expected  # the order on the wire does not matter
    central.public_key().verify(base64.b64decode(env["sig"]), expected)
    assert env["expires_at"] - env["issued_at"] == 300_000


def test_the_documented_test_vector() -> None:
    """docs/mqtt-contract.md section 9.2: other implementations check their signing against these bytes."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    env = sign_command(key, school="thpt-le-quy-don", gateway="gw-1", name="device.command",
                       args={"device": "lab1-relay", "name": "pulse", "args": {"ms": 500, "note": "Phòng thí nghiệm"}},
                       ttl_s=300, issued_at_ms=1_763_900_000_000, command_id="0b6f4c1e-6a49-4d3a-9c53-2f1f0f6f2a10")
    assert signed_bytes(env).decode() == (
        '{"args":{"args":{"ms":500,"note":"Phòng thí nghiệm"},"device":"lab1-relay","name":"pulse"},'
        '"expires_at":1763900300000,"id":"0b6f4c1e-6a49-4d3a-9c53-2f1f0f6f2a10","issued_at":1763900000000,'
        '"name":"device.command","target":{"gateway":"gw-1","school":"thpt-le-quy-don"}}')
    assert env["sig"] == ("pgjtngzdiQw4TJFc7UZn/IBE21Z8633PqWBQR6OuVV8Kjj7fJopNPoS5sR9UFrJ/yGNjUOBgr+2C+gRdq6E8Aw==")
    assert fingerprint(key) == "ed25519:56475aa75463474c"


def test_ping_is_answered_ok(rig: Rig) -> None:
    env = rig.sign("ping")
    result = rig.send(env)
    assert result["status"] == "ok" and result["id"] == env["id"] and result["name"] == "ping"
    assert result["result"]["version"] == __version__ and result["result"]["time"] == NOW
    assert result["result"]["commands"] == ["device.command", "ping"]
    assert result["ts"] == NOW and result["synced"] is True
    assert rig.downlink.stats.as_dict() == {"commands_received": 1, "commands_ok": 1, "commands_failed": 0,
                                            "commands_rejected": 0}


def test_messages_not_for_the_downlink_get_no_answer(rig: Rig) -> None:
    payload = json.dumps(rig.sign()).encode()
    assert asyncio.run(rig.downlink.handle("edu/v1/s/other/cmd/ping", payload)) is None
    assert asyncio.run(rig.downlink.handle("edu/v1/s/g/state", payload)) is None
    assert asyncio.run(rig.downlink.handle("edu/v1/s/g/cmd/ping", b"")) is None  # clearing a retained message
    assert rig.downlink.stats.received == 0


# ---------------------------------------------------------------- every rejection


def _resigned(rig: Rig, env: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``env`` with fields changed and signed again by central (a validly signed, otherwise bad command)."""
    env = {k: v for k, v in env.items() if k != "sig"} | changes
    env["sig"] = base64.b64encode(rig.key.sign(signed_bytes(env))).decode()
    return env


Case = Callable[[Rig, Ed25519PrivateKey], "tuple[dict[str, Any] | bytes, str | None]"]

REJECTIONS: dict[str, tuple[Case, str, str]] = {
    "too large": (lambda r, _: (b"{" + b" " * 70_000 + b"}", None), "too_large", "at most 65536"),
    "not JSON": (lambda r, _: (b"reboot now", None), "bad_json", "bad JSON: Expecting value"),
    "not UTF-8": (lambda r, _: (b'{"id": "\xff"}', None), "bad_json", "not UTF-8"),
    "duplicate key": (lambda r, _: (b'{"id": "a", "id": "b"}', None), "bad_json", "duplicate key 'id'"),
    "NaN": (lambda r, _: (b'{"issued_at": NaN}', None), "bad_json", "NaN is not JSON"),
    "lone surrogate": (lambda r, _: (b'{"id": "\\ud800"}', None), "bad_json", "lone surrogate"),
    "array": (lambda r, _: (b"[1, 2]", None), "bad_json", "must be an object, not list"),
    "missing field": (lambda r, _: ({k: v for k, v in r.sign().items() if k != "expires_at"}, None),
                      "missing_field", "missing field 'expires_at'"),
    "float time": (lambda r, _: (r.sign() | {"issued_at": NOW + 0.5}, None), "bad_envelope",
                   "issued_at: Input should be a valid integer"),
    "unknown field": (lambda r, _: (r.sign() | {"kid": "k1"}, None), "bad_envelope", "unknown field 'kid'"),
    "bad target id": (lambda r, _: (r.sign() | {"target": {"school": "S!", "gateway": "g"}}, None),
                      "bad_envelope", "target.school: String should match pattern"),
    "forged": (lambda r, other: (r.sign(key=other), None), "bad_signature", "not signed by any of the 1"),
    "altered args": (lambda r, _: (r.sign("device.command", {"device": "relay-1", "name": "open"})
                                   | {"args": {"device": "relay-1", "name": "unlock_all"}}, None),
                     "bad_signature", "forged, altered"),
    "garbage sig": (lambda r, _: (r.sign() | {"sig": "not base64!"}, None), "bad_signature", "64-byte Ed25519"),
    "other gateway": (lambda r, _: (r.sign(gateway="g2"), None), "wrong_target",
                      "addressed to s/g2, this gateway is s/g"),
    "topic name": (lambda r, _: (r.sign("ping"), "device.command"), "name_mismatch",
                   "the topic says 'device.command', the envelope 'ping'"),
    "zero lifetime": (lambda r, _: (r.sign(ttl_s=0), None), "bad_lifetime", "expires_at is not after issued_at"),
    "long lifetime": (lambda r, _: (r.sign(ttl_s=2 * 86_400), None), "lifetime_too_long",
                      "lifetime 2 days is longer than this gateway accepts (24 h, downlink.max_lifetime_s)"),
    "future": (lambda r, _: (r.sign(issued_at_ms=NOW + 10 * MIN), None), "not_yet_valid",
               "issued 10 min ahead of the gateway clock (allowed skew 300 s"),
    "expired": (lambda r, _: (r.sign(issued_at_ms=NOW - 10 * MIN, ttl_s=60), None), "expired",
                "expired 9 min ago (expires_at 2025-11-23T12:04:20Z; gateway time 2025-11-23T12:13:20Z)"),
    "unknown name": (lambda r, _: (r.sign("reboot"), None), "unknown_command",
                     "unknown command 'reboot' (this gateway knows: device.command, ping)"),
    "bad args": (lambda r, _: (r.sign("device.command", {"device": "Relay 1", "args": [], "force": True}), None),
                 "bad_args", "bad args: args.device: String should match pattern"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_rejections_say_why(rig: Rig, intruder: Ed25519PrivateKey, case: str,
                            caplog: pytest.LogCaptureFixture) -> None:
    make, code, reason = REJECTIONS[case]
    envelope, topic_name = make(rig, intruder)
    with caplog.at_level(logging.WARNING, logger="edugate.gateway.downlink.commands"):
        result = rig.send(envelope, topic_name)
    assert result["status"] == "rejected"
    assert result["code"] == code
    assert reason in result["reason"], result["reason"]
    assert set(result) == {"id", "name", "status", "code", "reason", "ts", "synced"}
    if isinstance(envelope, dict):
        assert result["id"] == envelope["id"]
    assert rig.downlink.stats.rejected == 1 and rig.downlink.stats.rejected_by_code == {code: 1}
    assert f"command rejected ({code})" in caplog.text
    assert rig.device.calls == []
    assert len(rig.downlink.replay) == 0  # only accepted commands are remembered


def test_the_answer_to_garbage_names_the_topic(rig: Rig) -> None:
    result = rig.send(b"{oops", "access.allowlist.set")
    assert result["id"] is None and result["name"] == "access.allowlist.set" and result["code"] == "bad_json"


def test_bad_args_give_every_path_and_no_values(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    env = rig.sign("device.command", {"device": "relay-1", "name": "", "args": {"pin": "1234"}, "secret": "hunter2"})
    with caplog.at_level(logging.DEBUG):
        result = rig.send(env)
    assert result["reason"] == ("bad args: args.name: String should have at least 1 character; "
                                "args.secret: unknown field")
    assert "hunter2" not in caplog.text and "1234" not in caplog.text and env["sig"] not in caplog.text


def test_an_unsynced_clock_is_named_in_time_rejections(rig: Rig) -> None:
    rig.clock.is_synced = False
    expired = rig.send(rig.sign(issued_at_ms=NOW - 10 * MIN, ttl_s=60))
    future = rig.send(rig.sign(issued_at_ms=NOW + 3 * 3_600_000))
    for result in (expired, future):
        assert "the gateway clock is NOT synchronised" in result["reason"] and result["synced"] is False
    assert future["code"] == "not_yet_valid" and "issued 3 h ahead" in future["reason"]
    assert rig.send(rig.sign())["status"] == "ok"  # within its lifetime by the gateway clock: runs, flagged
    assert "NOT synchronised" not in rig.send(rig.sign("reboot"))["reason"]


def test_clock_skew_tolerance(rig: Rig) -> None:
    assert rig.send(rig.sign(issued_at_ms=NOW + 4 * MIN))["status"] == "ok"
    assert rig.send(rig.sign(issued_at_ms=NOW + 6 * MIN))["code"] == "not_yet_valid"
    at_the_edge = rig.sign(issued_at_ms=NOW - 5 * MIN, ttl_s=300)  # expires_at == now: still valid
    assert rig.send(at_the_edge)["status"] == "ok"


# ---------------------------------------------------------------- replay


def test_replay_is_refused_even_after_a_restart(rig: Rig) -> None:
    env = rig.sign()
    assert rig.send(env)["status"] == "ok"
    again = rig.send(env)
    assert again["code"] == "replay" and f"command id {env['id']!r} was accepted before" in again["reason"]
    restarted = rig.restart()
    assert len(restarted.downlink.replay) == 1
    assert restarted.send(env)["code"] == "replay"
    assert restarted.send(rig.sign())["status"] == "ok"  # a new id runs
    stored = json.loads((rig.tmp / "commands-seen.json").read_text())
    assert stored["seen"][env["id"]] == env["expires_at"] and stored["version"] == 1


def test_replay_store_forgets_expired_ids(rig: Rig) -> None:
    first = rig.sign(ttl_s=60)
    assert rig.send(first)["status"] == "ok"
    rig.clock.now += 2 * MIN
    assert rig.send(first)["code"] == "expired"  # once expired, expiry alone refuses it
    second = rig.sign()
    assert rig.send(second)["status"] == "ok"
    assert set(json.loads((rig.tmp / "commands-seen.json").read_text())["seen"]) == {second["id"]}


def test_unsynced_clock_keeps_ids_until_the_store_is_full(tmp_path: Path, clock: FakeClock,
                                                          central: Ed25519PrivateKey) -> None:
    rig = make_rig(tmp_path, clock, central, replay_max_entries=10)
    clock.is_synced = False
    first = rig.sign(ttl_s=60)
    rig.send(first)
    clock.now += 2 * MIN  # an unsynced clock may be wrongly ahead: do not forget live ids on its word
    rig.send(rig.sign())
    assert first["id"] in rig.downlink.replay.seen
    for _ in range(8):
        assert rig.send(rig.sign())["status"] == "ok"  # the 10th entry; then full: expired ones go
    assert rig.send(rig.sign())["status"] == "ok"
    assert first["id"] not in rig.downlink.replay.seen and len(rig.downlink.replay) == 10


def test_full_replay_store_refuses_new_commands(tmp_path: Path, clock: FakeClock, central: Ed25519PrivateKey) -> None:
    rig = make_rig(tmp_path, clock, central, replay_max_entries=10)
    for _ in range(10):
        assert rig.send(rig.sign())["status"] == "ok"
    result = rig.send(rig.sign())
    assert result["code"] == "replay_store_full" and "downlink.replay_max_entries" in result["reason"]
    clock.now += 6 * MIN  # the first ten expire
    assert rig.send(rig.sign())["status"] == "ok"


def test_unreadable_replay_store_refuses_older_commands(rig: Rig) -> None:
    old = rig.sign(issued_at_ms=NOW - MIN)
    (rig.tmp / "commands-seen.json").write_text("{truncated")
    rig.clock.now += 1000
    restarted = rig.restart()
    assert (rig.tmp / "commands-seen.json.corrupt").read_text() == "{truncated"
    result = restarted.send(old)
    assert result["code"] == "replay" and "replay store was reset" in result["reason"]
    assert restarted.send(restarted.sign())["status"] == "ok"
    assert restarted.restart().downlink.replay.floor_ms == NOW + 1000  # the reset survives a restart too


def test_replay_store_write_failure_refuses_the_command(rig: Rig) -> None:
    (rig.tmp / "not-a-dir").write_text("")
    rig.downlink.replay.path = rig.tmp / "not-a-dir" / "seen.json"
    env = rig.sign()
    result = rig.send(env)
    assert result["code"] == "replay_store_error" and "refusing to run it unrecorded" in result["reason"]
    assert env["id"] not in rig.downlink.replay.seen


def test_replay_store_rejects_a_foreign_document(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    path.write_text(json.dumps({"version": 2, "seen": {}, "floor_ms": 0}))
    store = ReplayStore.open(path, now_ms=NOW)
    assert store.floor_ms == NOW and (tmp_path / "seen.json.corrupt").exists()


# ---------------------------------------------------------------- keys


def test_key_rotation_accepts_either_listed_key(tmp_path: Path, clock: FakeClock, central: Ed25519PrivateKey) -> None:
    new_key = Ed25519PrivateKey.generate()
    both = make_rig(tmp_path, clock, central, extra_keys=(new_key,))
    assert both.send(both.sign())["status"] == "ok"
    assert both.send(both.sign(key=new_key))["status"] == "ok"
    assert both.send(both.sign(key=Ed25519PrivateKey.generate()))["reason"].startswith(
        "bad signature: not signed by any of the 2 central key(s)")
    only_new = make_rig(tmp_path / "after", clock, new_key)
    assert only_new.send(only_new.sign(key=central))["code"] == "bad_signature"


def test_key_files_are_checked_with_clear_errors(tmp_path: Path, central: Ed25519PrivateKey) -> None:
    private = tmp_path / "central.pem"
    private.write_bytes(central.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    with pytest.raises(DownlinkSetupError, match="this is a private key; a gateway needs only the public key"):
        load_public_key(private)
    with pytest.raises(DownlinkSetupError, match="cannot read the central public key: No such file"):
        load_public_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(DownlinkSetupError, match=r"junk\.pem: not a PEM public key"):
        load_public_key(tmp_path / "junk.pem")
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(DownlinkSetupError, match="is not Ed25519"):
        load_public_key(ec_key)
    public = write_public(central, tmp_path / "central.pub.pem")
    assert fingerprint(load_public_key(public)) == fingerprint(central)
    with pytest.raises(DownlinkSetupError, match="that is the public key"):
        load_private_key(public)
    assert fingerprint(load_private_key(private)) == fingerprint(central)


def test_downlink_config(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="an enabled downlink needs at least one central public key"):
        DownlinkConfig(enabled=True)
    with pytest.raises(ValidationError, match="Extra inputs"):
        DownlinkConfig.model_validate({"enabled": False, "public_key": "x.pem"})
    cfg = DownlinkConfig(enabled=True, public_keys=[Path("keys/central.pub.pem"), Path("/etc/edugate/old.pub.pem")])
    assert cfg.max_lifetime_s == 86_400 and cfg.clock_skew_s == 300
    assert cfg.replay_path(Path("/var/lib/edugate/outbox.sqlite")) == Path("/var/lib/edugate/commands-seen.json")
    resolved = cfg.model_copy(update={"replay_store": Path("seen.json")}).resolved(tmp_path)
    assert resolved.public_keys == [tmp_path / "keys/central.pub.pem", Path("/etc/edugate/old.pub.pem")]
    assert resolved.replay_path(Path("/x/outbox.sqlite")) == tmp_path / "seen.json"


# ---------------------------------------------------------------- registry and dispatch


class AllowListArgs(CommandArgs):
    cards: list[str]
    door: str


def test_registering_a_command_is_one_line(rig: Rig) -> None:
    seen: list[AllowListArgs] = []

    async def set_allowlist(args: AllowListArgs) -> dict[str, Any]:
        seen.append(args)
        return {"cards": len(args.cards)}

    rig.downlink.registry.register("access.allowlist.set", AllowListArgs, set_allowlist)
    ok = rig.send(rig.sign("access.allowlist.set", {"cards": ["p:1", "p:2"], "door": "lab-1"}))
    assert ok["status"] == "ok" and ok["result"] == {"cards": 2}
    assert seen == [AllowListArgs(cards=["p:1", "p:2"], door="lab-1")]
    bad = rig.send(rig.sign("access.allowlist.set", {"cards": "p:1"}))
    assert bad["reason"] == "bad args: args.cards: Input should be a valid list; args.door: Field required"


def test_registry_refuses_bad_registrations() -> None:
    registry = CommandRegistry()

    async def handler(_: CommandArgs) -> dict[str, Any]:
        return {}

    registry.register("a.b", CommandArgs, handler)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a.b", CommandArgs, handler)
    for name in ("A.b", "a/b", "a.", "#", "a" * 65):
        with pytest.raises(ValueError, match="is not a command name"):
            registry.register(name, CommandArgs, handler)
    with pytest.raises(TypeError, match="pydantic model"):
        registry.register("c", dict, handler)  # type: ignore[arg-type]
    assert "a.b" in registry and registry.names() == ["a.b"]


def test_handler_failures_become_failed_answers(tmp_path: Path, clock: FakeClock, central: Ed25519PrivateKey,
                                                caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(tmp_path, clock, central, handler_timeout_s=0.05)

    async def refuses(_: CommandArgs) -> dict[str, Any]:
        raise CommandError("door controller says no")

    async def crashes(_: CommandArgs) -> dict[str, Any]:
        raise KeyError("bug")

    async def hangs(_: CommandArgs) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    async def not_json(_: CommandArgs) -> dict[str, Any]:
        return {"when": object()}

    for name, handler in {"t.refuses": refuses, "t.crashes": crashes, "t.hangs": hangs, "t.json": not_json}.items():
        rig.downlink.registry.register(name, CommandArgs, handler)
    with caplog.at_level(logging.ERROR, logger="edugate.gateway.downlink.commands"):
        answers = {name: rig.send(rig.sign(name)) for name in ("t.refuses", "t.crashes", "t.hangs", "t.json")}
    assert {a["status"] for a in answers.values()} == {"failed"}
    assert answers["t.refuses"]["reason"] == "door controller says no"
    assert answers["t.crashes"]["reason"] == "internal error: KeyError: 'bug'"
    assert answers["t.hangs"]["reason"].startswith("no result within 0.05 s (downlink.handler_timeout_s)")
    assert answers["t.json"]["reason"].startswith("internal error: the handler's result is not a JSON object")
    assert "handler crashed" in caplog.text
    assert rig.downlink.stats.failed == 4
    assert rig.send(rig.sign("t.refuses"))["status"] == "failed"  # a failed command's id is spent too
    assert len(rig.downlink.replay) == 5


def test_device_command_reaches_the_driver(rig: Rig) -> None:
    ok = rig.send(rig.sign("device.command", {"device": "relay-1", "name": "pulse", "args": {"ms": 500}}))
    assert ok["status"] == "ok" and ok["result"] == {"device": "relay-1", "name": "pulse", "result": {"done": "pulse"}}
    assert rig.device.calls == [("pulse", {"ms": 500})]
    unknown = rig.send(rig.sign("device.command", {"device": "relay-9", "name": "pulse"}))
    assert unknown["status"] == "failed" and "unknown device 'relay-9'" in unknown["reason"]
    refused = rig.send(rig.sign("device.command", {"device": "relay-1", "name": "explode"}))
    assert refused["status"] == "failed" and refused["reason"] == "relay 3 does not exist"


def test_device_command_needs_a_lookup(tmp_path: Path, clock: FakeClock, central: Ed25519PrivateKey) -> None:
    cfg = DownlinkConfig(enabled=True, public_keys=[write_public(central, tmp_path / "c.pub.pem")])
    downlink = Downlink.from_config(cfg, school="s", gateway="g", outbox_path=tmp_path / "o.sqlite", clock=clock)
    assert downlink.registry.names() == ["ping"]


def test_concurrent_copies_of_a_command_run_once(rig: Rig) -> None:
    env = rig.sign()
    payload = json.dumps(env).encode()

    async def both() -> list[tuple[str, bytes] | None]:
        return list(await asyncio.gather(*(rig.downlink.handle("edu/v1/s/g/cmd/ping", payload) for _ in range(2))))

    statuses = sorted(json.loads(a[1])["status"] for a in asyncio.run(both()) if a)
    assert statuses == ["ok", "rejected"]


# ---------------------------------------------------------------- CLI (keygen, sign)


def test_keygen_and_sign(tmp_path: Path, rig: Rig) -> None:
    runner = CliRunner()
    out = tmp_path / "keys" / "central-cmd"
    first = runner.invoke(cli_app, ["keygen", "--out", str(out)])
    assert first.exit_code == 0, first.output
    private, public = tmp_path / "keys/central-cmd.pem", tmp_path / "keys/central-cmd.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "fingerprint ed25519:" in first.output
    again = runner.invoke(cli_app, ["keygen", "--out", str(out)])
    assert again.exit_code == 2 and "not overwriting" in again.output

    signed = runner.invoke(cli_app, ["sign", "--key", str(private), "--school", "s", "--gateway", "g", "--name",
                                     "device.command", "--args", '{"device": "relay-1", "name": "pulse"}',
                                     "--ttl", "60", "--id", "op-42"])
    assert signed.exit_code == 0, signed.output
    env = json.loads(signed.stdout)
    assert env["id"] == "op-42" and env["expires_at"] - env["issued_at"] == 60_000
    rig.clock.now = env["issued_at"]
    gateway = make_rig(tmp_path / "gw", rig.clock, load_private_key(private))
    assert fingerprint(load_public_key(public)) == fingerprint(gateway.key)
    assert gateway.send(env)["status"] == "ok"

    bad = runner.invoke(cli_app, ["sign", "--key", str(private), "--school", "s", "--gateway", "g", "--name", "ping",
                                  "--args", "[1]"])
    assert bad.exit_code == 2 and "must be a JSON object" in bad.output
    missing = runner.invoke(cli_app, ["sign", "--key", str(private), "--name", "ping"])
    assert missing.exit_code == 2 and "missing --school, --gateway" in missing.output


def test_a_flood_of_rejections_is_logged_once_per_burst_with_a_count(rig: Rig,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    assert all(rig.send(b"{oops")["code"] == "bad_json" for _ in range(25))  # every one is answered...
    logged = [r.getMessage() for r in caplog.records if "command rejected" in r.getMessage()]
    assert len(logged) == 20  # ...but only the default burst of 20 per 10 s reaches the journal

    now = [0.0]
    rig.downlink.rejection_log = LimitedLog(logging.getLogger("edugate.gateway.downlink.commands"), burst=2,
                                            window_s=60, clock=lambda: now[0])
    caplog.clear()
    for _ in range(5):
        rig.send(b"{oops")
    now[0] = 61.0
    rig.send(b"{oops")
    logged = [r.getMessage() for r in caplog.records if "command rejected" in r.getMessage()]
    assert len(logged) == 3 and "(bad_json)" in logged[0]
    assert logged[-1].endswith("(3 more like it were not logged)")
    assert rig.downlink.stats.rejected == 31
