"""The plain-text part of an email: readable structure, links spelled out, hidden text left out."""

from __future__ import annotations

import pytest

from campaign.content.plaintext import convert, html_to_text, spells_out


def test_headings_are_marked_and_set_apart() -> None:
    """Top headings keep a visible marker and a blank line separates them from the text."""
    html = "<h1>Welcome</h1><h2>Week one</h2><p>Body text.</p>"

    assert html_to_text(html) == "# Welcome\n\n## Week one\n\nBody text.\n"


def test_numbered_lists_are_numbered() -> None:
    """Items of an ordered list are numbered 1, 2, 3, one per line."""
    html = "<p>Steps:</p>\n<ol>\n  <li>Sit tall</li>\n  <li>Breathe</li>\n  <li>Relax</li>\n</ol>"

    assert html_to_text(html) == "Steps:\n\n1. Sit tall\n2. Breathe\n3. Relax\n"


def test_each_numbered_list_starts_again_at_one() -> None:
    """A second ordered list in the same email counts from 1 again."""
    html = "<ol><li>A</li><li>B</li></ol><p>Then:</p><ol><li>C</li></ol>"

    assert html_to_text(html) == "1. A\n2. B\n\nThen:\n\n1. C\n"


def test_bullet_lists_become_dashes() -> None:
    """Items of an unordered list are shown as dash bullets, one per line."""
    html = "<ul>\n<li>Ice</li>\n<li>Heat</li>\n</ul>"

    assert html_to_text(html) == "- Ice\n- Heat\n"


def test_links_are_spelled_out_after_their_text() -> None:
    """A link shows its text followed by the address in angle brackets."""
    html = '<p>Get the <a href="https://example.org/ebook">free ebook</a> now.</p>'

    assert html_to_text(html) == "Get the free ebook <https://example.org/ebook> now.\n"


def test_a_link_whose_text_is_its_address_is_not_repeated() -> None:
    """A link already showing its own address is written once."""
    html = '<p>Visit <a href="https://example.org/">https://example.org/</a></p>'

    assert html_to_text(html) == "Visit https://example.org/\n"


@pytest.mark.parametrize(
    "hidden",
    [
        '<span aria-hidden="true">Preview text</span>',
        '<div style="display:none">Preview text</div>',
        '<div style="display: none; max-height:0">Preview text</div>',
        '<span class="preheader" aria-hidden="true" style="display:none; mso-hide:all;">'
        "Preview text&#8199;&#65279;&#847;</span>",
    ],
)
def test_a_hidden_preheader_is_left_out(hidden: str) -> None:
    """Preview text hidden with aria-hidden or display:none does not show in the plain text."""
    html = f"{hidden}<p>Hello Ann,</p><p>Today: posture.</p>"

    assert html_to_text(html) == "Hello Ann,\n\nToday: posture.\n"


def test_style_and_head_contents_are_left_out() -> None:
    """CSS rules and the document title never show up as text."""
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Subject</title>"
        "<style>p { color: red; }</style></head><body><p>Hi</p></body></html>"
    )

    assert html_to_text(html) == "Hi\n"


def test_entities_are_decoded() -> None:
    """Named and numeric character references appear as the characters they stand for."""
    html = "<p>Fish &amp; chips &lt;3 caf&eacute; &#8212; &quot;ok&quot; &#x2713;</p>"

    assert html_to_text(html) == 'Fish & chips <3 café — "ok" ✓\n'


def test_a_br_is_a_line_break() -> None:
    """A <br> starts a new line without an empty line in between."""
    html = "<p>To your health,<br>Dr Example<br/>Clinic</p>"

    assert html_to_text(html) == "To your health,\nDr Example\nClinic\n"


def test_paragraphs_are_separated_by_one_blank_line() -> None:
    """Source whitespace collapses and paragraphs are separated by exactly one blank line."""
    html = "<p>First   paragraph\n   wraps.</p>\n\n\n<div><p>Second.</p></div>"

    assert html_to_text(html) == "First paragraph wraps.\n\nSecond.\n"


@pytest.mark.parametrize(
    "html",
    [
        '<html><head><base href="https://example.org/"></head><body><p>Hello</p></body></html>',
        '<div style="display:none">Preview<p>more preview</div><p>Hello</p>',
    ],
)
def test_unclosed_elements_do_not_hide_the_body(html: str) -> None:
    """Valid HTML that leaves an element unclosed in the head or preheader keeps its body text."""
    assert html_to_text(html) == "Hello\n"


def test_conversion_reports_the_links_it_decided_on() -> None:
    """Each shown link comes back with its address and text, hidden ones do not."""
    html = (
        '<span style="display:none"><a href="https://example.org/h">hidden</a></span>'
        '<p><a href="https://example.org/a">A</a> <a href="/relative">B</a></p>'
    )

    conversion = convert(html)

    assert conversion.links == (("https://example.org/a", "A"), ("/relative", "B"))
    assert conversion.text == "A <https://example.org/a> B\n"
    assert [spells_out(href or "", text) for href, text in conversion.links] == [True, False]
