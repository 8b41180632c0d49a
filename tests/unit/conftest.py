"""Fixtures shared by the plan tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A templates folder holding only `a.html`."""
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "a.html").write_text("<p>Hello</p>", encoding="utf-8")
    return folder
