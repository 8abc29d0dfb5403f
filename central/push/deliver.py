"""One delivery attempt (an HTTP POST), what its answer means, and when to try again.

* 2xx: delivered (a receiver answers 2xx for a key it already has, too);
* 408, 409, 425, 429, 5xx, no answer, a refused or broken connection, a timeout: try again after the backoff
  (or the receiver's ``Retry-After``, if longer), until ``retry.max_attempts``, then a dead letter;
* any other 4xx (bad request, bad signature, wrong URL, too large): a dead letter at once; retrying the same
  bytes cannot help. Fix the cause, then ``edugate push redeliver``.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Literal

from edugate.central.config import PushRetry
from edugate.central.push.signing import KEY_HEADER, SIGNATURE_HEADER, signature

RETRY_CODES = frozenset({408, 409, 425, 429})
USER_AGENT = "edugate-push/1"


@dataclass(frozen=True)
class Outcome:
    result: Literal["delivered", "retry", "refused"]
    detail: str
    retry_after_s: float | None = None


def post(url: str, key: str, body: bytes, secret: bytes, timeout_s: float) -> Outcome:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, KEY_HEADER: key,
               SIGNATURE_HEADER: signature(secret, int(time.time()), body)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            resp.read()
            return Outcome("delivered", f"HTTP {resp.status}")
    except urllib.error.HTTPError as exc:
        detail = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace').strip()}"
        if exc.code in RETRY_CODES or exc.code >= 500:
            return Outcome("retry", detail, _retry_after(exc.headers.get("Retry-After")))
        return Outcome("refused", detail)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome("retry", f"no answer from {url}: {reason or type(exc).__name__}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff applies


def backoff_s(retry: PushRetry, attempts: int) -> float:
    """The wait after ``attempts`` failed attempts (1, 2, ...)."""
    return float(min(retry.max_s, retry.initial_s * retry.factor ** (attempts - 1)))
