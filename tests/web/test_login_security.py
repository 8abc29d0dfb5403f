"""The pages' defences (issue 18): login throttling per address and per user, session expiry (idle and
absolute), logout revocation, the admin-actions audit log, and a clear error for a broken session secret.

In process with the real app (FastAPI's TestClient); time is a fake clock handed to the throttle and the
session signer, so locks and expiries are tested without waiting.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edugate.cli.main import app as cli
from edugate.common.audit.events import collect
from edugate.common.web.audit_log import AuditLog, read_audit
from edugate.common.web.auth import LoginThrottle, SecretFileError, SessionSigner, UserStore, load_or_create_secret
from edugate.common.web.site import SiteAuth
from edugate.gateway.web.app import AdminAction, GatewaySite, create_gateway_app
from edugate.gateway.web.live import LiveData
from tests.web.fakes import fake_status, users_file

PASSWORDS = {"alice": "alice-admin-pw-1", "victor": "victor-viewer-pw-1"}
COOKIE = "edugate_gateway_session"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Site:
    """The gateway's pages with a fake clock, a small throttle and an audit log in ``tmp``."""

    def __init__(self, tmp: Path, *, per_address: int = 3, per_user: int = 5, lock_s: float = 60.0,
                 idle_s: int = 600, lifetime_s: int = 3600) -> None:
        self.clock = Clock()
        self.audit_path = tmp / "web-audit.jsonl"

        async def ping() -> str:
            return "pong"

        site = GatewaySite(status=fake_status, live=LiveData(window_s=60),
                           actions={"ping": AdminAction("Ping", "Answers pong.", ping)})
        self.auth = SiteAuth(
            UserStore(users_file(tmp / "users.json")),
            SessionSigner(b"k" * 32, lifetime_s=lifetime_s, idle_s=idle_s, refresh_s=60, clock=self.clock),
            COOKIE, "edugate web-user add ...",
            throttle=LoginThrottle(per_address=per_address, per_user=per_user, window_s=300, lock_s=lock_s,
                                   clock=self.clock),
            audit=AuditLog(self.audit_path, "gateway"))
        self.app = create_gateway_app(site, self.auth)

    def client(self, address: str = "10.0.0.1") -> TestClient:
        return TestClient(self.app, base_url="http://gw.local", follow_redirects=False, client=(address, 40000))

    def audit(self) -> list[dict[str, object]]:
        return list(read_audit(self.audit_path))


def log_in(client: TestClient, user: str, password: str | None = None) -> int:
    answer = client.post("/login", data={"username": user, "password": password or PASSWORDS[user],
                                         "next": "/status"})
    return answer.status_code


def csrf_of(client: TestClient) -> str:
    return client.get("/status").text.split('name="csrf-token" content="')[1].split('"')[0]


def test_failures_from_one_address_lock_it_even_for_the_right_password_until_the_lock_expires(
        tmp_path: Path) -> None:
    site = Site(tmp_path, per_address=3, lock_s=60)
    client = site.client("10.0.0.7")
    assert [log_in(client, "alice", "wrong") for _ in range(3)] == [401, 401, 401]
    answer = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
    assert answer.status_code == 429 and "set-cookie" not in answer.headers
    assert answer.headers["retry-after"] == "60" and "wait 60 s" in answer.text
    assert log_in(site.client("10.0.0.8"), "victor") == 303  # another address, another user: not locked
    site.clock.now += 30
    assert site.client("10.0.0.7").post("/login", data={"username": "victor", "password": PASSWORDS["victor"]}
                                        ).headers["retry-after"] == "30"  # the address is locked for everyone
    site.clock.now += 31
    assert log_in(client, "alice") == 303  # the lock expired
    events = [(e["event"], e.get("user"), e.get("from")) for e in site.audit()]
    assert events[:5] == [("login-failed", "alice", "10.0.0.7")] * 3 + [("login-locked", "alice", "10.0.0.7"),
                                                                         ("login-refused", "alice", "10.0.0.7")]
    assert events[-1] == ("login", "alice", "10.0.0.7")


def test_failures_for_one_user_from_many_addresses_lock_the_user(tmp_path: Path) -> None:
    site = Site(tmp_path, per_address=100, per_user=4, lock_s=120)
    for i in range(4):
        assert log_in(site.client(f"10.0.1.{i}"), "alice", "guess") == 401
    fresh = site.client("10.0.9.9")
    answer = fresh.post("/login", data={"username": "ALICE", "password": PASSWORDS["alice"]})  # names: any case
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) == 120
    assert log_in(fresh, "victor") == 303  # other users are not locked
    site.clock.now += 121
    assert log_in(fresh, "alice") == 303
    locked = [e for e in site.audit() if e["event"] == "login-locked"]
    assert len(locked) == 1 and "user:alice" in str(locked[0]["reason"])


