"""A crash while the school key is made leaves ``school.key.<pid>.new``: the next start deletes such leftovers
(that exact pattern, written before the current process started) and nothing else (HSMALL 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edugate.common.privacy import load_or_create_key, open_school_key, remove_stray_new_keys

CRASH_WHILE_MAKING_THE_KEY = """
import os, sys
from pathlib import Path
from edugate.common import privacy
def crash(*args, **kwargs):  # the power goes after the new key is written, before it is linked into place
    os._exit(9)
privacy.os.link = crash
privacy.open_school_key(Path(sys.argv[1]), None)
"""


def test_a_real_crash_leaves_a_stray_file_that_the_next_start_deletes(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "school.key"
    crashed = subprocess.run([sys.executable, "-c", CRASH_WHILE_MAKING_THE_KEY, str(key)], timeout=60)
    assert crashed.returncode == 9
    strays = list(tmp_path.glob("school.key.*.new"))
    assert len(strays) == 1 and not key.exists(), sorted(p.name for p in tmp_path.iterdir())
    before = psutil.Process().create_time() - 5  # the crash was before this process (the next start) started
    os.utime(strays[0], (before, before))

    pseudonymizer = open_school_key(key, None)
    assert not strays[0].exists(), "the leftover is deleted"
    assert key.exists() and pseudonymizer.key_id
    assert f"{strays[0]}: deleted a key left half-made" in caplog.text
    assert strays[0].name in caplog.text and load_or_create_key(key).hex() not in caplog.text


def test_only_that_exact_pattern_older_than_this_process_is_deleted(tmp_path: Path) -> None:
    key = tmp_path / "school.key"
    load_or_create_key(key)
    old = time.time() - 3600
    names = {
        "school.key.4242.new": True,  # the leftover
        "school.key.4242.new.bak": False,  # not the pattern
        "school.key.x42.new": False,
        "school.key.new": False,
        "other.key.4242.new": False,  # another key's
        "school.key.card-rule": False,
        f"school.key.{os.getpid()}.new": False,  # this process's own (in the middle of making the key)
    }
    for name in names:
        (tmp_path / name).write_text("00" * 32 + "\n")
        os.utime(tmp_path / name, (old, old))
    (tmp_path / "school.key.4343.new").write_text("00")  # written now: another process making the key right now
    (tmp_path / "school.key.4444.new").mkdir()  # not a file
    os.utime(tmp_path / "school.key.4444.new", (old, old))

    assert remove_stray_new_keys(key) == [tmp_path / "school.key.4242.new"]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"school.key", "school.key.4343.new", "school.key.4444.new"} | {n for n, gone in names.items()
                                                                                  if not gone}
    assert remove_stray_new_keys(tmp_path / "no-folder" / "school.key") == []
