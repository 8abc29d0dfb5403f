"""Pseudonyms on the gateway: keyed, stable, hiding the UID; audited re-identification."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edugate.common.privacy import KeyFileError, Pseudonymizer, load_or_create_key, normalise_uid


def test_pseudonyms_are_keyed_stable_and_hide_the_uid(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k" / "school.key")
    assert stat.S_IMODE((tmp_path / "k" / "school.key").stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "k" / "school.key") == key  # read back, not regenerated
    uid = normalise_uid("04:a2:2b:1c")
    assert uid == bytes.fromhex("04a22b1c") == normalise_uid("0x04A22B1C")
    p1, p2 = Pseudonymizer(key), Pseudonymizer(load_or_create_key(tmp_path / "other.key"))
    assert p1(uid) == p1(uid) and p1(uid) != p2(uid)
    assert p1(uid).startswith("p1-") and len(p1(uid)) == 35
    assert "04a22b1c" not in p1(uid) and key.hex() not in repr(p1)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "school.key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)




def test_reidentification_cli_prints_pseudonyms_and_audits(tmp_path: Path) -> None:
    import subprocess
    import sys

    key_path = tmp_path / "school.key"
    key = load_or_create_key(key_path)
    (tmp_path / "roster.csv").write_text("student_id,uid\nHS001,04:A2:2B:1C\n")
    result = subprocess.run([sys.executable, "-m", "edugate.cli.main", "pseudonym", "--key", str(key_path),
                             "--purpose", "bus alert check", "--roster", str(tmp_path / "roster.csv")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    expected = Pseudonymizer(key)(bytes.fromhex("04a22b1c"))
    assert result.stdout.splitlines() == ["student_id,pseudonym", f"HS001,{expected}"]
    audit = (tmp_path / "reidentification.log").read_text()
    assert "purpose='bus alert check'" in audit and "count=1" in audit
    assert "a22b1c" not in audit.lower()
    missing = subprocess.run([sys.executable, "-m", "edugate.cli.main", "pseudonym", "--key", str(tmp_path / "nokey"),
                              "--purpose", "x", "04a22b1c"], capture_output=True, text=True)
    assert missing.returncode == 2 and "refusing to create a new key" in missing.stderr
