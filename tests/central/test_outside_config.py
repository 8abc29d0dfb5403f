"""central.yaml as an outside checker breaks it: every problem is ``file:line: message``, exit code 2, no
traceback, and no secret (a password in a URL or a PostgreSQL DSN) in anything printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edugate.central.urls import redacted
from edugate.cli.main import app as edugate
from edugate.simulators.servers import free_port

SECRET = "S3cretPW"


def run(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(edugate, list(argv))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize("command", [["central-check"], ["ingest", "--client-id", "x", "--config"],
                                     ["api", "--config"]])
@pytest.mark.parametrize("text,line,message", [
    ("- a\n- b\n", 1, "the file must be a YAML mapping"),
    ("store:\n  url: http://127.0.0.1:8428\nbogus: 1\n", 3, "bogus: unknown key"),
    (f"store:\n  url: http://edu:{SECRET}@127.0.0.1:8428\n", 2, "store.url: 'http://edu:***@127.0.0.1:8428': no "
     "credentials in the URL"),
    (f"push:\n  url: https://edu:{SECRET}@warehouse.example/in\n", 2, "push.url: 'https://edu:***@warehouse."),
    (f"events:\n  postgres_dsn: \"host=db 'unterminated password={SECRET}\"\n", 2,
     "events.postgres_dsn: not a PostgreSQL connection string"),
])
def test_bad_files_say_file_line_and_never_the_secret(tmp_path: Path, command: list[str], text: str, line: int,
                                                      message: str) -> None:
    path = tmp_path / "central.yaml"
    path.write_text(text)
    code, output = run(*command, str(path))
    assert code == 2, output
    assert f"{path}:{line}: " in output and message in output, output
    assert SECRET not in output and "Traceback" not in output


def test_not_utf8_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "central.yaml"
    path.write_bytes(b"store:\n  url: http://x\xff\n")
    code, output = run("central-check", str(path))
    assert (code, f"{path}:2: not UTF-8 text" in output) == (2, True), output


def test_status_line_names_the_postgresql_event_log_without_its_password(tmp_path: Path) -> None:
    path = tmp_path / "central.yaml"
    path.write_text(f'events:\n  postgres_dsn: "postgresql://edu:{SECRET}@127.0.0.1:5432/edugate"\n')
    code, output = run("central-check", str(path))
    assert code == 0 and "event log PostgreSQL 127.0.0.1:5432/edugate" in output, output
    assert SECRET not in output


def test_ingest_with_the_event_database_down_says_so_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "central.yaml"
    path.write_text(f'events:\n  postgres_dsn: "postgresql://edu:{SECRET}@127.0.0.1:{free_port()}/edugate"\n')
    code, output = run("ingest", "--client-id", "outside", "--config", str(path))
    assert code == 1, output
    assert "events.postgres_dsn: event database 127.0.0.1:" in output and "not started" in output, output
    assert SECRET not in output and "Traceback" not in output


@pytest.mark.parametrize("url,shown", [("http://u:pw@h:1/x", "http://u:***@h:1/x"), ("http://h:1", "http://h:1"),
                                       ("http://u@h", "http://u@h"), ("http://[::1", "<unparsable URL>")])
def test_redacted(url: str, shown: str) -> None:
    assert redacted(url) == shown
