"""Experiment sessions on the gateway's pages: start and stop on the live readings page, the session list,
one session's plot, and its CSV and JSON downloads.

Every logged-in user may start and stop a session (lab teachers are viewers); both are forms with the CSRF
token (or ``X-CSRF-Token`` with a JSON body), run through the ``sessions`` service's command handlers (the same
as the signed commands ``sessions.start`` / ``sessions.stop``), and logged with the user's name. A gateway
without a ``sessions:`` section shows no session controls and answers 404 here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from edugate.common.web.site import Viewer, check_csrf, page
from edugate.common.web.timefmt import ago, local_time
from edugate.contract.records import SESSION_PATTERN
from edugate.gateway.services.base import Service
from edugate.gateway.services.sessions import Session, SessionError, SessionsService, StartArgs, StopArgs

log = logging.getLogger(__name__)

SessionId = Annotated[str, Path(pattern=SESSION_PATTERN, description="A session id, e.g. s-20261202-140501-3fa2.")]
NO_SESSIONS = {404: {"description": "No such session, or no sessions on this gateway"}}


def session_view(session: Session, tz: str, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    end = session.stopped_at / 1000 if session.stopped_at else now
    return session.meta() | {
        "started": local_time(session.started_at / 1000, tz), "started_ago": ago(session.started_at / 1000, now),
        "stopped": local_time(session.stopped_at / 1000, tz) if session.stopped_at else "",
        "duration": _duration(end - session.started_at / 1000)}


def add_session_routes(app: FastAPI, services: Mapping[str, Service], timezone: str) -> None:
    def sessions() -> SessionsService:
        service = services.get("sessions")
        if not isinstance(service, SessionsService):
            raise HTTPException(404, "no experiment sessions on this gateway (config: sessions: {})")
        return service

    def one(session_id: str) -> tuple[SessionsService, Session]:
        service = sessions()
        session = service.get(session_id)
        if session is None:
            raise HTTPException(404, f"no session {session_id!r} on this gateway")
        return service, session

    def refused(request: Request, who: Any, form: Mapping[str, Any], message: str) -> Response:
        """409 with the reason: the sessions page saying it (a form), or JSON (the API)."""
        if form.get("csrf"):
            listed = [session_view(s, timezone) for s in sessions().listing()]
            return page(request, "sessions.html", who, {"sessions": listed, "error": message}, status_code=409)
        return JSONResponse({"detail": message}, status_code=409)

    @app.get("/sessions", response_class=HTMLResponse, summary="Experiment sessions (lab teachers)",
             responses=NO_SESSIONS)
    async def sessions_page(request: Request, who: Viewer) -> Response:
        listed = [session_view(s, timezone) for s in sessions().listing()]
        return page(request, "sessions.html", who, {"sessions": listed})

    @app.get("/sessions/{session_id}", response_class=HTMLResponse, summary="One session: plot and downloads",
             responses=NO_SESSIONS)
    async def session_page(request: Request, who: Viewer, session_id: SessionId) -> Response:
        _, session = one(session_id)
        view = session_view(session, timezone)
        return page(request, "session.html", who, {"s": view, "config": {
            "session": session.id, "running": session.running, "timezone": timezone, "devices": session.devices}})

    @app.get("/api/sessions", summary="Every session kept on this gateway, newest first", responses=NO_SESSIONS)
    async def api_sessions(who: Viewer) -> list[dict[str, Any]]:
        return [s.meta() for s in sessions().listing()]

    @app.get("/api/sessions/{session_id}/data", summary="A session's readings for the plot", responses=NO_SESSIONS)
    async def api_session_data(who: Viewer, session_id: SessionId,
                               after: Annotated[int, Query(ge=0, description="'next' of the previous answer: "
                                                           "only the rows recorded since.")] = 0,
                               ) -> dict[str, Any]:
        service, _ = one(session_id)
        return service.series(session_id, after)

    @app.get("/api/sessions/{session_id}.csv", summary="Download a session's readings as CSV",
             response_class=Response, responses={200: {"content": {"text/csv": {}}}, **NO_SESSIONS})
    async def session_csv(who: Viewer, session_id: SessionId) -> Response:
        service, session = one(session_id)
        return Response(service.csv(session_id), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{session.id}.csv"'})

    @app.get("/api/sessions/{session_id}.json", summary="Download a session's metadata as JSON",
             responses=NO_SESSIONS)
    async def session_json(who: Viewer, session_id: SessionId) -> Response:
        _, session = one(session_id)
        return Response(json.dumps(session.meta() | {"timezone": timezone}, indent=1),
                        media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{session.id}.json"'})

    @app.post("/api/sessions", summary="Start a session (any logged-in user; CSRF token needed)",
              responses={409: {"description": "A device is in another session, or unknown"}, **NO_SESSIONS})
    async def start(request: Request, who: Viewer) -> Response:
        form = await _form_or_json(request, who)
        service = sessions()
        devices = form.get("devices")
        if isinstance(devices, str):
            devices = [d for d in devices.split(",") if d]
        try:
            args = StartArgs(name=str(form.get("name") or ""), devices=devices or [], by=who.user.name)
            session = await service.commands()["sessions.start"].handler(args)
        except SessionError as exc:
            return refused(request, who, form, str(exc))
        except ValidationError as exc:  # no name, no device ticked
            return refused(request, who, form, "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()))
        log.info("session %s started on the live page by %s (%s)", session["id"], who.user.name, who.user.role)
        if form.get("csrf"):
            return RedirectResponse(f"/sessions/{session['id']}", status_code=303)
        return JSONResponse(session, status_code=201)

    @app.post("/api/sessions/{session_id}/stop", summary="Stop a session (any logged-in user; CSRF token needed)",
              responses={409: {"description": "Stopped already"}, **NO_SESSIONS})
    async def stop(request: Request, who: Viewer, session_id: SessionId) -> Response:
        form = await _form_or_json(request, who)
        service, _ = one(session_id)
        try:
            session = await service.commands()["sessions.stop"].handler(StopArgs(session=session_id,
                                                                                 by=who.user.name))
        except SessionError as exc:
            return refused(request, who, form, str(exc))
        log.info("session %s stopped by %s (%s)", session_id, who.user.name, who.user.role)
        if form.get("csrf"):
            return RedirectResponse(f"/sessions/{session_id}", status_code=303)
        return JSONResponse(session)


async def _form_or_json(request: Request, who: Any) -> dict[str, Any]:
    """The urlencoded form (a checkbox ``dev_<id>`` per device), or a JSON body; the CSRF token checked either way."""
    if request.headers.get("content-type", "").startswith("application/json"):
        await check_csrf(request, who)
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise HTTPException(422, "the body is not JSON") from None
        return body if isinstance(body, dict) else {}
    form: dict[str, Any] = dict(await check_csrf(request, who))
    devices = sorted(k.removeprefix("dev_") for k, v in form.items() if k.startswith("dev_") and v)
    return form | ({"devices": devices} if devices else {})


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")
