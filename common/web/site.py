"""What the gateway's pages and central's fleet pages share: login, sessions, roles, CSRF, templates, headers."""

from __future__ import annotations

import logging
import math
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edugate.common.web.audit_log import AuditLog, AuditTrail
from edugate.common.web.auth import LoginThrottle, Session, SessionSigner, User, UsersFileError, UserStore
from edugate.contract import __version__

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SHARED_TEMPLATES = HERE / "templates"
templates = Jinja2Templates(directory=SHARED_TEMPLATES)  # the shared templates only (login, setup, base, ...)
MAX_FORM_BYTES = 8192

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    303: {"description": "Pages: not logged in, redirected to /login"},
    401: {"description": "API: not logged in (or the session expired)"},
    403: {"description": "Admins only, or a missing/wrong CSRF token"},
    503: {"description": "No user can log in yet (the body says how to create one), or the users file is broken"},
}


@dataclass
class SiteAuth:
    """Users, session cookies and login throttling for one site (the gateway's, or central's)."""

    users: UserStore
    signer: SessionSigner
    cookie: str  # distinct per site: cookies do not tell ports apart
    setup_hint: str  # the command that creates the first user
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    audit: AuditLog | None = None  # the admin-actions audit log (common/web/audit_log.py); None: not kept

    def record(self, event: str, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(event, **fields)


@dataclass(frozen=True, slots=True)
class Principal:
    user: User
    session: Session
    csrf: str


class NeedLogin(Exception):
    pass


class NoUsers(Exception):
    pass


class Forbidden(Exception):
    pass


class BadCsrf(Exception):
    pass


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def site_templates(template_dirs: Sequence[Path] = ()) -> Jinja2Templates:
    """Templates looked up in ``template_dirs`` first (in order), then in the shared ones (``base.html``, login...)."""
    if not template_dirs:
        return templates
    return Jinja2Templates(directory=[*template_dirs, SHARED_TEMPLATES])


def build_site(title: str, auth: SiteAuth, home: str, nav: list[tuple[str, str]],
               template_dirs: Sequence[Path] = ()) -> FastAPI:
    """A FastAPI app with the login pages, the error handlers and the static files; the caller adds its pages.

    ``template_dirs``: the caller's own template folders (its pages extend the shared ``base.html``); searched
    before the shared folder, so :func:`page` finds both the caller's templates and the shared ones.
    """
    app = FastAPI(title=title, version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  responses=COMMON_RESPONSES)
    app.state.templates = site_templates(template_dirs)
    app.state.auth = auth
    app.state.title = title
    app.state.nav = nav
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(NeedLogin)
    async def _need_login(request: Request, _exc: NeedLogin) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": "log in first"}, status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), status_code=303)

    @app.exception_handler(NoUsers)
    async def _no_users(request: Request, _exc: NoUsers) -> Response:
        detail = f"No user can log in yet. Create the first one on this machine: {auth.setup_hint}"
        if _is_api(request):
            return JSONResponse({"detail": detail}, status_code=503)
        return page(request, "setup.html", None, {"hint": auth.setup_hint}, status_code=503)

    @app.exception_handler(UsersFileError)
    async def _broken_users(request: Request, exc: UsersFileError) -> Response:
        log.error("web: %s", exc)
        detail = f"The users file is broken: {exc}"
        if _is_api(request):
            return JSONResponse({"detail": detail}, status_code=503)
        return page(request, "setup.html", None, {"hint": auth.setup_hint, "broken": str(exc)}, status_code=503)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, _exc: Forbidden) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": "admins only"}, status_code=403)
        return page(request, "forbidden.html", getattr(request.state, "who", None), {}, status_code=403)

    @app.exception_handler(BadCsrf)
    async def _bad_csrf(request: Request, _exc: BadCsrf) -> Response:
        return JSONResponse({"detail": "missing or wrong CSRF token: reload the page and try again"}, status_code=403)

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse(home, status_code=303)

    @app.get("/healthz", summary="Liveness probe (no login, no details)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse, summary="The login form")
    async def login_form(request: Request, next: str = home) -> Response:
        _require_users(auth)
        return page(request, "login.html", None, {"next": _safe_next(next, home), "error": None})

    @app.post("/login", response_class=HTMLResponse, summary="Log in (form: username, password, next)",
              responses={303: {"description": "Logged in: on to 'next'"}, 401: {"description": "Wrong password"},
                         429: {"description": "Too many failed attempts from this address or for this user: "
                                               "wait (Retry-After says how long)"}})
    async def login(request: Request) -> Response:
        _require_users(auth)
        form = await read_form(request)
        nxt = _safe_next(form.get("next", home), home)
        client = request.client.host if request.client else "?"
        name = form.get("username", "")[:40]
        wait = auth.throttle.blocked_for(name, client)
        if wait:
            auth.record("login-refused", user=name, reason="locked after too many failed attempts",
                        retry_after_s=math.ceil(wait), **{"from": client})
            return page(request, "login.html", None, {"next": nxt, "error": f"Too many failed attempts: wait "
                                                      f"{math.ceil(wait)} s and try again."}, status_code=429,
                        headers={"Retry-After": str(math.ceil(wait))})
        user = auth.users.authenticate(form.get("username", ""), form.get("password", ""))
        if user is None:
            locked = auth.throttle.failed(name, client)
            log.warning("web: failed login for %r from %s", name, client)
            auth.record("login-failed", user=name, **{"from": client})
            for key in locked:
                auth.record("login-locked", user=name, reason=f"{key} locked for {auth.throttle.lock_s:.0f} s",
                            **{"from": client})
            return page(request, "login.html", None, {"next": nxt, "error": "Wrong user name or password."},
                        status_code=401)
        auth.throttle.succeeded(name, client)
        log.info("web: %s logged in from %s", user.name, client)
        auth.record("login", user=user.name, role=user.role, **{"from": client})
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(auth.cookie, auth.signer.issue(user), max_age=auth.signer.max_age(), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path="/")
        return response

    @app.post("/logout", summary="Log out (form or header: CSRF token)")
    async def logout(request: Request, who: Annotated[Principal, Depends(current_user)]) -> Response:
        await check_csrf(request, who)
        auth.signer.revoke(who.session)
        auth.record("logout", user=who.user.name, role=who.user.role,
                    **{"from": request.client.host if request.client else "?"})
        request.state.renewed_cookie = None
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.cookie, path="/", httponly=True, samesite="strict")
        return response

    app.add_middleware(SessionRenewal, cookie=auth.cookie)
    if auth.audit is not None:
        app.add_middleware(AuditTrail, audit=auth.audit)
    app.add_middleware(SecurityHeaders)
    return app


