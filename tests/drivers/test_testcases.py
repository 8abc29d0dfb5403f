"""Every driver's bad configs (``drivers/<name>/testcases/*.yaml``) fail with exactly the errors in the ``.err`` beside.

As Telegraf does: one test for all drivers; a driver adds cases by adding files. In an ``.err`` file
``DRIVERS`` stands for the folder of the installed driver packages and ``KNOWN`` for the list of
registered drivers, so that expected messages do not depend on where the repository lies.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import edugate.drivers
from edugate.drivers.registry import driver_classes
from edugate.gateway.config import ConfigError, load_config

DRIVERS = Path(edugate.drivers.__file__).resolve().parent
CASES = sorted(DRIVERS.glob("*/testcases/*.yaml"))


@pytest.fixture(autouse=True)
def _no_site_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings from the environment (EDUGATE_PROFILE_PATH, ...) must not change what a testcase sees."""
    for name in [n for n in os.environ if n.startswith("EDUGATE_")]:
        monkeypatch.delenv(name)


def test_every_driver_folder_with_testcases_has_some() -> None:
    assert len(CASES) >= 7, CASES
    for case in CASES:
        assert case.with_suffix(".err").is_file(), f"{case} has no {case.with_suffix('.err').name} beside it"


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.parent.name}/{p.stem}" for p in CASES])
def test_bad_config_fails_with_the_expected_errors(path: Path) -> None:
    expected = (path.with_suffix(".err").read_text().replace("DRIVERS", str(DRIVERS))
                .replace("KNOWN", ", ".join(driver_classes())).splitlines())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    got = [str(p).replace(str(path.parent) + "/", "") for p in info.value.problems]
    assert got == expected
