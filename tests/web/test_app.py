"""Login, sessions, roles, CSRF and the users file, in process (FastAPI's TestClient); and the ``web:`` config."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from typer.testing import CliRunner

from edugate.cli.main import app as cli
from edugate.common.web.auth import SessionSigner, UserStore, hash_password, load_or_create_secret, verify_password
from edugate.gateway.config import ConfigError, parse_config
from tests.web.fakes import gateway_app


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app, _, _ = gateway_app(tmp_path)
    return TestClient(app, base_url="http://gw.local", follow_redirects=False)


def log_in(client: TestClient, user: str, password: str | None = None, nxt: str = "/status") -> Response:
    password = password or {"alice": "alice-admin-pw-1", "victor": "victor-viewer-pw-1"}[user]
    return client.post("/login", data={"username": user, "password": password, "next": nxt})


def csrf_of(client: TestClient) -> str:
    html = client.get("/status").text
    return html.split('name="csrf-token" content="')[1].split('"')[0]


def test_without_users_every_page_says_how_to_create_one(tmp_path: Path) -> None:
    app, _, _ = gateway_app(tmp_path, users=False)
    client = TestClient(app, follow_redirects=False)
    for path in ("/status", "/live", "/admin", "/login"):
        answer = client.get(path)
        assert answer.status_code == 503, path
        assert "edugate web-user add NAME --role admin --users-file" in answer.text
    assert client.get("/api/status").json()["detail"].startswith("No user can log in yet")
    assert client.post("/login", data={"username": "admin", "password": "admin"}).status_code == 503
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/static/style.css").status_code == 200


def test_login_sets_a_strict_http_only_cookie_and_goes_where_asked(client: TestClient) -> None:
    answer = client.get("/live?room=lab-1")
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Flive%3Froom%3Dlab-1"
    assert client.get("/api/status").status_code == 401
    answer = log_in(client, "victor", nxt="/live?room=lab-1")
    assert answer.status_code == 303 and answer.headers["location"] == "/live?room=lab-1"
    cookie = answer.headers["set-cookie"]
    assert "edugate_gateway_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/api/status").json()["school"] == "thcs-fake"
    assert log_in(client, "victor", nxt="//evil.example/x").headers["location"] == "/status"  # no open redirect


def test_wrong_passwords_are_refused_then_throttled(client: TestClient) -> None:
    assert log_in(client, "alice", "wrong").status_code == 401
    assert log_in(client, "nobody", "wrong").status_code == 401
    for _ in range(3):
        log_in(client, "alice", "wrong")
    answer = log_in(client, "alice")  # the right password, but too many failures from this address
    assert answer.status_code == 429 and "Too many failed attempts" in answer.text
    assert "set-cookie" not in answer.headers


def test_a_forged_or_stale_session_is_refused(client: TestClient, tmp_path: Path) -> None:
    log_in(client, "alice")
    good = client.cookies["edugate_gateway_session"]
    body, mac = good.split(".")
    client.cookies["edugate_gateway_session"] = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac
    assert client.get("/api/status").status_code == 401
    client.cookies["edugate_gateway_session"] = good
    assert client.get("/api/status").status_code == 200
    store = UserStore(tmp_path / "users.json")
    doc = json.loads(store.path.read_text())
    doc["users"]["alice"]["password"] = hash_password("a-new-password", n=16)
    store.path.write_text(json.dumps(doc))
    os.utime(store.path, ns=(1, 1))  # a different stamp, even within the same clock tick
    assert client.get("/api/status").status_code == 401  # a new password ends old sessions


def test_a_viewer_cannot_run_admin_actions(client: TestClient) -> None:
    log_in(client, "victor")
    token = csrf_of(client)
    assert client.get("/admin").status_code == 403
    answer = client.post("/api/actions/ping", headers={"X-CSRF-Token": token})
    assert answer.status_code == 403 and answer.json() == {"detail": "admins only"}
    assert ">Admin<" not in client.get("/status").text


def test_admin_actions_need_the_csrf_token_and_the_same_origin(tmp_path: Path) -> None:
    app, _, ran = gateway_app(tmp_path)
    client = TestClient(app, base_url="http://gw.local", follow_redirects=False)
    log_in(client, "alice")
    token = csrf_of(client)
    assert client.post("/api/actions/ping").status_code == 403
    assert client.post("/api/actions/ping", headers={"X-CSRF-Token": "x" * 32}).status_code == 403
    assert client.post("/api/actions/ping", headers={"X-CSRF-Token": token,
                                                     "Origin": "http://evil.example"}).status_code == 403
    assert ran == []
    answer = client.post("/api/actions/ping", headers={"X-CSRF-Token": token, "Origin": "http://gw.local"})
    assert answer.json() == {"ok": True, "message": "pong"} and ran == ["ping"]
    form = client.post("/api/actions/ping", data={"csrf": token})  # the admin page's form, without JavaScript
    assert form.status_code == 200 and "pong" in form.text
    assert client.post("/api/actions/nope", headers={"X-CSRF-Token": token}).status_code == 404


def test_logout_needs_the_token_and_clears_the_cookie(client: TestClient) -> None:
    log_in(client, "victor")
    token = csrf_of(client)
    assert client.post("/logout").status_code == 403
    answer = client.post("/logout", data={"csrf": token})
    assert answer.status_code == 303 and 'edugate_gateway_session=""' in answer.headers["set-cookie"]


def test_pages_send_security_headers(client: TestClient) -> None:
    log_in(client, "victor")
    headers = client.get("/status").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert "no-store" not in client.get("/static/live.js").headers.get("cache-control", "")


def test_data_endpoints(client: TestClient) -> None:
    log_in(client, "victor")
    history = client.get("/api/history?device=lab1-th").json()
    assert history["values"]["temperature"] == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert client.get("/api/history?device=door-9").status_code == 404
    assert client.get("/api/history?device=../x").status_code == 422
    everything = client.get("/api/export.csv")  # neither device nor room: every device
    assert 'filename="edugate-thcs-fake-all-' in everything.headers["content-disposition"]
    answer = client.get("/api/export.csv?room=lab-1")
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.text.splitlines()[0] == "time,ts_ms,device,room,humidity,temperature"
    assert len(answer.text.splitlines()) == 6
    devices = {d["id"]: d for d in client.get("/api/devices").json()}
    assert devices["lab1-th"]["thresholds"] == {"temperature": {"min": 18.0, "max": 30.0}}
    page = client.get("/status").text
    assert 'data-device="door-1"' in page and "cannot connect" in page
    assert client.get("/live?room=nowhere").status_code == 404


def test_a_broken_users_file_is_reported(tmp_path: Path) -> None:
    app, _, _ = gateway_app(tmp_path)
    (tmp_path / "users.json").write_text("{not json")
    answer = TestClient(app).get("/login")
    assert answer.status_code == 503 and "The users file is broken" in answer.text


def test_users_file_and_secret_are_private(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "u" / "users.json")
    store.add("ops.1", "admin", "long enough")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.authenticate("ops.1", "long enough") is not None
    assert store.authenticate("ops.1", "wrong") is None
    stored = store.get("ops.1")
    assert stored is not None and stored.password_hash.startswith("scrypt$16384$8$1$")
    assert verify_password("long enough", stored.password_hash) and not verify_password("x", "md5$abc")
    with pytest.raises(ValueError, match="exists"):
        store.add("ops.1", "viewer", "long enough")
    with pytest.raises(ValueError, match="at least 8"):
        store.add("ops.2", "viewer", "short")
    with pytest.raises(ValueError, match="user names"):
        store.add("Bad Name", "viewer", "long enough")
    secret = load_or_create_secret(tmp_path / "s" / "web-session.key")
    assert load_or_create_secret(tmp_path / "s" / "web-session.key") == secret
    assert stat.S_IMODE((tmp_path / "s" / "web-session.key").stat().st_mode) == 0o600
    assert SessionSigner(secret).read("garbage", store) is None


def test_web_user_command(tmp_path: Path) -> None:
    runner = CliRunner()
    users = tmp_path / "users.json"
    pw = tmp_path / "pw"
    pw.write_text("a-good-password\n")
    result = runner.invoke(cli, ["web-user", "add", "ops", "--role", "admin", "--password-file", str(pw),
                                 "--users-file", str(users)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["web-user", "add", "teacher", "--password-file", "-", "--users-file", str(users)],
                           input="another-password\n")
    assert result.exit_code == 0, result.output
    listed = runner.invoke(cli, ["web-user", "list", "--users-file", str(users)]).output
    assert listed == "ops\tadmin\nteacher\tviewer\n"
    assert runner.invoke(cli, ["web-user", "add", "x", "--role", "root", "--password-file", str(pw),
                               "--users-file", str(users)]).exit_code == 2
    assert runner.invoke(cli, ["web-user", "list"]).exit_code == 2  # neither --config nor --users-file
    assert runner.invoke(cli, ["web-user", "remove", "teacher", "--users-file", str(users)]).exit_code == 0
    assert set(UserStore(users).users()) == {"ops"}


def test_web_config_section() -> None:
    base = "school: s\ngateway: g\ndevices:\n  - {id: lab1-th, driver: synthetic}\n"
    cfg = parse_config(base + "web:\n  enabled: true\n  host: 192.168.10.5\n  thresholds:\n"
                       "    lab1-th: {temperature: {min: 18, max: 30}}\n")
    assert cfg.web.enabled and cfg.web.port == 8080 and cfg.web.thresholds["lab1-th"]["temperature"].max == 30
    assert parse_config(base).web.host == "127.0.0.1" and not parse_config(base).web.enabled
    for bad, message in (("web: {thresholds: {lab9: {t: {max: 1}}}}", "unknown device(s) 'lab9'"),
                         ("web: {thresholds: {lab1-th: {t: {min: 5, max: 1}}}}", "min (5) is greater than max (1)"),
                         ("web: {port: 0}", "greater than or equal to 1"),
                         ("web: {enable: true}", "unknown key")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_config(base + bad + "\n")
