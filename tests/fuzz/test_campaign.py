"""scripts/fuzz.py: a short campaign records inputs and findings per parser and says so in its exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_a_short_campaign_records_counts_per_parser(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "scripts/fuzz.py", "--minutes", "0.05", "--engine", "hypothesis",
                             "--only", "ingest-topic", "--only", "pjlink", "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["engine"] == "hypothesis" and summary["total_findings"] == 0
    rows = {r["parser"]: r for r in summary["parsers"]}
    assert set(rows) == {"ingest-topic", "pjlink"}
    for row in rows.values():
        assert row["inputs"] >= 1000 and row["inputs"] == row["ok"] + row["rejected"] + row["findings"]
    assert "total" in result.stdout and "pjlink" in result.stdout


def test_an_unknown_parser_is_named(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "scripts/fuzz.py", "--only", "nope", "--out", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown parser(s) nope" in result.stderr
