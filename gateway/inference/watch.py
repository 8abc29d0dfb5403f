"""Notice a model dropped in place: the manifest or the model file changed since it was last looked at."""

from __future__ import annotations

from pathlib import Path

Signature = tuple[tuple[int, int] | None, ...]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class FileWatch:
    """``changed()`` is True the first time, then whenever one of the files' mtime or size changed."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self._seen: Signature | None = None

    def changed(self) -> bool:
        now = tuple(_stat(p) for p in self.paths)
        if now == self._seen:
            return False
        self._seen = now
        return True
