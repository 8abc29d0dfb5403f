"""Security events to syslog (RFC 5424): real UDP and TCP listeners on free ports receive the lines, and the test
parses each one with the RFC's grammar (header, structured data, BOM + message)."""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edugate.common.security_events import classify_line, security_event
from edugate.common.syslog5424 import Rfc5424Handler, SyslogConfig, install_syslog, parse_target
from tests.helpers import wait_for

# RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG]
LINE = re.compile(r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>[\x21-\x7e]{1,255}) (?P<app>[\x21-\x7e]{1,48}) "
                  r"(?P<procid>[\x21-\x7e]{1,128}) (?P<msgid>[\x21-\x7e]{1,32}) "
                  r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$", re.S)
PARAM = re.compile(r'([^= \]"]+)="((?:[^"\\]|\\.)*)"')


def parse(line: str) -> dict[str, object]:
    found = LINE.match(line)
    assert found, f"not RFC 5424: {line!r}"
    sd = found["sd"]
    sd_id = sd[1:].split(" ", 1)[0]
    params = {k: re.sub(r"\\(.)", r"\1", v) for k, v in PARAM.findall(sd)}
    msg = found["msg"] or ""
    assert msg.startswith("\ufeff"), "a UTF-8 MSG starts with the BOM"
    stamp = datetime.datetime.fromisoformat(found["ts"].replace("Z", "+00:00"))
    return {"pri": int(found["pri"]), "ts": stamp, "host": found["host"], "app": found["app"],
            "procid": found["procid"], "msgid": found["msgid"], "sd_id": sd_id, "params": params, "msg": msg[1:]}


@contextlib.contextmanager
def handler_on(cfg: SyslogConfig) -> Iterator[Rfc5424Handler]:
    logger, security = logging.getLogger("edugate"), logging.getLogger("edugate.security")
    levels = logger.level, security.level
    logger.setLevel(logging.WARNING)  # as with --log-level WARNING: the INFO security events are still sent
    handler = install_syslog(cfg)
    assert handler is not None
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(levels[0])
        security.setLevel(levels[1])


def test_security_events_reach_a_udp_collector_as_rfc5424_and_nothing_else_does() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        cfg = SyslogConfig(target=f"udp://127.0.0.1:{port}", facility="auth", hostname="gw-thpt-lqd-1")
        with handler_on(cfg):
            logging.getLogger("edugate.gateway.runtime.pipeline").warning("a device is slow")  # not security
            security_event("web-login-failed", 'bad password for "alice" from 10.0.0.7', user='al"ice]',
                           **{"from": "10.0.0.7"})
            logging.getLogger("edugate.gateway.downlink.commands").warning(
                "command rejected (%s) on %r, id %r: %s", "bad-signature", "edu/v1/s/g/cmd/reload", "c-1",
                "no trusted key verifies the signature")
            first = parse(listener.recv(65535).decode("utf-8"))
            second = parse(listener.recv(65535).decode("utf-8"))
            listener.settimeout(0.2)
            with pytest.raises(TimeoutError):
                listener.recv(65535)  # the pipeline's warning was never sent
    assert first["pri"] == 4 * 8 + 4  # facility auth, severity warning
    assert first["host"] == "gw-thpt-lqd-1" and first["app"] == "edugate" and first["msgid"] == "web-login-failed"
    assert first["sd_id"] == "edugate@32473"
    assert first["params"] == {"kind": "web-login-failed", "user": 'al"ice]', "from": "10.0.0.7",
                               "logger": "edugate.security"}
    assert first["msg"] == 'web-login-failed: bad password for "alice" from 10.0.0.7'
    age = datetime.datetime.now(datetime.UTC) - first["ts"]  # type: ignore[operator]
    assert datetime.timedelta(0) <= age < datetime.timedelta(seconds=10)
    assert second["msgid"] == "command-refused"
    assert second["params"]["code"] == "bad-signature"  # type: ignore[index]
    assert "no trusted key verifies" in str(second["msg"])


