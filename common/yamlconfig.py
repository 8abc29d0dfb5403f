"""Line-aware YAML config loading, shared by the gateway's config and central's: every problem as
``file:line: path: message``.

:func:`read_text` reads a file (an unreadable or non-UTF-8 file is a :class:`Problem`, not a traceback),
:func:`parse_mapping` parses YAML text into a mapping and its node tree (syntax errors and duplicate keys are
problems), :func:`line_of` finds the line of a path in the tree, and :func:`validate` turns a pydantic
model's validation errors into problems at their lines. :func:`load_model` does all of it for a simple model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(loc: Loc) -> str:
    """``("devices", 2, "port")`` -> ``devices[2].port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Loader(yaml.SafeLoader):
    pass


MAX_CONFIG_BYTES = 2 * 1024 * 1024
"""A config larger than this is refused: a site's config is a few kB (a thousand devices are ~200 kB); a huge file
is a mistake (a log or an image saved under the config's name) and would take minutes and much memory to parse."""

MAX_NODES = 200_000
"""The most values a config may expand to with its aliases counted out: YAML anchors and aliases let a few lines
name billions of values (a "billion laughs"), which would stall the gateway for ever instead of failing."""


MAX_DEPTH = 64
"""The deepest nesting of mappings and lists a config may have (a real one needs fewer than 10; the YAML library's
recursion would fail on a few thousand levels with a traceback)."""


def _too_deep(text: str) -> int | None:
    """The line where the nesting first gets deeper than :data:`MAX_DEPTH`, or None (the parser's events are a
    flat stream: this does not recurse)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark.line + 1 if event.start_mark else None
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` stands for with every alias expanded, stopping once it exceeds ``limit``
    (aliases share nodes in the composed graph: sizes are memoised per node, so this costs the graph's size)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                children += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[id(node)] = total
        return total

    return size(root)


def _duplicate_keys(node: yaml.Node, loc: Loc = ()) -> Iterator[tuple[Loc, int, str]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if key.value in seen:
                yield (*loc, key.value), key.start_mark.line + 1, f"key {key.value!r} appears twice"
            seen.add(key.value)
            yield from _duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i))


def line_of(node: yaml.Node | None, loc: Loc) -> int | None:
    """The YAML line of the deepest node along ``loc`` that exists."""
    if node is None:
        return None
    line: int = node.start_mark.line + 1
    for part in loc:
        nxt = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    nxt = value if not isinstance(value, yaml.ScalarNode) or value.value != "" else key
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        if nxt is None:
            break
        node = nxt
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            line = node.start_mark.line + 1
        elif not isinstance(part, str):
            line = node.start_mark.line + 1
    return line


def read_text(path: Path) -> str:
    """The file's text, or :class:`ConfigError` saying why it cannot be read (missing, no permission, not UTF-8)."""
    try:
        with path.open("rb") as file:  # read no more than the limit: the "file" may be /dev/zero
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(str(path), None, "", f"more than {MAX_CONFIG_BYTES // 1024 // 1024} MiB is too "
                                   "big for a config: is it the right file?")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([Problem(str(path), line, "", f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                                   f"offset {exc.start}): save the file as UTF-8")]) from None


def parse_mapping(text: str, filename: str) -> tuple[yaml.Node | None, dict[str, Any], list[Problem]]:
    """YAML text -> (node tree, data, duplicate-key problems); :class:`ConfigError` if it is not a YAML mapping."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([Problem(filename, None, "", f"{len(text)} characters is too big for a config (at most "
                                   f"{MAX_CONFIG_BYTES // 1024 // 1024} MiB)")])
    try:
        if (deep := _too_deep(text)) is not None:
            raise ConfigError([Problem(filename, deep, "", f"mappings and lists nested more than {MAX_DEPTH} deep: "
                                       "a config needs a few levels (a bracket left open?)")])
        root = yaml.compose(text, Loader=_Loader)
        if root is not None and _expanded_size(root, MAX_NODES) > MAX_NODES:
            raise ConfigError([Problem(filename, root.start_mark.line + 1, "", f"the YAML holds more than {MAX_NODES} "
                                       "values, counting what its anchors and aliases (&name / *name) repeat: a "
                                       "config needs far fewer (aliases nested in each other?)")])
        data = yaml.load(text, Loader=_Loader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a NUL, a control character)
        at = text.count("\n", 0, exc.position) + 1
        raise ConfigError([Problem(filename, at, "", f"invalid YAML: character {chr(exc.character)!r} "
                                   f"({exc.character:#04x}) is not allowed in a YAML file (a binary file?)")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(filename, line, "", f"invalid YAML: {problem} (check the indentation)")]) from None
    problems = [Problem(filename, line, format_path(loc), msg) for loc, line, msg in _duplicate_keys(root)] \
        if root is not None else []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(filename, 1, "", "the file must be a YAML mapping (key: value)")])
    return root, data, problems


def default_message(err: ErrorDetails) -> str:
    """A pydantic error as a config problem's message."""
    if err["type"] == "extra_forbidden":
        return "unknown key (a typo?)"
    return err["msg"].removeprefix("Value error, ")


def validate(model: type[M], data: dict[str, Any], root: yaml.Node | None, filename: str,
             problems: list[Problem] | None = None,
             message: Callable[[ErrorDetails], str] = default_message) -> M:
    """``model.model_validate(data)``; :class:`ConfigError` with every problem (and ``problems``) at its line."""
    found = list(problems or [])
    try:
        cfg = model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            found.append(Problem(filename, line_of(root, loc), format_path(loc), message(err)))
        raise ConfigError(sorted(found, key=lambda p: p.line or 0)) from None
    if found:
        raise ConfigError(found)
    return cfg


def load_model(path: Path, model: type[M], message: Callable[[ErrorDetails], str] = default_message) -> M:
    """Read, parse and validate a YAML config file; :class:`ConfigError` lists every problem."""
    text = read_text(path)
    root, data, problems = parse_mapping(text, str(path))
    return validate(model, data, root, str(path), problems, message)


def exit_with_problems(path: Path, exc: ConfigError, what: str = "nothing was started") -> NoReturn:
    """Print every problem (``file:line: path: message``) and a count to stderr; exit with code 2."""
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"{path}: {len(exc.problems)} problem(s); {what}", file=sys.stderr)
    raise SystemExit(2)
