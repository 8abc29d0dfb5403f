"""The library's own mapping from card pseudonyms to patron barcodes (``library-patrons.csv``), kept locally.

A self-check station sees a student card; the library system knows the
student by the library's patron barcode. The library creates the mapping with
the school key (``edugate pseudonym --roster patrons.csv``, whose output has
the columns ``student_id,pseudonym``: put the patron barcode in the roster's
``student_id`` column) and copies it to the gateway. Accepted headers:
``pseudonym`` plus one of ``patron``, ``patron_barcode`` or ``student_id``.

The file stays on the gateway (mode 0600 recommended): patron barcodes are
sent to the library system only, never upstream, and never logged. It is read
again when it changes on disk.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

PSEUDONYM_RE = re.compile(r"^p1-[0-9a-f]{32}$")
PATRON_COLUMNS = ("patron", "patron_barcode", "student_id")


class PatronFileError(ValueError):
    """The mapping file is unreadable; the message names the file and line, never a barcode."""


def load_patrons(path: Path) -> dict[str, str]:
    """pseudonym -> patron barcode. Raises :class:`PatronFileError` naming the line of the first problem."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise PatronFileError(f"{path}: cannot read: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        column = next((c for c in PATRON_COLUMNS if c in header), None)
        if "pseudonym" not in header or column is None:
            raise PatronFileError(f"{path}:1: the header needs 'pseudonym' and one of {', '.join(PATRON_COLUMNS)}")
        reader.fieldnames = header
        out: dict[str, str] = {}
        try:
            for line, row in enumerate(reader, start=2):
                pseudonym, patron = (row.get("pseudonym") or "").strip(), (row.get(column) or "").strip()
                if not pseudonym and not patron:
                    continue
                if not PSEUDONYM_RE.match(pseudonym):
                    raise PatronFileError(f"{path}:{line}: 'pseudonym' is not a p1-... pseudonym")
                if not patron or "|" in patron or len(patron) > 64:
                    raise PatronFileError(f"{path}:{line}: '{column}' must be 1-64 characters without '|'")
                if pseudonym in out:
                    raise PatronFileError(f"{path}:{line}: the same pseudonym appears twice")
                out[pseudonym] = patron
        except (csv.Error, UnicodeDecodeError) as exc:
            raise PatronFileError(f"{path}: not a UTF-8 CSV file ({type(exc).__name__})") from None
    return out


class PatronMap:
    """The mapping, re-read when the file's modification time or size changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._map: dict[str, str] = {}
        self._stamp: tuple[float, int] | None = None
        self.error: str | None = None

    def lookup(self, pseudonym: str) -> str | None:
        self._refresh()
        return self._map.get(pseudonym)

    def __len__(self) -> int:
        self._refresh()
        return len(self._map)

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except OSError as exc:
            self._fail(f"{self.path}: cannot read: {exc.strerror}")
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._map = load_patrons(self.path)
        except PatronFileError as exc:
            self._fail(str(exc))
            return
        self.error = None
        log.info("library patrons: %d cards mapped from %s", len(self._map), self.path)

    def _fail(self, message: str) -> None:
        if message != self.error:
            log.error("library patrons: %s (keeping the %d entries read before)", message, len(self._map))
        self.error = message
