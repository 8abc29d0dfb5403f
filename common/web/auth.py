"""Who may see the pages: a users file with scrypt hashes, signed session cookies, CSRF tokens.

* Users live in a JSON file (mode 0600) written only by ``edugate web-user``;
  there is no default user and no default password. The file is re-read when
  it changes, so adding or removing a user takes effect without a restart.
* Passwords are hashed with scrypt (n=2^14, r=8, p=1: about 16 MiB and a
  few tens of ms on a Raspberry Pi 4), with a random salt per user.
* A session is a cookie (HttpOnly, SameSite=Strict) holding the user name,
  when it was issued, when it was last used and a random nonce, signed with
  HMAC-SHA256 by a secret kept in the data folder (created on first use, mode
  0600). It ends after ``idle_s`` without a request (30 min) and ``lifetime_s``
  after the login in any case (12 h); the pages renew the cookie's "last used"
  at most once a minute. Logging out revokes the session (in memory: until
  the process restarts, or until the session would have expired anyway). It
  also carries a fingerprint of the user's password hash: changing the
  password or removing the user ends every session of that user. The role is
  looked up in the users file on every request.
* Failed logins are throttled per address and per user name (:class:`LoginThrottle`):
  a locked address or user is refused even with the right password until the
  lock expires.
* State-changing requests (admin actions, logout) need a CSRF token derived
  from the session, sent as the ``X-CSRF-Token`` header or a ``csrf`` form field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
USER_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SESSION_S = 12 * 3600  # absolute: a session ends this long after the login
IDLE_S = 30 * 60  # a session unused this long ends
REFRESH_S = 60  # the "last used" time in the cookie is renewed at most this often


class UsersFileError(ValueError):
    """The users file cannot be read or is not a users file; the message says which and why."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(_unb64(digest)), maxmem=128 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"the password may have at most {MAX_PASSWORD} characters")


class UserStore:
    """The users file. Reads are cached until the file changes; writes are atomic (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, User] = {}
        self._dummy_hash = hash_password(secrets.token_urlsafe(12))

    def users(self) -> dict[str, User]:
        """Name -> user; an absent file means no users. Raises :class:`UsersFileError` on a broken file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsersFileError(f"{self.path}: cannot read: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._users = self._parse()
                self._stamp = stamp
            return dict(self._users)

    def _parse(self) -> dict[str, User]:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsersFileError(f"{self.path}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise UsersFileError(f"{self.path}: not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("users"), dict):
            raise UsersFileError(f"{self.path}: not an EduGate users file (expected version 1 with 'users')")
        out: dict[str, User] = {}
        for name, entry in doc["users"].items():
            if not USER_RE.match(name) or not isinstance(entry, dict) or entry.get("role") not in ROLES \
                    or not isinstance(entry.get("password"), str):
                raise UsersFileError(f"{self.path}: user {name!r}: needs a valid name, 'role' (admin or viewer) "
                                     "and 'password' (a hash)")
            out[name] = User(name, entry["role"], entry["password"])
        return out

    def get(self, name: str) -> User | None:
        return self.users().get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right; the same work is done for unknown names."""
        user = self.get(name) if USER_RE.match(name) else None
        ok = verify_password(password, user.password_hash if user else self._dummy_hash)
        return user if ok and user is not None else None

    def add(self, name: str, role: Role, password: str, *, replace: bool = False) -> User:
        if not USER_RE.match(name):
            raise ValueError(f"{name!r}: user names are 1-32 of a-z, 0-9, '.', '_', '-' (starting with a letter "
                             "or digit)")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        check_new_password(password)
        users = self.users()
        if name in users and not replace:
            raise ValueError(f"user {name!r} exists (use --replace to set a new password or role)")
        users[name] = User(name, role, hash_password(password))
        self._write(users)
        return users[name]

    def remove(self, name: str) -> None:
        users = self.users()
        if name not in users:
            raise ValueError(f"no user {name!r}")
        del users[name]
        self._write(users)

    def _write(self, users: dict[str, User]) -> None:
        doc = {"version": 1, "users": {u.name: {"role": u.role, "password": u.password_hash}
                                       for u in sorted(users.values(), key=lambda u: u.name)}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class SecretFileError(ValueError):
    """The session secret file exists but does not hold a secret; the message names the file and the fix."""


def load_or_create_secret(path: Path) -> bytes:
    """The session-signing secret (32 random bytes, hex, mode 0600), created on first use.

    Raises :class:`SecretFileError` (a ValueError) for a file that is not a secret (not text, not hex, too
    short) and PermissionError for one others may read; both messages name the file and say what to do.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"{path}: the session secret must be readable by its owner only "
                                  f"(mode is {mode:04o}; run: chmod 600 {path})") from None
        return _parse_secret(path, path.read_bytes())
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret.hex() + "\n")
    return secret