def test_a_tcp_collector_gets_octet_counted_frames_and_a_restarted_one_gets_the_next_events() -> None:
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:  # the test closed the server
                return
            with conn, contextlib.suppress(ConnectionError):
                data = b""
                while chunk := conn.recv(65535):
                    data += chunk
                    while b" " in data:
                        length, rest = data.split(b" ", 1)
                        if len(rest) < int(length):
                            break
                        received.append(rest[:int(length)])
                        data = rest[int(length):]
                        if received[-1].endswith(b"hang up"):
                            return conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with handler_on(SyslogConfig(target=f"tcp://127.0.0.1:{port}")) as handler:
            security_event("web-login-locked", "addr:10.0.0.7 locked for 300 s", user="alice")
            security_event("web-action", "alice: POST /api/actions/x (200)", level=logging.INFO, status=200)
            security_event("web-action", "hang up", level=logging.INFO)
            wait_for(lambda: len(received) == 3, 5, "three frames")
            thread.join(5)
            thread = threading.Thread(target=serve, daemon=True)  # the collector comes back
            thread.start()

            def send_one_more() -> bool:  # the first sends after the hang-up are lost (the handler learns it then)
                security_event("web-login-failed", "after the restart", user="bob")
                return len(received) > 3

            wait_for(send_one_more, 5, "an event delivered after the collector came back", interval=0.1)
            assert handler.dropped >= 1
    finally:
        stop.set()
        thread.join(5)
        server.close()
    lines = [parse(r.decode("utf-8")) for r in received]
    assert [line["msgid"] for line in lines[:3]] == ["web-login-locked", "web-action", "web-action"]
    assert lines[0]["pri"] == 4 * 8 + 4 and lines[1]["pri"] == 4 * 8 + 6
    assert lines[1]["params"]["status"] == "200"  # type: ignore[index]
    assert lines[-1]["msg"] == "web-login-failed: after the restart"


def test_targets_are_checked_with_a_clear_message() -> None:
    assert parse_target("unix:///dev/log") == ("unix", "/dev/log")
    assert parse_target("udp://syslog.hcm.edu.vn:514") == ("udp", ("syslog.hcm.edu.vn", 514))
    for bad in ("syslog.hcm.edu.vn:514", "udp://host", "tcp://host:notaport", "http://host:80", "unix:dev/log"):
        with pytest.raises(ValueError, match=r"expected unix:///path/to/socket, udp://HOST:PORT or tcp://HOST:PORT"):
            parse_target(bad)


def test_security_lines_are_recognised_in_a_text_log() -> None:
    assert classify_line("2026-12-01 08:00:01,123 WARNING edugate.security: web-login-failed: x from 1.2.3.4") == {
        "kind": "web-login-failed"}
    assert classify_line("2026-12-01 08:00:02,000 WARNING edugate.gateway.downlink.commands: command rejected "
                         "(expired) on 'edu/v1/s/g/cmd/reload', id 'c': expired")["kind"] == "command-refused"  # type: ignore[index]
    assert classify_line("2026-12-01 08:00:03,000 ERROR edugate.gateway.runtime.uplink: the broker keeps closing "
                         "the connection right after accepting it: it refuses what this gateway publishes (ACL). "
                         "Is ...")["kind"] == "acl-refused"  # type: ignore[index]
    assert classify_line("2026-12-01 08:00:04,000 INFO edugate.gateway.runtime.uplink: uplink connected") is None


def test_the_gateway_config_takes_a_syslog_section_and_a_bad_target_is_a_clear_error(tmp_path: Path) -> None:
    from edugate.gateway.config import ConfigError, load_config

    path = tmp_path / "gw.yaml"
    path.write_text("school: s1\ngateway: g1\nsyslog:\n  target: udp://siem.example:514\n  facility: local4\n")
    cfg = load_config(path)
    assert cfg.syslog is not None and cfg.syslog.target == "udp://siem.example:514"
    path.write_text("school: s1\ngateway: g1\nsyslog:\n  target: siem.example:514\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}:4: syslog.target:" in str(caught.value) and "udp://HOST:PORT" in str(caught.value)
