"""The descriptor limit systemd WILL give a service, read from its unit files on disk (for ``central-doctor``).

systemd.unit(5): the unit file is the first ``NAME`` found along the unit search path (``/etc`` before
``/run`` before ``/lib``); its drop-ins (``NAME.d/*.conf`` in any of those folders) are applied in the
lexical order of their file names, whatever folder they are in, a later one overriding an earlier one (of
two with the same name, the one in the earlier folder hides the other). ``LimitNOFILE=`` takes ``soft:hard``,
one value for both, or ``infinity``; an empty assignment resets it to the manager's ``DefaultLimitNOFILE``
(``/etc/systemd/system.conf`` and ``system.conf.d``), which systemd 240 and later set to ``1024:524288``.
Everything is read under a root folder, so a copy of another machine's tree (or a test's) can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

UNIT_DIRS: Final = ("etc/systemd/system", "run/systemd/system", "usr/local/lib/systemd/system",
                    "usr/lib/systemd/system", "lib/systemd/system")
MANAGER_CONF: Final = "etc/systemd/system.conf"
MANAGER_DROP_IN_DIRS: Final = ("etc/systemd/system.conf.d", "run/systemd/system.conf.d",
                               "usr/local/lib/systemd/system.conf.d", "usr/lib/systemd/system.conf.d")
SYSTEMD_DEFAULT_TEXT: Final = "1024:524288"  # DefaultLimitNOFILE built into systemd >= 240


class UnitFileError(ValueError):
    """A unit or manager file cannot be read or says something systemd would refuse; the message says where."""


@dataclass(frozen=True)
class NofileLimit:
    soft: int | None  # None: infinity
    hard: int | None

    def __str__(self) -> str:
        def show(v: int | None) -> str:
            return "infinity" if v is None else str(v)
        return show(self.soft) if self.soft == self.hard else f"{show(self.soft)}:{show(self.hard)}"


@dataclass(frozen=True)
class UnitLimit:
    """What systemd will give the service, and which file line said so (``None``: the manager's default)."""

    unit: str
    root: Path
    unit_file: str  # as on the machine, e.g. /lib/systemd/system/mosquitto.service
    drop_ins: tuple[str, ...]  # applied in this order
    limit: NofileLimit
    set_by: str | None  # "file:line" of the LimitNOFILE= that counts; None: the manager's default
    default_from: str  # "file:line" of DefaultLimitNOFILE, or "systemd's built-in default"

    def explain(self) -> str:
        if self.set_by is not None:
            return f"LimitNOFILE={self.limit}, set by {self.set_by}"
        others = (f"nor do its drop-ins ({', '.join(self.drop_ins)})" if self.drop_ins else "and it has no drop-in")
        return f"LimitNOFILE={self.limit}, {self.default_from}: {self.unit_file} sets none {others}"


def parse_nofile(value: str, where: str) -> NofileLimit:
    """``soft:hard``, one value for both, or ``infinity`` (systemd.exec(5), LimitNOFILE=)."""
    def one(text: str) -> int | None:
        text = text.strip()
        if text == "infinity":
            return None
        if not text.isdigit():
            raise UnitFileError(f"{where}: LimitNOFILE value {value!r} is not a number, 'soft:hard' or 'infinity'")
        return int(text)

    soft, sep, hard = value.partition(":")
    limit = NofileLimit(one(soft), one(hard) if sep else one(soft))
    if limit.hard is not None and (limit.soft is None or limit.soft > limit.hard):
        raise UnitFileError(f"{where}: LimitNOFILE={value}: the soft limit is above the hard one")
    return limit


def _assignments(path: Path, shown: str, section: str, key: str) -> list[tuple[str, str]]:
    """(value, ``shown:line``) of each ``key=`` in ``[section]`` of a systemd ini file, in order."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UnitFileError(f"{shown}: cannot read it ({exc})") from None
    found: list[tuple[str, str]] = []
    current = ""
    pending = ""
    start = 0
    for number, raw in enumerate(lines, 1):
        line = pending + raw.strip() if pending else raw.strip()
        start = start if pending else number
        if line.endswith("\\"):  # a continuation line
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        name, sep, value = line.partition("=")
        if sep and current == section and name.strip() == key:
            found.append((value.strip(), f"{shown}:{start}"))
    return found


def _drop_ins(root: Path, dirs: tuple[str, ...]) -> list[tuple[Path, str]]:
    """(path, as on the machine) of each ``*.conf`` in ``dirs``, by file name; an earlier dir's file hides a
    later one's of the same name."""
    chosen: dict[str, tuple[Path, str]] = {}
    for rel in dirs:
        folder = root / rel
        if not folder.is_dir():
            continue
        for path in folder.glob("*.conf"):
            chosen.setdefault(path.name, (path, f"/{rel}/{path.name}"))
    return [chosen[k] for k in sorted(chosen)]


def manager_default(root: Path) -> tuple[NofileLimit, str]:
    """The manager's DefaultLimitNOFILE and where it came from."""
    text, source = SYSTEMD_DEFAULT_TEXT, f"systemd's built-in default ({SYSTEMD_DEFAULT_TEXT})"
    files = [(root / MANAGER_CONF, f"/{MANAGER_CONF}"), *_drop_ins(root, MANAGER_DROP_IN_DIRS)]
    for path, shown in files:
        if path.is_file():
            for value, where in _assignments(path, shown, "Manager", "DefaultLimitNOFILE"):
                text, source = (value, f"the manager's default, set by {where}") if value else (
                    SYSTEMD_DEFAULT_TEXT, f"systemd's built-in default ({SYSTEMD_DEFAULT_TEXT})")
    return parse_nofile(text, source), source


def unit_nofile_limit(unit: str = "mosquitto.service", root: Path = Path("/")) -> UnitLimit:
    """The LimitNOFILE systemd will start ``unit`` with, from the files under ``root``."""
    unit_path = next(((root / rel / unit, f"/{rel}/{unit}") for rel in UNIT_DIRS
                      if (root / rel / unit).exists() or (root / rel / unit).is_symlink()), None)
    if unit_path is None:
        raise UnitFileError(f"no {unit} under {root} (looked in {', '.join('/' + d for d in UNIT_DIRS)}): "
                            "is the broker installed from the Debian package on this machine?")
    path, shown = unit_path
    if path.is_symlink() and str(path.readlink()) == "/dev/null":
        raise UnitFileError(f"{shown} is masked (a link to /dev/null): systemd will not start it")
    drop_ins = _drop_ins(root, tuple(f"{rel}/{unit}.d" for rel in UNIT_DIRS))
    default, default_from = manager_default(root)
    limit, set_by = default, None
    for file, file_shown in [(path, shown), *drop_ins]:
        for value, where in _assignments(file, file_shown, "Service", "LimitNOFILE"):
            limit, set_by = (parse_nofile(value, where), where) if value else (default, None)
    return UnitLimit(unit=unit, root=root, unit_file=shown, drop_ins=tuple(s for _, s in drop_ins), limit=limit,
                     set_by=set_by, default_from=default_from)
