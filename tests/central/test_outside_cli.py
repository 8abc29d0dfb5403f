"""Central's report commands as an outside checker breaks them: odd arguments, an empty or broken store, an
output that cannot be written. Each answer is one clear line and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edugate.central.assets.export import _cell
from edugate.central.eventstore import EventStore
from edugate.cli.main import app as edugate
from edugate.simulators.servers import free_port


def run(*argv: str) -> tuple[int, str]:
    result = CliRunner().invoke(edugate, list(argv))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


@pytest.fixture
def broken_db(tmp_path: Path) -> Path:
    path = tmp_path / "events.sqlite"
    path.write_bytes(b"this is not an SQLite file, whatever its name says\n" * 20)
    return path


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    path = tmp_path / "empty.sqlite"
    EventStore(path).close()
    return path


@pytest.mark.parametrize("which", ["broken", "directory"])
def test_events_on_a_file_that_is_not_an_event_log(which: str, broken_db: Path, tmp_path: Path) -> None:
    db = broken_db if which == "broken" else tmp_path
    code, output = run("events", "--db", str(db))
    assert (code, f"{db}: not a readable event log (" in output) == (2, True), output


def test_events_since_longer_ago_than_1970_is_everything(empty_db: Path) -> None:
    assert run("events", "--db", str(empty_db), "--since", "99999999999999999999d") == (0, "")


def test_library_report_month_without_an_end(tmp_path: Path) -> None:
    code, output = run("library-report", "--month", "9999-12", "--store-url", f"http://127.0.0.1:{free_port()}")
    assert (code, "--month '9999-12' must be YYYY-MM" in output) == (2, True), output


def test_assets_export_to_a_folder_that_does_not_exist(empty_db: Path, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "assets.csv"
    code, output = run("assets", "export", "--csv", str(target), "--db", str(empty_db))
    assert (code, f"--csv {target}: cannot write: No such file or directory" in output) == (2, True), output


@pytest.mark.parametrize("value", ["=HYPERLINK(\"x\")", "\t=1+1", "\r=1+1", "@SUM(A1)", "-2+3"])
def test_a_cell_a_spreadsheet_would_run_is_quoted(value: str) -> None:
    assert _cell(value) == "'" + value


@pytest.mark.parametrize("value", ["-2.5", "+3", "Máy chiếu", ""])
def test_plain_cells_stay(value: str) -> None:
    assert _cell(value) == value
