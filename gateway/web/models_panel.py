"""The models panel of the status page: every on-device model, what it scores, and the attendance checks.

From the services' status documents (``Gateway.status()["services"]``): each service's ``models`` (model name
-> the model engine's ``RunnerStatus``: the ``models`` stage and the ``attendance`` checks), the model stage's
``devices`` (what each model scores and what it last said) and the attendance service's ``checks``.
:func:`models_view` turns them into rows for ``templates/_models.html``. Every key may be missing or wrong: the
panel then shows less, never fails the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelRow:
    name: str
    service: str
    state: str  # "loaded" | "failed" | "not loaded"
    version: str
    sha256: str  # the first 12 hex digits (the full one in the title)
    sha256_full: str
    error: str
    calls: int
    overruns: int
    skipped: int
    failures: int
    budget_ms: str
    p50_ms: str
    p99_ms: str
    swaps: int


@dataclass(frozen=True)
class ScoredRow:
    device: str
    model: str
    windows: int
    says: str  # "unusual" / "normal" / "occupied, 23 people" / "empty" / "no window yet"
    warning: bool


@dataclass(frozen=True)
class CheckRow:
    check: str  # "untapped heads" | "card shared"
    method: str  # "model" | "rule"
    why_rule: str
    checked: int
    flagged: int


@dataclass(frozen=True)
class ModelsPanel:
    rows: list[ModelRow]
    scored: list[ScoredRow]
    checks: list[CheckRow]
    loaded: int
    failed: int
    queued: int
    dropped: int
    unscored: int


def models_view(services: Mapping[str, Any] | None) -> ModelsPanel | None:
    """The panel, or None when no service runs or checks anything with a model."""
    services = services if isinstance(services, Mapping) else {}
    rows = []
    for service, info in sorted(services.items()):
        models = info.get("models") if isinstance(info, Mapping) else None
        for name, m in sorted(models.items()) if isinstance(models, Mapping) else ():
            if isinstance(m, Mapping):
                rows.append(_row(str(name), str(service), m))
    found = services.get("models")
    stage: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    scored = []
    devices = stage.get("devices")
    for device, d in sorted(devices.items()) if isinstance(devices, Mapping) else ():
        if isinstance(d, Mapping):
            scored.append(_scored(str(device), d))
    attendance = services.get("attendance")
    checks_info = attendance.get("checks") if isinstance(attendance, Mapping) else None
    checks = []
    for key, label in (("untapped_heads", "untapped heads"), ("card_shared", "card shared")):
        c = checks_info.get(key) if isinstance(checks_info, Mapping) else None
        if isinstance(c, Mapping):
            checks.append(CheckRow(label, str(c.get("method") or "?"), str(c.get("why_rule") or ""),
                                   _int(c.get("checked")), _int(c.get("flagged"))))
    if not rows and not scored and not checks:
        return None
    return ModelsPanel(rows=rows, scored=scored, checks=checks, loaded=sum(r.state == "loaded" for r in rows),
                       failed=sum(r.state == "failed" for r in rows), queued=_int(stage.get("queued")),
                       dropped=_int(stage.get("dropped")), unscored=_int(stage.get("unscored")))


def _row(name: str, service: str, m: Mapping[str, Any]) -> ModelRow:
    error = str(m.get("error") or "")
    state = "loaded" if m.get("loaded") else "failed" if error else "not loaded"
    sha = str(m.get("sha256") or "")
    return ModelRow(name=name, service=service, state=state, version=str(m.get("version") or ""),
                    sha256=sha[:12], sha256_full=sha, error=error, calls=_int(m.get("calls")),
                    overruns=_int(m.get("overruns")), skipped=_int(m.get("skipped")),
                    failures=_int(m.get("failures")), budget_ms=_ms(m.get("budget_ms")), p50_ms=_ms(m.get("p50_ms")),
                    p99_ms=_ms(m.get("p99_ms")), swaps=_int(m.get("swaps")))


def _scored(device: str, d: Mapping[str, Any]) -> ScoredRow:
    windows = _int(d.get("windows"))
    warning = False
    if not windows:
        says = "no window yet"
    elif d.get("task") == "anomaly":
        warning = bool(d.get("anomalous"))
        score = _number(d.get("last_score"))
        says = ("unusual" if warning else "normal") + (f" (score {score:g})" if score is not None else "")
    elif d.get("occupied"):
        says = f"occupied, {_int(d.get('people'))} people"
    else:
        says = "empty"
    return ScoredRow(device=device, model=str(d.get("model") or ""), windows=windows, says=says, warning=warning)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _int(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0


def _ms(value: Any) -> str:
    number = _number(value)
    return "" if number is None else f"{number:.2f} ms"
