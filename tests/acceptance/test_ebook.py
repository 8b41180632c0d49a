"""The free ebook: built from its Markdown source, reproducibly, at a readable length."""

from __future__ import annotations

import re
import subprocess
import sys
import zlib
from pathlib import Path

from tests.tools import ROOT

PDF = ROOT / "assets" / "concepts-of-self-healing.pdf"
SOURCE = ROOT / "assets" / "ebook" / "concepts-of-self-healing.md"


def _build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_ebook.py"), str(source), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_shipped_pdf_is_what_its_source_builds(tmp_path: Path) -> None:
    """Rebuilding the Markdown gives the committed PDF byte for byte (no stale ebook ships)."""
    out = tmp_path / "ebook.pdf"
    result = _build(SOURCE, out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PDF.read_bytes(), "run `make ebook` and commit the PDF"


def test_the_ebook_is_a_short_guide_of_8_to_16_pages() -> None:
    """The PDF is a real document of 8 to 16 pages titled Concepts of Self Healing.

    Raised from 6-10 when the guide gained a contents page, an illustration per exercise,
    an author box and a references page: the text itself stayed about as long."""
    data = PDF.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert 8 <= pages <= 16
    assert b"Concepts of Self Healing" in data


def test_an_unsupported_construct_is_reported_with_file_and_line(tmp_path: Path) -> None:
    """A table in the Markdown stops the build with exit 2 and `file:line`, not a traceback."""
    source = tmp_path / "book.md"
    source.write_text("# Title\n\nSubtitle\n\n## Chapter\n\n| a | b |\n")
    result = _build(source, tmp_path / "book.pdf")
    assert result.returncode == 2
    assert f"{source}:7:" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_ebook_is_illustrated_linked_referenced_and_flags_emergencies() -> None:
    """Contents links, embedded illustrations, references, the author placeholder, red flags."""
    data = PDF.read_bytes()
    source = SOURCE.read_text()
    # The illustrations are drawn as vectors (from their SVGs): the pages that draw them are
    # those using the arrows' accent color, #c97850, which the text never uses.
    pages = [zlib.decompress(s) for s in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S)]
    illustrated = [page for page in pages if b"0.7882 0.4667 0.3098 RG" in page]
    assert len(illustrated) >= 6
    assert len(re.findall(rb"/Subtype\s*/Link", data)) >= 10
    assert source.count("![illustration](") >= 8
    assert "## References" in source
    assert "https://www.nice.org.uk/guidance/ng59" in source
    assert "your name, credentials and registration number go here" in source
    assert (
        "**Emergencies - call your local emergency number now:** loss of bladder or bowel "
        "control, or numbness around the groin or buttocks; chest pain, shortness of breath "
        "or sweating with back pain." in source
    )


def test_an_unknown_illustration_is_reported_with_file_and_line(tmp_path: Path) -> None:
    """`![illustration](no-such-move)` stops the build with exit 2 at its file:line."""
    source = tmp_path / "book.md"
    source.write_text("# Title\n\nSubtitle\n\n## Chapter\n\n![illustration](no-such-move)\n")
    result = _build(source, tmp_path / "book.pdf")
    assert result.returncode == 2
    assert f"{source}:7: unknown illustration 'no-such-move'" in result.stderr