def test_a_session_ends_when_idle_and_at_its_absolute_end_and_requests_renew_it(tmp_path: Path) -> None:
    site = Site(tmp_path, idle_s=600, lifetime_s=3600)
    client = site.client()
    assert log_in(client, "victor") == 303
    assert client.get("/api/status").status_code == 200
    for _ in range(6):  # active every 9 minutes: the idle limit (10 min) never passes, the cookie is renewed
        site.clock.now += 540
        answer = client.get("/api/status")
        assert answer.status_code == 200 and f"{COOKIE}=" in answer.headers.get("set-cookie", "")
        assert "Max-Age=" in answer.headers["set-cookie"] and "HttpOnly" in answer.headers["set-cookie"]
    site.clock.now += 3600 - 6 * 540 + 1  # past the absolute end (1 h after the login), though active
    assert client.get("/api/status").status_code == 401

    assert log_in(client, "victor") == 303
    site.clock.now += 599
    assert client.get("/api/status").status_code == 200
    site.clock.now += 601  # renewed at 599 s; 601 s later it is idle
    assert client.get("/api/status").status_code == 401


def test_logout_revokes_the_session_even_if_the_cookie_is_kept(tmp_path: Path) -> None:
    site = Site(tmp_path)
    client = site.client()
    log_in(client, "alice")
    kept = client.cookies[COOKIE]
    answer = client.post("/logout", headers={"X-CSRF-Token": csrf_of(client)})
    assert answer.status_code == 303
    thief = site.client("10.6.6.6")
    thief.cookies[COOKIE] = kept
    assert thief.get("/api/status").status_code == 401
    assert [e["event"] for e in site.audit()] == ["login", "logout"]


def test_admin_actions_are_audited_with_who_when_what_where_and_never_a_password(tmp_path: Path) -> None:
    site = Site(tmp_path)
    admin = site.client("192.168.10.23")
    log_in(admin, "alice")
    assert admin.post("/api/actions/ping", headers={"X-CSRF-Token": csrf_of(admin)}).json()["message"] == "pong"
    assert admin.post("/api/actions/ping").status_code == 403  # no CSRF token: refused, still audited
    viewer = site.client("192.168.10.40")
    log_in(viewer, "victor")
    assert viewer.post("/api/actions/ping", headers={"X-CSRF-Token": csrf_of(viewer)}).status_code == 403
    assert log_in(site.client("192.168.10.99"), "alice", "Secret-Guess-42") == 401
    actions = [e for e in site.audit() if e["event"] == "action"]
    assert [(e["user"], e["role"], e["from"], e["action"], e["status"]) for e in actions] == [
        ("alice", "admin", "192.168.10.23", "POST /api/actions/ping", 200),
        ("alice", "admin", "192.168.10.23", "POST /api/actions/ping", 403),
        ("victor", "viewer", "192.168.10.40", "POST /api/actions/ping", 403)]
    assert all(str(e["ts"]).endswith("Z") and e["site"] == "gateway" for e in site.audit())
    text = site.audit_path.read_text()
    assert not any(secret in text for secret in [*PASSWORDS.values(), "Secret-Guess-42", "csrf"])
    assert os.stat(site.audit_path).st_mode & 0o777 == 0o600
    assert all(json.loads(line) for line in text.splitlines())  # one JSON object per line


def test_the_audit_log_is_appended_to_and_rotated_not_rewritten(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", "central", max_bytes=400)
    for i in range(6):
        log.record("action", user="ops", action=f"POST /x/{i}", status=200, **{"from": "10.0.0.1"})
    assert (tmp_path / "a.jsonl.1").exists()
    kept = [e["action"] for e in read_audit(tmp_path / "a.jsonl")]  # the rotated file, then the current one
    assert len(kept) >= 2 and kept == [f"POST /x/{i}" for i in range(6)][-len(kept):]
    with pytest.raises(ValueError, match="unknown field"):
        log.record("action", password="x")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\x80", b"not hex at all\n", b"abcd\n"])
def test_a_broken_session_secret_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "web-session.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(SecretFileError) as caught:
        load_or_create_secret(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and f"rm {path}" in message
    assert isinstance(caught.value, ValueError)  # the callers' (OSError, ValueError) handlers catch it


def test_users_added_and_removed_on_the_command_line_are_audited(tmp_path: Path) -> None:
    users = tmp_path / "web-users.json"
    run = CliRunner()
    added = run.invoke(cli, ["web-user", "add", "thu-vien", "--role", "admin", "--users-file", str(users),
                             "--password-file", "-"], input="Library-Pass-2026\n")
    assert added.exit_code == 0, added.output
    assert run.invoke(cli, ["web-user", "remove", "thu-vien", "--users-file", str(users)]).exit_code == 0
    records = list(read_audit(tmp_path / "web-audit.jsonl"))
    assert [(r["event"], r["action"], r["site"]) for r in records] == [
        ("user-added", "web-user add thu-vien --role admin", "cli"),
        ("user-removed", "web-user remove thu-vien", "cli")]
    assert all(r["user"] and str(r["from"]).startswith("command line on ") for r in records)
    assert "Library-Pass-2026" not in (tmp_path / "web-audit.jsonl").read_text()
    found = collect(datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC), [tmp_path / "web-audit.jsonl"])
    assert dict(found.counts) == {"web-user-added": 1, "web-user-removed": 1}
