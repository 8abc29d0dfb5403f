"""Serve a FastAPI app with uvicorn inside a process that owns its event loop and signals.

Used by the gateway's pages (``gateway/web/serve.py``) and central's pages (``central/web/pages.py``). A port
that cannot be bound is logged and retried: the pages failing never takes the process down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)

BIND_RETRY_S = 30.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process that embeds it owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (SO_REUSEADDR, not inherited by children)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def check_tls_files(cert_file: Path, key_file: Path) -> None:
    """Raise ``ValueError`` saying what is wrong unless the certificate and key load as a server's pair."""
    for path in (cert_file, key_file):
        try:
            path.open("rb").close()
        except OSError as exc:
            raise ValueError(f"TLS: {path}: {exc.strerror}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise ValueError(f"TLS: {cert_file} and {key_file} are not a PEM certificate and its key ({exc.reason or exc})"
                         ) from None


async def serve_app(app: FastAPI, host: str, port: int, what: str, on_stop: Callable[[], None] | None = None,
                    retry_s: float = BIND_RETRY_S, tls: tuple[Path, Path] | None = None) -> None:
    """Serve ``app`` on ``host:port`` until cancelled; retry binding every ``retry_s`` when the port is taken.
    ``on_stop`` is called when cancelled, to end long responses (live streams) before they are cut. ``tls``:
    (certificate, key) to serve HTTPS; files that do not load are reported and tried again every ``retry_s``."""
    while tls is not None:
        try:
            check_tls_files(*tls)
            break
        except ValueError as exc:
            log.error("%s: %s; retrying every %.0f s", what, exc, retry_s)
            await asyncio.sleep(retry_s)
    while True:
        try:
            sock = bind(host, port)
            break
        except OSError as exc:
            log.error("%s: cannot listen on %s:%d (%s); retrying every %.0f s", what, host, port,
                      exc.strerror or exc, retry_s)
            await asyncio.sleep(retry_s)
    server = _Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off", access_log=False,
                                    timeout_graceful_shutdown=2, proxy_headers=False, server_header=False,
                                    ssl_certfile=str(tls[0]) if tls else None,
                                    ssl_keyfile=str(tls[1]) if tls else None))
    shown = f"[{host}]" if ":" in host else host
    log.info("%s on %s://%s:%d/", what, "https" if tls else "http", shown, port)
    try:
        await server.serve(sockets=[sock])
    finally:  # cancelled with the process: stop listening, let the open live streams end, cut what is left
        for listener in getattr(server, "servers", []):
            listener.close()
        if on_stop is not None:
            on_stop()
        tasks = list(server.server_state.tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            for task in pending:
                task.cancel()
        sock.close()
