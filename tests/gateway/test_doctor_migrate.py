"""Schema versions (issue 19): the config and the outbox carry one; an EduGate refuses a file written by a newer one
with a message saying so (``edugate check``/``run``, the outbox, ``edugate migrate``), and ``edugate migrate``
records the version in files from before versions were recorded, changing nothing else."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edugate.common.yamlconfig import ConfigError
from edugate.gateway.config import SCHEMA_VERSION, load_config
from edugate.gateway.runtime.outbox import SCHEMA_VERSION as OUTBOX_VERSION
from edugate.gateway.runtime.outbox import Outbox, OutboxSchemaError
from tests.helpers import REPO

CONFIG = """# the IT room's gateway
# (comments stay where they are)

school: test-school
gateway: gw-1
storage:
  path: data/outbox.sqlite
privacy:
  secret_file: data/school.key
"""


def edugate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edugate.cli.main", *args], capture_output=True, text=True, cwd=REPO)


def outbox_version(path: Path) -> int | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return row[0] if row else None


def test_a_config_from_a_newer_edugate_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("schema_version: 2\n" + CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}:1: schema_version: schema version 2: this EduGate reads version "
                                 f"{SCHEMA_VERSION}, the file was written for a newer EduGate: install that version")
    check = edugate("check", str(path))
    assert check.returncode != 0 and "written for a newer EduGate" in check.stderr + check.stdout


async def test_an_outbox_from_a_newer_edugate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, budget_bytes=1 << 20)
    await box.close()
    assert outbox_version(path) == OUTBOX_VERSION  # a new outbox records its version
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (OUTBOX_VERSION + 1,))
    with pytest.raises(OutboxSchemaError, match=f"outbox schema version {OUTBOX_VERSION + 1} was written by a "
                       f"newer EduGate; this one reads up to version {OUTBOX_VERSION}"):
        await Outbox.open(path, budget_bytes=1 << 20)
    assert outbox_version(path) == OUTBOX_VERSION + 1  # left as it was


def test_the_gateway_refuses_to_run_on_a_newer_outbox(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(CONFIG)
    (tmp_path / "data").mkdir()
    asyncio.run(_new_outbox(tmp_path / "data" / "outbox.sqlite", version=OUTBOX_VERSION + 1))
    run = edugate("run", str(tmp_path / "gateway.yaml"))
    assert run.returncode == 2
    assert "was written by a newer EduGate" in run.stderr and "Traceback" not in run.stderr


async def _new_outbox(path: Path, version: int | None) -> None:
    box = await Outbox.open(path, budget_bytes=1 << 20)
    await box.close()
    with sqlite3.connect(path) as conn:
        if version is None:  # as an outbox made before versions were recorded
            conn.execute("DELETE FROM meta WHERE key='schema_version'")
        else:
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))


def test_migrate_records_the_versions_in_older_files_and_changes_nothing_else(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    config.chmod(0o640)
    (tmp_path / "data").mkdir()
    box = tmp_path / "data" / "outbox.sqlite"
    asyncio.run(_new_outbox(box, version=None))
    with sqlite3.connect(box) as conn:
        conn.execute("INSERT INTO events (seq, payload) VALUES (41, x'7b7d')")  # a record waiting to be sent

    check = edugate("migrate", "--check", str(config))
    assert check.returncode == 1, check.stdout + check.stderr
    assert "no version recorded -> version 1: would be migrated" in check.stdout
    assert config.read_text() == CONFIG and outbox_version(box) is None

    done = edugate("migrate", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{config}: no version recorded -> version 1: migrated" in done.stdout
    assert f"{box}: no version recorded -> version 1: migrated" in done.stdout
    assert config.read_text() == CONFIG.replace("\nschool:", "\nschema_version: 1\nschool:")
    assert config.stat().st_mode & 0o777 == 0o640
    assert outbox_version(box) == 1
    with sqlite3.connect(box) as conn:
        assert conn.execute("SELECT seq FROM events").fetchall() == [(41,)]

    again = edugate("migrate", str(config))
    assert again.returncode == 0
    assert again.stdout.count("schema version 1, up to date") == 2


def test_migrate_refuses_newer_files_and_leaves_them(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("schema_version: 3\n" + CONFIG)
    result = edugate("migrate", str(config))
    assert result.returncode == 2
    assert "schema version 3 was written for a newer EduGate; this one reads up to version 1" in result.stderr
    assert config.read_text().startswith("schema_version: 3\n")

    config.write_text(CONFIG)
    (tmp_path / "data").mkdir()
    box = tmp_path / "data" / "outbox.sqlite"
    asyncio.run(_new_outbox(box, version=OUTBOX_VERSION + 1))
    result = edugate("migrate", str(config))
    assert result.returncode == 2
    assert "outbox schema version 2 was written by a newer EduGate" in result.stderr
    assert outbox_version(box) == OUTBOX_VERSION + 1
