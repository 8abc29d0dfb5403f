"""What is installed and what listens: versions, a CycloneDX SBOM of the Python environment, listening ports.

The SBOM comes from CycloneDX's own generator (``cyclonedx-bom``, the ``[audit]`` extra), run on this
interpreter's environment: every installed distribution with its version, licence and package URL.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

SBOM_TIMEOUT_S = 120.0


class SbomError(RuntimeError):
    """The SBOM could not be made; the message says why and what to install."""


def versions() -> dict[str, str]:
    """EduGate, Python, the OS and the kernel, and the libraries the security measures rest on."""
    found: dict[str, str] = {"edugate": _version("edugate"), "python": platform.python_version(),
                             "kernel": platform.release(), "machine": platform.machine(), "os": _os_name()}
    for name in ("cryptography", "paho-mqtt", "aiomqtt", "fastapi", "uvicorn", "starlette", "pydantic"):
        found[name] = _version(name)
    return found


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


@dataclass(frozen=True)
class Sbom:
    path: Path
    spec_version: str
    components: int
    generator: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.path.name, "format": f"CycloneDX {self.spec_version} JSON", "components": self.components,
                "generator": self.generator}


def write_sbom(path: Path, python: str = sys.executable, timeout_s: float = SBOM_TIMEOUT_S) -> Sbom:
    """Write the CycloneDX SBOM (JSON) of ``python``'s environment to ``path``; :class:`SbomError` if the
    generator is missing or fails."""
    generator = _version("cyclonedx-bom")
    if generator == "not installed":
        raise SbomError("cyclonedx-bom is not installed: pip install 'edugate[audit]' (the SBOM generator)")
    # --no-validate: the library writes a valid document by construction, and its schema check took 24 s of
    # the 25 s on this project's build machine (0.7 s without it)
    command = [python, "-m", "cyclonedx_py", "environment", "--of", "JSON", "--no-validate", "-o", str(path), python]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SbomError(f"cyclonedx-py did not run: {exc}") from None
    if done.returncode != 0:
        raise SbomError(f"cyclonedx-py failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Sbom(path, str(doc["specVersion"]), len(doc.get("components", [])), f"cyclonedx-bom {generator}")
    except (OSError, ValueError, KeyError) as exc:
        raise SbomError(f"{path}: the SBOM written is unreadable ({exc})") from None


def listening_ports() -> list[dict[str, Any]]:
    """Every TCP socket listening and UDP socket bound on this machine, with the process when it may be seen
    (all of them as root; one's own otherwise)."""
    import psutil

    out: list[dict[str, Any]] = []
    names: dict[int, str] = {}
    for conn in psutil.net_connections(kind="inet"):
        tcp = conn.type == socket.SOCK_STREAM
        if (tcp and conn.status != psutil.CONN_LISTEN) or (not tcp and conn.raddr):
            continue
        if not conn.laddr:
            continue
        process = None
        if conn.pid is not None:
            if conn.pid not in names:
                try:
                    names[conn.pid] = psutil.Process(conn.pid).name()
                except psutil.Error:
                    names[conn.pid] = "?"
            process = f"{names[conn.pid]} ({conn.pid})"
        address = conn.laddr.ip
        out.append({"protocol": "tcp" if tcp else "udp", "address": address, "port": conn.laddr.port,
                    "process": process, "exposed": address not in {"127.0.0.1", "::1"}
                    and not address.startswith("127.")})
    unique = {(p["protocol"], p["address"], p["port"]): p for p in out}
    return sorted(unique.values(), key=lambda p: (p["protocol"], p["port"], p["address"]))


def hostname() -> str:
    return os.uname().nodename