def _parse_secret(path: Path, raw: bytes) -> bytes:
    fix = (f"it should hold 64 hex digits written by EduGate. Delete it and restart: a new secret is made "
           f"(everyone logged in must log in again): rm {path}")
    try:
        text = raw.decode("ascii").strip()
        secret = bytes.fromhex(text)
    except (UnicodeDecodeError, ValueError):
        raise SecretFileError(f"{path}: not a session secret ({len(raw)} bytes that are not hex text); {fix}") \
            from None
    if len(secret) < 16:
        raise SecretFileError(f"{path}: session secret too short ({len(secret)} bytes, at least 16); {fix}")
    return secret


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    issued: int  # unix seconds of the login
    active: int  # unix seconds of the last request that renewed the cookie
    nonce: str


class SessionSigner:
    """Issues and checks session cookies and the CSRF token that goes with each session.

    A session ends ``idle_s`` after its last renewal or ``lifetime_s`` after the login, whichever comes first;
    :meth:`revoke` ends one at once (logout). ``clock`` is for tests.
    """

    def __init__(self, secret: bytes, lifetime_s: int = SESSION_S, idle_s: int = IDLE_S,
                 refresh_s: int = REFRESH_S, clock: Callable[[], float] = time.time) -> None:
        if idle_s <= 0 or lifetime_s <= 0:
            raise ValueError("session lifetimes must be positive")
        self._secret = secret
        self.lifetime_s = lifetime_s
        self.idle_s = min(idle_s, lifetime_s)
        self.refresh_s = refresh_s
        self.clock = clock
        self._revoked: dict[str, float] = {}  # nonce -> when the session would have ended anyway
        self._lock = threading.Lock()

    def _mac(self, *parts: str) -> str:
        return _b64(hmac.new(self._secret, "|".join(parts).encode(), hashlib.sha256).digest())

    def _password_tag(self, user: User) -> str:
        return self._mac("pw", user.password_hash)[:12]

    def _encode(self, user: str, issued: int, active: int, nonce: str, tag: str) -> str:
        body = _b64(json.dumps({"u": user, "i": issued, "a": active, "n": nonce, "p": tag},
                               separators=(",", ":")).encode())
        return f"{body}.{self._mac('session', body)}"

    def issue(self, user: User) -> str:
        now = int(self.clock())
        return self._encode(user.name, now, now, secrets.token_urlsafe(12), self._password_tag(user))

    def renewed(self, session: Session, user: User) -> str | None:
        """A new cookie for ``session`` with "last used" now, or None when the current one is recent enough."""
        now = int(self.clock())
        if now - session.active < self.refresh_s:
            return None
        return self._encode(session.user, session.issued, now, session.nonce, self._password_tag(user))

    def max_age(self, session: Session | None = None) -> int:
        """Seconds the cookie should live in the browser: until the session's absolute end."""
        if session is None:
            return self.lifetime_s
        return max(0, session.issued + self.lifetime_s - int(self.clock()))

    def read(self, cookie: str, users: UserStore) -> tuple[Session, User] | None:
        """The session and its (current) user, or None if the cookie is forged, expired, idle, revoked or stale."""
        body, _, mac = cookie.partition(".")
        if not body or not hmac.compare_digest(mac.encode(), self._mac("session", body).encode()):
            return None
        try:
            doc = json.loads(_unb64(body))
            session = Session(str(doc["u"]), int(doc["i"]), int(doc["a"]), str(doc["n"]))
            tag = str(doc["p"])
        except (ValueError, KeyError, TypeError):
            return None
        if self.ended(session):
            return None
        user = users.get(session.user)
        if user is None or not hmac.compare_digest(tag, self._password_tag(user)):
            return None
        return session, user

    def ended(self, session: Session) -> str | None:
        """Why the session has ended ('expired', 'idle', 'logged out'), or None while it is valid."""
        now = self.clock()
        if now >= session.issued + self.lifetime_s:
            return "expired"
        if now >= session.active + self.idle_s:
            return "idle"
        with self._lock:
            if session.nonce in self._revoked:
                return "logged out"
        return None

    def revoke(self, session: Session) -> None:
        """End ``session`` now (logout). Remembered in memory until it would have ended anyway."""
        now = self.clock()
        with self._lock:
            for nonce in [n for n, until in self._revoked.items() if until <= now]:
                del self._revoked[nonce]
            self._revoked[session.nonce] = session.issued + self.lifetime_s

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.nonce)[:32]

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(session))


