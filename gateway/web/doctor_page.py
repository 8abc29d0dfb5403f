"""The doctor page: ``/doctor`` runs ``edugate doctor --json`` on the gateway's own config and shows each check
with its verdict and its fix in plain words; the status page links each problem it shows to the check here that
explains it (issue 19: "the status page links each problem it shows to the doctor check that explains it").

The doctor runs as a subprocess: its checks open serial ports, listen to devices for seconds and connect to the
brokers, none of which may hold up the gateway's event loop. One run at a time; a result is reused for
:data:`FRESH_S` seconds unless the page asks for a new one. Admins only (it names files and their permissions).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from edugate.common.web.site import Admin, page

log = logging.getLogger(__name__)

FRESH_S = 30.0  # a doctor's result is reused this long
TIMEOUT_S = 90.0  # a doctor that takes longer is stopped
DoctorRun = Callable[[], Awaitable[dict[str, Any]]]


def anchor(check: str) -> str:
    """The page anchor of a check (``device:lab-1`` -> ``check-device-lab-1``)."""
    return "check-" + re.sub(r"[^a-z0-9_-]+", "-", check.lower()).strip("-")


def doctor_link(check: str) -> str:
    return f"/doctor#{anchor(check)}"


def subprocess_doctor(config_path: Path, *, device_timeout_s: float = 2.0) -> DoctorRun:
    """Run ``python -m edugate.cli doctor --json CONFIG`` and return its JSON (its exit code is the verdict)."""

    async def run() -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edugate.cli", "doctor", "--json", "--timeout", str(device_timeout_s),
            str(config_path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"the doctor took more than {TIMEOUT_S:.0f} s and was stopped") from None
        try:
            result: dict[str, Any] = json.loads(out)
        except ValueError:
            tail = err.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"the doctor failed (exit code {proc.returncode}): {' '.join(tail)}") from None
        return result

    return run


class DoctorCache:
    """The last doctor result, one run at a time."""

    def __init__(self, run: DoctorRun) -> None:
        self._run = run
        self._lock = asyncio.Lock()
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.at = 0.0

    async def get(self, fresh: bool = False) -> None:
        async with self._lock:
            if not fresh and self.at and time.monotonic() - self.at < FRESH_S:
                return
            try:
                self.result, self.error = await self._run(), None
            except (RuntimeError, OSError) as exc:
                log.warning("doctor page: %s", exc)
                self.result, self.error = None, str(exc)
            self.at = time.monotonic()


def doctor_view(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The checks for the page, worst first, each with its anchor."""
    order = {"fail": 0, "warn": 1, "ok": 2}
    checks = [{**c, "anchor": anchor(c["check"])} for c in (result or {}).get("checks", [])]
    return sorted(checks, key=lambda c: order.get(c["verdict"], 3))


def add_doctor_routes(app: FastAPI, run: DoctorRun | None) -> None:
    """``/doctor`` (the page) and ``/api/doctor`` (its JSON); without ``run`` (a gateway whose config file is not
    known, e.g. in tests of other pages) the page says so."""
    cache = DoctorCache(run) if run is not None else None

    @app.get("/doctor", response_class=HTMLResponse, summary="The doctor's checks of this gateway (admins)")
    async def doctor_page(request: Request, who: Admin, fresh: bool = False) -> Response:
        if cache is not None:
            await cache.get(fresh)
        result = cache.result if cache else None
        error = cache.error if cache else "this gateway was started without its config file's path"
        return page(request, "doctor.html", who, {"checks": doctor_view(result), "error": error,
                                                   "verdict": (result or {}).get("verdict")})

    @app.get("/api/doctor", summary="The doctor's checks of this gateway as JSON (admins)")
    async def api_doctor(who: Admin, fresh: bool = False) -> dict[str, Any]:
        if cache is None:
            return {"error": "this gateway was started without its config file's path"}
        await cache.get(fresh)
        return cache.result or {"error": cache.error}
