"""A warehouse for the push adapter's tests: a real HTTP server on a free port that checks each delivery's
signature with its own HMAC code, keeps each idempotency key once, and can be told to fail: answer 500 (or any
code) to the next N requests, or keep the next N requests waiting longer than the pusher's timeout (after storing
them, as a slow warehouse would)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edugate.simulators.servers import free_port


@dataclass
class Request:
    key: str
    body: bytes
    signed: bool
    at: float
    answered: int


@dataclass
class Warehouse:
    secret: bytes
    fail_next: int = 0
    fail_code: int = 500
    slow_next: int = 0
    slow_s: float = 0.0
    requests: list[Request] = field(default_factory=list)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)
    """Key -> how many times it was stored (must never exceed 1)."""

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), name="warehouse", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/edugate/figures"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def check_signature(self, header: str, body: bytes) -> bool:
        parts = dict(p.split("=", 1) for p in header.split(",")) if "=" in header else {}
        if set(parts) != {"t", "sha256"} or abs(time.time() - int(parts["t"])) > 300:
            return False
        expected = hmac.new(self.secret, parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["sha256"])

    def _receive(self, key: str, signature: str, body: bytes) -> tuple[int, float]:
        """(status, seconds to wait before answering)."""
        signed = self.check_signature(signature, body)
        with self.lock:
            status, delay = 200, 0.0
            if not signed:
                status = 401
            elif self.fail_next > 0:
                self.fail_next -= 1
                status = self.fail_code
            else:
                if key not in self.stored:
                    self.stored[key] = json.loads(body)
                    self.deliveries[key] += 1
                if self.slow_next > 0:
                    self.slow_next -= 1
                    delay = self.slow_s
            self.requests.append(Request(key, body, signed, time.monotonic(), status))
        return status, delay

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        warehouse = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, delay = warehouse._receive(self.headers.get("Idempotency-Key", ""),
                                                   self.headers.get("X-EduGate-Signature", ""), body)
                if delay:
                    time.sleep(delay)
                answer = json.dumps({"status": status}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the pusher gave up waiting

            def log_message(self, *args: object) -> None:
                pass

        return Handler
