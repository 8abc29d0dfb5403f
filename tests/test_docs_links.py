"""Every relative link in the documentation leads somewhere: the file exists, and a ``#fragment`` names a
heading of the target (GitHub's anchors). Read from the Markdown (no network): the README, ``docs/``, and
every README and guide beside the code (``drivers/<name>/README.md``, ``ml_models/*/MODEL_CARD.md``, ...).
A failure names each broken link as ``file:line: target (why)``. And the README's layout section names every
folder of the tree (issue 11: it must describe the tree as it is).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from tests.helpers import REPO

SKIP_DIRS = {"node_modules", "__pycache__", "build", "dist", "tests"}  # and every hidden folder (.git, .venv*)
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")  # [label]: target
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def markdown_files() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files) if f.endswith(".md")]
    return found


def _prose_lines(text: str, *, keep_code: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked out unless ``keep_code``."""
    fence = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        yield number, line if keep_code else re.sub(r"`[^`]*`", "``", line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file (headings, numbered when repeated as GitHub does, and ``<a name>``)."""
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    for _, line in _prose_lines(text, keep_code=True):  # `code` in a heading is part of its anchor
        if match := HEADING.match(line):
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for target in INLINE.findall(line):
            yield number, target
        if match := REFERENCE.match(line):
            yield number, match.group(1)


def broken(path: Path, target: str) -> str | None:
    """Why the link ``target`` in ``path`` leads nowhere, or None."""
    if EXTERNAL.match(target):
        return None
    file_part, _, fragment = target.partition("#")
    destination = (path.parent / unquote(file_part)).resolve() if file_part else path
    if not destination.exists():
        return "no such file"
    if REPO.resolve() not in [destination, *destination.parents]:
        return "outside the repository"
    if fragment and destination.suffix == ".md" and unquote(fragment).lower() not in anchors(destination):
        return f"no heading #{fragment} in {destination.relative_to(REPO.resolve())}"
    return None


def test_slugs_follow_github() -> None:
    assert slug("How to add a driver") == "how-to-add-a-driver"
    assert slug("Drivers: what there is, and how to add one") == "drivers-what-there-is-and-how-to-add-one"
    assert slug("`edugate check` and [the schema](x.md)") == "edugate-check-and-the-schema"
    assert slug("Ingest (central.yaml)") == "ingest-centralyaml"
    assert slug("9. Commands (`cmd` and `cmd-result`)") == "9-commands-cmd-and-cmd-result"


def test_the_checker_finds_broken_links() -> None:
    """The suite test would pass vacuously if links were missed: a probe file inside the repository."""
    probe = REPO / "docs" / f".probe-{os.getpid()}.md"  # hidden: never collected by markdown_files()
    probe.write_text("# Top\n\n[ok](../README.md#how-to-add-a-driver) [self](#top) [web](https://example.org)\n"
                     "[gone](nowhere.md) [bad anchor](../README.md#no-such-section)\n```\n[code](skipped.md)\n```\n"
                     "[ref]: ./missing.md\n")
    try:
        found = [(n, t, broken(probe, t)) for n, t in links(probe)]
    finally:
        probe.unlink()
    assert [(n, t) for n, t, _ in found] == [
        (3, "../README.md#how-to-add-a-driver"), (3, "#top"), (3, "https://example.org"), (4, "nowhere.md"),
        (4, "../README.md#no-such-section"), (8, "./missing.md")]
    assert [why for _, _, why in found] == [
        None, None, None, "no such file", "no heading #no-such-section in README.md", "no such file"]


def test_every_relative_link_in_the_docs_leads_somewhere() -> None:
    files = markdown_files()
    assert REPO / "README.md" in files and any(p.parent.name == "docs" for p in files)
    problems = [f"{path.relative_to(REPO)}:{number}: {target} ({why})"
                for path in files for number, target in links(path) if (why := broken(path, target))]
    assert not problems, f"{len(problems)} broken link(s) in the docs:\n" + "\n".join(problems)


def _layout_rows() -> dict[str, str]:
    """The README's layout table: folder -> its description."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([a-z_]+)/` \| (.*) \|$", section, re.M))


def test_the_readme_layout_names_every_folder_and_subpackage() -> None:
    """The layout section describes the tree as it is: every top-level folder has its row, and the rows of the
    two ends name each of their subpackages (``runtime/``, ``ingest/``, ...), so a new one cannot go unmentioned."""
    rows = _layout_rows()
    folders = sorted(p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and not p.name.endswith(".egg-info") and p.name not in SKIP_DIRS - {"tests"})
    missing = [f"a row for {f}/" for f in folders if f not in rows]
    for package in ("gateway", "central", "common"):
        subpackages = sorted(p.parent.name for p in (REPO / package).glob("*/__init__.py"))
        missing += [f"{s}/ in the {package}/ row" for s in subpackages if f"`{s}/`" not in rows.get(package, "")]
    assert not missing, "the README's layout section lacks: " + ", ".join(missing)
