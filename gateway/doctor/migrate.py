"""``edugate migrate CONFIG``: bring a gateway's files to the schema versions this EduGate reads.

The config file carries ``schema_version`` (a file without it is version 1) and the outbox a ``schema_version``
row in its ``meta`` table (a file without it is version 1). Version 1 is the only one so far, so migrating means
recording the version where it is missing; a file with a newer version than this EduGate reads is refused with a
message saying so, never rewritten. Options under an old name (``serial_port`` of the GPS receiver, and the others
in each driver's ``renamed``) are renamed in place. The next schema change adds its step here.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import yaml

from edugate.common.yamlconfig import parse_mapping, read_text
from edugate.gateway.config import SCHEMA_VERSION as CONFIG_SCHEMA_VERSION
from edugate.gateway.config import load_config
from edugate.gateway.runtime.outbox import SCHEMA_VERSION as OUTBOX_SCHEMA_VERSION
from edugate.gateway.runtime.outbox import OutboxSchemaError, check_schema_version, read_schema_version


class MigrateError(Exception):
    """A file this EduGate must not touch (newer, or unreadable); the message says which and why."""


@dataclass
class Step:
    file: Path
    before: int | None  # None: the file did not record a version
    after: int
    done: bool  # False with --check, or when nothing was to be done

    def __str__(self) -> str:
        if self.before == self.after:
            return f"{self.file}: schema version {self.after}, up to date"
        before = "no version recorded" if self.before is None else f"version {self.before}"
        verb = "migrated" if self.done else "would be migrated"
        return f"{self.file}: {before} -> version {self.after}: {verb}"




def config_version(text: str, path: Path) -> int | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MigrateError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MigrateError(f"{path}: not a gateway config (expected a mapping at the top)")
    version = data.get("schema_version")
    if version is None:
        return None
    if not isinstance(version, int) or isinstance(version, bool):
        raise MigrateError(f"{path}: schema_version must be a whole number, not {version!r}")
    return version


def migrate_config(path: Path, *, check_only: bool = False) -> Step:
    text = read_text(path)  # ConfigError (file:line: message) when it is not UTF-8 text
    version = config_version(text, path)
    if version is not None and version > CONFIG_SCHEMA_VERSION:
        raise MigrateError(f"{path}: schema version {version} was written for a newer EduGate; this one reads up to "
                           f"version {CONFIG_SCHEMA_VERSION}. Install the newer EduGate; nothing was changed")
    if version is not None and version < 1:
        raise MigrateError(f"{path}: schema version {version} does not exist (the first is 1)")
    if version == CONFIG_SCHEMA_VERSION:
        return Step(path, version, CONFIG_SCHEMA_VERSION, done=False)
    if not check_only:  # record the version on the file's first line after its leading comments
        lines = text.splitlines(keepends=True)
        at = 0
        while at < len(lines) and (lines[at].startswith("#") or not lines[at].strip()):
            at += 1
        lines.insert(at, f"schema_version: {CONFIG_SCHEMA_VERSION}\n")
        _replace(path, "".join(lines))
    return Step(path, version, CONFIG_SCHEMA_VERSION, done=not check_only)


@dataclass
class Rename:
    """An option under its old name (issue 19: one name per setting across drivers), renamed in place."""

    file: Path
    line: int
    old: str
    new: str
    done: bool

    def __str__(self) -> str:
        verb = "renamed" if self.done else "would be renamed"
        return f"{self.file}:{self.line}: {self.old!r} -> {self.new!r}: {verb}"


def rename_old_options(path: Path, *, check_only: bool = False) -> list[Rename]:
    """Rename the devices' options that still use an old name, in place: only the key's text on its line
    changes, comments and layout stay. The file must be a valid config (:class:`ConfigError` otherwise)."""
    cfg = load_config(path)
    text = path.read_text(encoding="utf-8")
    root, _, _ = parse_mapping(text, str(path))
    lines = text.splitlines(keepends=True)
    renames: list[Rename] = []
    for i, dev in enumerate(cfg.devices):
        for old, new in dev.deprecated_names():
            key = _key_node(root, ("devices", i, old))
            if key is None:
                continue
            row, col = key.start_mark.line, key.start_mark.column
            if lines[row][col:col + len(old)] != old:  # a quoted or flow-style key: leave it, say where
                raise MigrateError(f"{path}:{row + 1}: rename {old!r} to {new!r} by hand (written in a way "
                                   "this command does not rewrite)")
            lines[row] = lines[row][:col] + new + lines[row][col + len(old):]
            renames.append(Rename(path, row + 1, old, new, done=not check_only))
    if renames and not check_only:
        _replace(path, "".join(lines))
    return renames


def _key_node(root: yaml.Node | None, loc: tuple[str | int, ...]) -> yaml.Node | None:
    node, key = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            key, node = next(((k, v) for k, v in node.value if k.value == part), (None, None))
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            key, node = None, node.value[part]
        else:
            return None
    return key


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".migrating")
    tmp.write_text(text, encoding="utf-8")
    tmp.chmod(path.stat().st_mode & 0o7777)
    tmp.replace(path)


def migrate_outbox(path: Path, *, check_only: bool = False) -> Step | None:
    """None when there is no outbox yet. Stop the gateway first: the writer must be alone."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            version = read_schema_version(conn)
            recorded = _recorded(conn)
            if version > OUTBOX_SCHEMA_VERSION or not check_only:
                check_schema_version(conn, path)  # refuses a newer file; records the version
        finally:
            conn.close()
    except OutboxSchemaError as exc:
        raise MigrateError(str(exc)) from None
    except sqlite3.Error as exc:
        raise MigrateError(f"{path}: cannot be read as an outbox: {exc}") from None
    before = version if recorded else None
    return Step(path, before, OUTBOX_SCHEMA_VERSION, done=not check_only and before != OUTBOX_SCHEMA_VERSION)


def _recorded(conn: sqlite3.Connection) -> bool:
    try:
        return conn.execute("SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is not None
    except sqlite3.OperationalError:
        return False
