"""docs/configuration.md documents every field of `Settings`, with its environment variable and default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from clawlist.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def _table_rows(text: str) -> dict[str, list[str]]:
    """Settings-table rows keyed by the backticked name in their first cell."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([a-z_][a-z0-9_]*)`", cells[0]) if cells else None
        if match:
            rows[match.group(1)] = cells
    return rows


def _default(name: str) -> Any:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _rendered(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_every_setting_is_documented() -> None:
    text = _doc_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in text]
    assert not missing, f"docs/configuration.md does not mention these settings: {', '.join(missing)}"


def test_every_setting_has_a_table_row_with_its_environment_variable() -> None:
    rows = _table_rows(_doc_text())
    missing = [name for name in Settings.model_fields if name not in rows]
    assert not missing, f"docs/configuration.md has no table row for: {', '.join(missing)}"
    wrong_env = [
        name for name in Settings.model_fields if f"CLAWLIST_{name.upper()}" not in " ".join(rows[name][1:2])
    ]
    assert not wrong_env, f"these rows do not name their CLAWLIST_* variable: {', '.join(wrong_env)}"


def test_no_documented_setting_is_stale() -> None:
    stale = [name for name in _table_rows(_doc_text()) if name not in Settings.model_fields]
    assert not stale, f"docs/configuration.md documents settings that do not exist: {', '.join(stale)}"


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_documented_default_matches(name: str) -> None:
    rows = _table_rows(_doc_text())
    if name not in rows:
        pytest.fail(f"no table row for {name}")
    default_cell = rows[name][2]
    value = _default(name)
    if value is None:
        assert "none" in default_cell.lower(), f"{name}: default is None but the row says {default_cell!r}"
        return
    if isinstance(value, list):
        absent = [item for item in value if f"`{item}`" not in default_cell]
        assert not absent, f"{name}: the documented default lacks {absent}"
        return
    assert isinstance(value, str | int | float | bool | Path), f"{name}: unexpected default type"
    assert _rendered(value) in default_cell, f"{name}: default {value!r} not in the row ({default_cell!r})"
