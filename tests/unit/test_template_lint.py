"""What `plan check` calls a relative link and an unknown block, on templates in a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.content.sandbox import file_templates
from campaign.content.template_lint import expander, template_findings

BASE = (
    '{% block greeting %}Hi{% endblock %}{% block content %}{% endblock %}<a href="{{ u }}">x</a>'
)


def _findings(tmp_path: Path, body: str, **context: str) -> list[tuple[str, int, str]]:
    (tmp_path / "base.html").write_text(BASE)
    (tmp_path / "step.html").write_text(body)
    files = file_templates(tmp_path)
    expand = expander(files, {"u": "https://example.org/u", **context})
    return list(template_findings(files, "step.html", tmp_path, expand))


@pytest.mark.parametrize(
    "link",
    ["https://example.org/a", "http://example.org", "mailto:a@example.org", "tel:+123", "cid:logo"],
)
def test_absolute_links_pass(tmp_path: Path, link: str) -> None:
    """A URL with a scheme (and a host for http and https) is fine in an email."""
    assert _findings(tmp_path, f"<a href=\"{link}\">a</a><img src='{link}'>") == []


@pytest.mark.parametrize(
    "link", ["/knees", "knees.html", "#top", "//example.org/x", "https:/x", ""]
)
def test_relative_links_are_reported_at_their_line(tmp_path: Path, link: str) -> None:
    """A link a mail client cannot resolve is reported at its own line of the template."""
    found = _findings(tmp_path, f'<p>one</p>\n<a href="{link}">a</a>')
    assert [(Path(f).name, line) for f, line, _ in found] == [("step.html", 2)]
    assert "relative link in href" in found[0][2]


def test_a_link_from_a_variable_is_judged_by_its_value(tmp_path: Path) -> None:
    """`{{ base }}/x` passes when `base` is absolute and is reported when it is not."""
    assert _findings(tmp_path, '<a href="{{ base }}/x">a</a>', base="https://e.org") == []
    (found,) = _findings(tmp_path, '<a href="{{ base }}/x">a</a>', base="")
    assert "(gives '/x')" in found[2]


def test_a_block_of_the_base_passes_and_a_misspelt_one_is_named(tmp_path: Path) -> None:
    """Blocks are compared with those the extended templates define, with the nearest name."""
    assert _findings(tmp_path, '{% extends "base.html" %}{% block content %}x{% endblock %}') == []
    (found,) = _findings(tmp_path, '{% extends "base.html" %}\n{% block greting %}{% endblock %}')
    assert found[1] == 2
    assert "unknown block 'greting'" in found[2]
    assert "did you mean 'greeting'?" in found[2]
