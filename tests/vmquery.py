"""Read back what VictoriaMetrics stores (raw samples, not query-time aggregates)."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any


def export(vm_url: str, match: str = '{__name__=~"edugate.*"}') -> list[dict[str, Any]]:
    """Every stored series matching ``match`` with all its raw samples (``/api/v1/export``)."""
    urllib.request.urlopen(f"{vm_url}/internal/force_flush", timeout=10).read()
    query = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(f"{vm_url}/api/v1/export?{query}", timeout=30) as resp:
        body = resp.read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def sample_count(vm_url: str, match: str) -> int:
    return sum(len(series["values"]) for series in export(vm_url, match))
