"""Versions side by side: install a new EduGate wheel beside the running one, switch to it, switch back.

The layout under the install root (``/opt/edugate``; ``$EDUGATE_INSTALL_ROOT`` or the folder above the
running environment otherwise)::

    versions/0.1.0/     a Python environment (venv) with edugate 0.1.0 installed
    versions/0.2.0/     the new one, installed beside it
    current -> versions/0.2.0    the version the service starts (/opt/edugate/current/bin/edugate run ...)
    wheels/             the downloaded wheels, checked against the sha256 the signed command carries

A new version gets its own environment: ``python -m venv`` (without pip), then this environment's pip
installs the wheel into it (``pip --python``). Its dependencies are either shared with the running version
(``deps: shared``, the default: a ``.pth`` file puts the running version's library folders after its own;
nothing is downloaded but the wheel, which suits an update of EduGate alone) or installed from a package
index (``deps: install``, with ``index_url`` for the department's mirror). Before anything is switched, the
new version must read the gateway's config and import what ``edugate run`` needs
(``python -m edugate.gateway.update.smoke``): a version that cannot is never started.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edugate.gateway.update.trial import APPLIED, IN_PLACE, UNDO, fsync_dir, restart_argv

log = logging.getLogger(__name__)

MAX_WHEEL_BYTES = 500 * 1024 * 1024
SHARED_PTH = "edugate-shared-deps.pth"
_WHEEL_RE = re.compile(r"^edugate-(?P<version>[0-9][A-Za-z0-9_.+!]*)-[^-]+-[^-]+-[^-]+\.whl$")


class UpdateError(Exception):
    """An update cannot be installed; nothing was switched. The message says what and where."""


@dataclass(frozen=True)
class Layout:
    """The install root and its ``versions/``, ``current`` and ``wheels/``."""

    root: Path

    @classmethod
    def detect(cls) -> Layout:
        """``$EDUGATE_INSTALL_ROOT``, or the folder holding the running environment (``versions/X`` or
        ``current`` under the root; the ``venv`` of a package install at /opt/edugate/venv)."""
        env = os.environ.get("EDUGATE_INSTALL_ROOT")
        if env:
            return cls(Path(env))
        prefix = Path(sys.prefix)
        return cls(prefix.parent.parent if prefix.parent.name == "versions" else prefix.parent)

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    def running(self) -> Path:
        """The environment of the version in use: ``current``'s target, or this process's own."""
        if self.current.is_symlink():
            return (self.current.parent / os.readlink(self.current)).resolve()
        return Path(sys.prefix).resolve()

    def switch(self, venv: Path) -> None:
        """Point ``current`` at ``venv``, atomically (a new symlink renamed over the old one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.current.with_name("current.new")
        tmp.unlink(missing_ok=True)
        target = venv.resolve()
        tmp.symlink_to(target.relative_to(self.root.resolve()) if target.is_relative_to(self.root.resolve())
                       else target)
        tmp.replace(self.current)
        fsync_dir(self.root)

    def current_argv(self) -> list[str]:
        """``edugate run`` with this process's arguments, by the interpreter of ``current``."""
        return restart_argv(str(self.current / "bin" / "python"))


def wheel_version(name: str) -> str:
    """The version in an EduGate wheel's file name, or :class:`UpdateError`."""
    match = _WHEEL_RE.match(name)
    if match is None:
        raise UpdateError(f"{name!r} is not an EduGate wheel file name (edugate-VERSION-py3-none-any.whl)")
    return match["version"]


def fetch(url: str, sha256: str, into: Path, *, max_bytes: int = MAX_WHEEL_BYTES) -> Path:
    """Download (http, https, file URL or absolute path) the wheel into ``into``; keep it only if its sha256
    is the one the signed command gave."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file", ""):
        raise UpdateError(f"{url}: give an http, https or file URL (or an absolute path) of the wheel")
    name = Path(urllib.parse.unquote(parsed.path)).name
    wheel_version(name)
    into.mkdir(parents=True, exist_ok=True)
    dest = into / name
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        source = urllib.request.urlopen(url if parsed.scheme else Path(url).as_uri(), timeout=60)
    except (OSError, ValueError) as exc:
        raise UpdateError(f"cannot download {url}: {exc}") from None
    try:
        with source, part.open("wb") as out:
            while chunk := source.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise UpdateError(f"{url}: larger than {max_bytes} bytes; not an EduGate wheel")
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise UpdateError(f"cannot download {url}: {exc}") from None
    except UpdateError:
        part.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise UpdateError(f"{url}: sha256 {digest.hexdigest()} is not the one the signed command gives ({sha256}): "
                          "refusing a wheel that is not the one central signed for")
    part.replace(dest)
    return dest


def site_dirs(venv: Path) -> list[Path]:
    """The library folders of an environment: its site-packages and those its shared-deps file adds."""
    site = next(iter(sorted(venv.glob("lib/python*/site-packages"))), None)
    if site is None:
        return []
    extra = site / SHARED_PTH
    shared = [Path(line) for line in extra.read_text().splitlines() if line.strip()] if extra.exists() else []
    return [site.resolve(), *shared]


def _run(argv: list[str], what: str, timeout: float = 900) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpdateError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip().splitlines()
        raise UpdateError(f"{what} failed (exit {proc.returncode}): " + " | ".join(output[-8:]))


def install(layout: Layout, wheel: Path, *, config: Path, deps: str = "shared", index_url: str | None = None,
            share_from: Path | None = None) -> Path:
    """Install ``wheel`` as ``versions/<its version>`` and check it reads ``config``; its environment.

    Blocking (subprocesses): call it in a thread. On failure the half-made environment is removed.
    """
    version = wheel_version(wheel.name)
    venv = layout.versions / version
    running = layout.running()
    if venv.resolve() == running:
        raise UpdateError(f"version {version} is the one running ({venv}); nothing to do")
    if venv.exists():
        shutil.rmtree(venv)  # a failed or older attempt, never the running version (above)
    layout.versions.mkdir(parents=True, exist_ok=True)
    try:
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", "--without-pip", str(venv)], f"creating the environment {venv}")
        python = venv / "bin" / "python"
        pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
               "--disable-pip-version-check"]
        if deps == "shared":
            site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
            shared = site_dirs(share_from or running)
            if not shared:
                raise UpdateError(f"{share_from or running}: no site-packages to share dependencies from")
            (site / SHARED_PTH).write_text("".join(f"{p}\n" for p in shared))
            _run([*pip, "--no-deps", "--no-index", str(wheel)], f"installing {wheel.name}")
        else:
            index = ["--index-url", index_url] if index_url else []
            _run([*pip, *index, f"{wheel}[gateway]"], f"installing {wheel.name} with its dependencies")
        _run([str(python), "-m", "edugate.gateway.update.smoke", str(config)],
             f"the new version {version} checking {config}", timeout=300)
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    return venv


def prune(layout: Layout, keep: set[Path]) -> list[Path]:
    """Remove the versions other than ``keep`` (the running one and the one before) and those whose libraries
    they share; what was removed."""
    removed = []
    keep = {p.resolve() for p in keep}
    needed = [site for venv in keep for site in site_dirs(venv)]  # shared dependencies live in older versions
    for venv in sorted(layout.versions.iterdir()) if layout.versions.is_dir() else []:
        if venv.is_dir() and venv.resolve() not in keep and \
                not any(site.is_relative_to(venv.resolve()) for site in needed):
            shutil.rmtree(venv, ignore_errors=True)
            removed.append(venv)
    return removed


def _undo_update(doc: Mapping[str, Any]) -> list[str] | None:
    """Point ``current`` back at the previous version and restart on it."""
    layout = Layout(Path(doc["root"]))
    layout.switch(Path(doc["previous"]))
    return layout.current_argv()


def _tidy_after_update(doc: Mapping[str, Any]) -> None:
    """Keep the new version and the previous one (a manual way back), remove older ones."""
    layout = Layout(Path(doc["root"]))
    for venv in prune(layout, {layout.running(), Path(doc["previous"])}):
        log.info("removed the old version %s", venv)


def _update_in_place(doc: Mapping[str, Any]) -> str | None:
    running = Layout(Path(doc["root"])).running()
    return None if running == Path(doc["new"]).resolve() else f"current is {running}, not {doc['new']}"


UNDO["update"] = _undo_update
IN_PLACE["update"] = _update_in_place
APPLIED["update"] = _tidy_after_update
