"""Every ``# type: ignore`` in the package says why (issue 11): ``# type: ignore[code]  # the reason``.

mypy (``scripts/typecheck.sh``, ``warn_unused_ignores``) already fails on an ignore that is no longer needed;
this test fails on a new one without a reason, and on one without an error code (which would hide every error
of its line). ``NOT_YET_JUSTIFIED`` holds the ones found when this test was written, per file; it may only
shrink (a file with fewer than listed passes; remove its entry once it reaches 0).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections import Counter

from tests.helpers import REPO
from tests.test_boundaries import FOLDERS, python_files

IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")
REASON = re.compile(r"^\s*#\s*\S")  # a second comment after the ignore

# file -> how many ignores without a reason it had on 2026-12-03 (owned by other work at the time)
NOT_YET_JUSTIFIED: dict[str, int] = {
    "central/ingest/amqp_worker.py": 1,
}


def ignores(source: str) -> list[tuple[int, str, str]]:
    """(line, codes, what follows) of every ``type: ignore`` comment (comments only, not strings)."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and (match := IGNORE.search(token.string)):
            found.append((token.start[0], match.group("codes") or "", match.group("rest")))
    return found


def unjustified(source: str) -> list[int]:
    return [line for line, codes, rest in ignores(source) if not codes or not REASON.match(rest)]


def test_the_scanner_tells_reasons_apart() -> None:
    source = ('a = 1  # type: ignore[assignment]  # paho types it int\nb = 2  # type: ignore[assignment]\n'
              'c = 3  # type: ignore  # no code\ns = "# type: ignore[x]"\nd = 4  # type: ignore[misc] # why\n')
    assert [line for line, _, _ in ignores(source)] == [1, 2, 3, 5]
    assert unjustified(source) == [2, 3]


def test_every_type_ignore_in_the_package_says_why() -> None:
    found: Counter[str] = Counter()
    lines: dict[str, list[int]] = {}
    for folder in FOLDERS:
        for path in python_files(REPO / folder):
            if bad := unjustified(path.read_text(encoding="utf-8")):
                name = str(path.relative_to(REPO))
                found[name], lines[name] = len(bad), bad
    new = [f"{name}:{line}" for name in sorted(found) if found[name] > NOT_YET_JUSTIFIED.get(name, 0)
           for line in lines[name]]
    assert not new, ("type: ignore without an error code and a reason ('# type: ignore[code]  # why'), in "
                     "files that had none or fewer: " + ", ".join(new))
