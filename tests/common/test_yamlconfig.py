"""The line-aware YAML loading both configs use (``edugate.common.yamlconfig``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from edugate.cli.main import app
from edugate.common.yamlconfig import ConfigError, load_model, parse_mapping, read_text


class Small(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    sizes: list[int] = []


def test_problems_at_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text("name: a\nsizes:\n  - 1\n  - x\nname: b\nextra: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_model(path, Small)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:4: sizes[1]: Input should be a valid integer, unable to parse string as an integer",
        f"{path}:5: name: key 'name' appears twice",
        f"{path}:6: extra: unknown key (a typo?)",
    ]


def test_an_empty_file_is_an_empty_mapping() -> None:
    root, data, problems = parse_mapping("", "empty.yaml")
    assert (root, data, problems) == (None, {}, [])


def test_not_utf8_is_a_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"school: a\nname: Tr\xfd\xf4ng\n")  # Windows-1258, as an old editor may save it
    with pytest.raises(ConfigError) as caught:
        read_text(path)
    [problem] = caught.value.problems
    assert (problem.file, problem.line) == (str(path), 2)
    assert problem.message == "not UTF-8 text (byte 0xfd at offset 18): save the file as UTF-8"


def test_the_gateway_check_reports_a_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_bytes(b"school: s\ngateway: g\nname: caf\xe9\n")
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"{path}:3: not UTF-8 text (byte 0xe9 at offset 30): save the file as UTF-8",
        f"{path}: 1 problem(s); nothing was started",
    ]
