from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edugate.gateway.runtime.outbox import Outbox


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = await Outbox.open(tmp_path / "o.sqlite", budget_bytes=1 << 30)
    yield box
    await box.close()