def _require_users(auth: SiteAuth) -> None:
    if not auth.users.users():
        raise NoUsers


def _safe_next(target: str, home: str) -> str:
    """Only a path on this site (no scheme, no host, no '//' or backslash tricks)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return home
    return target


async def current_user(request: Request) -> Principal:
    """The logged-in user (a FastAPI dependency); :class:`NoUsers` / :class:`NeedLogin` otherwise."""
    auth: SiteAuth = request.app.state.auth
    _require_users(auth)
    cookie = request.cookies.get(auth.cookie)
    found = auth.signer.read(cookie, auth.users) if cookie else None
    if found is None:
        raise NeedLogin
    session, user = found
    request.state.who = Principal(user, session, auth.signer.csrf_token(session))
    renewed = auth.signer.renewed(session, user)
    if renewed is not None:  # the idle clock restarts; SessionRenewal sends the new cookie
        request.state.renewed_cookie = (renewed, auth.signer.max_age(session),
                                        request.url.scheme == "https")
    return request.state.who


async def admin_user(who: Annotated[Principal, Depends(current_user)]) -> Principal:
    if not who.user.is_admin:
        raise Forbidden
    return who


Viewer = Annotated[Principal, Depends(current_user)]
Admin = Annotated[Principal, Depends(admin_user)]


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form body (a bigger one, or another type, reads as empty)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


async def check_csrf(request: Request, who: Principal) -> dict[str, str]:
    """Check the CSRF token (header ``X-CSRF-Token`` or form field ``csrf``) and the Origin; return the form."""
    auth: SiteAuth = request.app.state.auth
    origin = request.headers.get("origin")
    if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != request.headers.get("host"):
        raise BadCsrf
    form = await read_form(request)
    token = request.headers.get("x-csrf-token") or form.get("csrf")
    if not auth.signer.check_csrf(who.session, token):
        raise BadCsrf
    return form


def page(request: Request, template: str, who: Principal | None, context: dict[str, Any],
         status_code: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    app = request.app
    site_tpl: Jinja2Templates = getattr(app.state, "templates", templates)
    return site_tpl.TemplateResponse(request, template, {
        "title": app.state.title, "nav": app.state.nav if who else [], "who": who, "path": request.url.path,
        "version": __version__, **context}, status_code=status_code, headers=headers)


class SessionRenewal:
    """Sends the renewed session cookie that :func:`current_user` left in ``request.state.renewed_cookie``
    (pure ASGI, so streaming responses stay streaming)."""

    def __init__(self, app: ASGIApp, cookie: str) -> None:
        self.app = app
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            renewed = scope.get("state", {}).get("renewed_cookie")
            if message["type"] == "http.response.start" and renewed:
                value, max_age, secure = renewed
                header = Response()
                header.set_cookie(self.cookie, value, max_age=max_age, httponly=True, samesite="strict",
                                  secure=secure, path="/")
                message["headers"] = [*message.get("headers", []),
                                      *[h for h in header.raw_headers if h[0] == b"set-cookie"]]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class SecurityHeaders:
    """Adds the security headers to every response (pure ASGI, so streaming responses stay streaming)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in SECURITY_HEADERS if h[0] not in names and not (static and h[0] == b"cache-control")]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