class LoginThrottle:
    """Failed logins counted per client address and per user name; too many locks that key for ``lock_s``.

    ``per_address`` failures from one address within ``window_s`` lock the address; ``per_user`` failures for
    one user name (from anywhere) lock the name. A locked key is refused even with the right password until
    the lock expires; a successful login clears the address's and the name's counts. The user limit is higher
    so that one address guessing cannot lock a real user out for long; many addresses guessing one name do.
    At most ``max_keys`` keys are remembered (the oldest is forgotten first). ``clock`` is for tests.
    """

    def __init__(self, per_address: int = 5, per_user: int = 10, window_s: float = 900.0, lock_s: float = 300.0,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if per_address < 1 or per_user < 1 or window_s <= 0 or lock_s <= 0:
            raise ValueError("login throttle limits must be positive")
        self.per_address, self.per_user = per_address, per_user
        self.window_s, self.lock_s = window_s, lock_s
        self.max_keys = max_keys
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}  # key -> monotonic time the lock ends
        self._lock = threading.Lock()

    @staticmethod
    def _keys(user: str, address: str) -> tuple[str, str]:
        return f"addr:{address}", f"user:{user.strip().lower()[:64]}"

    def blocked_for(self, user: str, address: str) -> float:
        """Seconds before this user name may try again from this address (0: may try now)."""
        now = self.clock()
        with self._lock:
            waits = [self._locked[k] - now for k in self._keys(user, address) if k in self._locked]
            for key in [k for k, until in self._locked.items() if until <= now]:
                del self._locked[key]
        return max([0.0, *waits])

    def failed(self, user: str, address: str) -> list[str]:
        """Count a failure; return the keys ('addr:...', 'user:...') this failure locked."""
        now = self.clock()
        locked: list[str] = []
        with self._lock:
            for key, limit in zip(self._keys(user, address), (self.per_address, self.per_user), strict=True):
                if key not in self._failures and len(self._failures) >= self.max_keys:
                    self._failures.pop(next(iter(self._failures)))
                times = self._failures.setdefault(key, deque(maxlen=limit))
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                times.append(now)
                if len(times) >= limit:
                    self._locked[key] = now + self.lock_s
                    del self._failures[key]
                    locked.append(key)
        return locked

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            for key in self._keys(user, address):
                self._failures.pop(key, None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
