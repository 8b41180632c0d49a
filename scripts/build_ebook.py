"""Build the free ebook PDF, *Concepts of Self Healing*, from its Markdown source.

The welcome email links to (and can attach) ``assets/concepts-of-self-healing.pdf``. This
script renders that PDF from ``assets/ebook/concepts-of-self-healing.md`` with fpdf2:

    .venv/bin/python scripts/build_ebook.py [SOURCE.md] [--out PDF]

It prints the output path and the page count. Rebuilding an unchanged source gives a
byte-identical PDF (fixed creation date and metadata), so the file only shows up as
changed in version control when the text really changed.

Editing the ebook (for marketers)
---------------------------------
Edit the Markdown file in any text editor, then run the command above. Only this small
subset of Markdown is understood:

- ``# Title`` once, on the first line. The paragraphs between the title and the first
  chapter go on the cover: the first is the subtitle, any others are smaller taglines.
- ``## Chapter`` headings and ``### Subheadings``.
- Paragraphs, separated by a blank line.
- ``- `` bullet lists and ``1. `` numbered lists (no nesting).
- ``**bold**`` inside text.
- ``![illustration](chin-tuck)`` on a line of its own: the exercise illustration of that key
  (``templates/emails/images/illustrations.json``, drawn by ``make illustrations``).
- ``![placeholder](text)`` on a line of its own: a dashed box marking something the site must
  fill in before publishing (the author's name and credentials).

Use plain ASCII punctuation: straight quotes (' and "), a hyphen (-) for dashes and three
dots (...) for an ellipsis. The PDF uses the built-in Helvetica font, which cannot draw
curly quotes or long dashes. Anything the script does not understand (tables, images,
links, ``####`` headings, ...) stops the build with a ``file:line: problem`` message and
exit code 2, so nothing silently disappears from the PDF.

Using your own PDF instead
--------------------------
If a designer supplies a finished PDF, do not run this script: copy the file over
``assets/concepts-of-self-healing.pdf`` (keep the name, or update the attachment path in
the plan YAML and ``EBOOK_URL`` to match). Running this script again would overwrite it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import Align, MethodReturnValue, XPos, YPos

REPO_ROOT = Path(__file__).resolve().parent.parent
ILLUSTRATIONS = REPO_ROOT / "templates" / "emails" / "images"
DEFAULT_SOURCE = REPO_ROOT / "assets" / "ebook" / "concepts-of-self-healing.md"
DEFAULT_OUTPUT = REPO_ROOT / "assets" / "concepts-of-self-healing.pdf"

AUTHOR = "Pain & Injury Doctor"
# A fixed date instead of "now": it is written into the PDF, and a moving date would make
# every rebuild a different file even when the text did not change.
CREATION_DATE = datetime(2026, 1, 1, tzinfo=UTC)

EXIT_UNSUPPORTED = 2

# Layout, in millimetres and points. US Letter because most readers print on it.
PAGE_FORMAT = "Letter"
MARGIN_SIDE = 24.0
MARGIN_TOP = 24.0
MARGIN_BOTTOM = 24.0
FOOTER_OFFSET = -14.0
BODY_PT = 11.5
LINE_HEIGHT_FACTOR = 1.5
PARAGRAPH_GAP = 3.0
LIST_INDENT = 7.0
LIST_ITEM_GAP = 1.2
CHAPTER_PT = 19.0
SUBHEADING_PT = 13.5
# A chapter that would start in the last stretch of a page starts on a fresh page instead.
MIN_SPACE_FOR_CHAPTER = 70.0
SHORT_PARAGRAPH_LINES = 4
#: chapters that open a page of their own however much room is left.
OWN_PAGE = frozenset({"References"})

TEAL = "#0F5257"
BODY_TEXT = "#2B2B2B"
MUTED_TEXT = "#6B6B6B"
COVER_TEXT = "#FFFFFF"
COVER_TINT = "#D6E6E7"
ACCENT = "#C9774F"
PLACEHOLDER_FILL = "#FFF4D6"
PLACEHOLDER_INK = "#B7791F"
ILLUSTRATION_WIDTH = 120.0
COVER_ILLUSTRATION = "wall-angels"
FONT = "Helvetica"

# Typographic characters people paste from word processors, with the ASCII to use instead.
ASCII_REPLACEMENTS = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2026": "...",
    "\u2022": "- (at the start of a line)",
}


# --------------------------------------------------------------------------- errors


class UnsupportedMarkdownError(Exception):
    """A construct in the source that this small renderer does not understand."""

    def __init__(self, source: Path, line: int, problem: str) -> None:
        super().__init__(f"{source}:{line}: {problem}")


# ----------------------------------------------------------------- document model


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Subheading:
    text: str


@dataclass(frozen=True)
class ListBlock:
    ordered: bool
    start: int
    items: tuple[str, ...]


@dataclass(frozen=True)
class Illustration:
    key: str
    alt: str
    image: Path


@dataclass(frozen=True)
class Placeholder:
    text: str


Block = Paragraph | Subheading | ListBlock | Illustration | Placeholder


@dataclass
class Chapter:
    heading: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Ebook:
    title: str
    subtitle: str
    cover_lines: list[str]
    chapters: list[Chapter]


# --------------------------------------------------------------------------- parser

HEADING = re.compile(r"^(#{1,3}) (\S.*)$")
TOO_DEEP_HEADING = re.compile(r"^#{4,}\s")
BULLET_ITEM = re.compile(r"^- (\S.*)$")
NUMBERED_ITEM = re.compile(r"^(\d{1,3})\. (\S.*)$")
THEMATIC_BREAK = re.compile(r"^([-*_])(\s*\1){2,}\s*$")
INLINE_LINK = re.compile(r"\[[^\]]*\]\(")
HTML_TAG = re.compile(r"<[A-Za-z/!]")
#: the two image-like lines this renderer draws: an illustration by key, a placeholder box.
ILLUSTRATION_LINE = re.compile(r"^!\[illustration\]\(([a-z0-9]+(?:-[a-z0-9]+)*)\)$")
PLACEHOLDER_LINE = re.compile(r"^!\[placeholder\]\(([^()]+)\)$")

# Line starts that mean something in full Markdown but that this renderer cannot draw.
# Order matters: the first match wins, so "```" is checked before anything looser.
UNSUPPORTED_LINE_STARTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (TOO_DEEP_HEADING, "#### and deeper headings are not supported; use ## or ###"),
    (re.compile(r"^#+([^#\s]|$)"), "a heading needs a space and text after the # signs"),
    (re.compile(r"^\|"), "tables are not supported"),
    (re.compile(r"^!\["), "images are not supported"),
    (re.compile(r"^>"), "block quotes are not supported"),
    (re.compile(r"^(```|~~~)"), "code blocks are not supported"),
    (THEMATIC_BREAK, "horizontal rules are not supported"),
    (re.compile(r"^[*+] "), "use '- ' for bullet points"),
    (re.compile(r"^\d+\) "), "use '1. ' (with a dot) for numbered lists"),
    (re.compile(r"^<"), "HTML is not supported"),
)


@dataclass
class _ParserState:
    """What the parser is in the middle of while it walks the source line by line."""

    source: Path
    title: str | None = None
    front_matter: list[str] = field(default_factory=list)
    chapters: list[Chapter] = field(default_factory=list)
    paragraph_lines: list[str] = field(default_factory=list)
    paragraph_line: int = 0
    list_ordered: bool | None = None
    list_start: int = 1
    list_items: list[str] = field(default_factory=list)
    list_line: int = 0

    def fail(self, line: int, problem: str) -> UnsupportedMarkdownError:
        return UnsupportedMarkdownError(self.source, line, problem)

    def add_block(self, block: Block, line: int) -> None:
        if self.title is None:
            raise self.fail(line, "the file must start with a '# Title' line")
        if self.chapters:
            self.chapters[-1].blocks.append(block)
        elif isinstance(block, Paragraph):
            self.front_matter.append(block.text)
        else:
            raise self.fail(line, "only plain paragraphs may come before the first ## chapter")

    def flush_paragraph(self) -> None:
        if self.paragraph_lines:
            text = " ".join(self.paragraph_lines)
            check_bold_markers(text, self, self.paragraph_line)
            self.add_block(Paragraph(text), self.paragraph_line)
            self.paragraph_lines = []

    def flush_list(self) -> None:
        if self.list_ordered is not None:
            for item in self.list_items:
                check_bold_markers(item, self, self.list_line)
            block = ListBlock(self.list_ordered, self.list_start, tuple(self.list_items))
            self.add_block(block, self.list_line)
            self.list_ordered = None
            self.list_items = []

    def flush(self) -> None:
        self.flush_paragraph()
        self.flush_list()


def check_characters(text: str, state: _ParserState, line: int) -> None:
    """Reject text the core Helvetica font cannot draw, before fpdf2 fails mid-render."""
    for char in text:
        try:
            char.encode("latin-1")
        except UnicodeEncodeError:
            name = unicodedata.name(char, "unknown character")
            hint = ASCII_REPLACEMENTS.get(char)
            advice = f"; use {hint} instead" if hint else ""
            message = f"character U+{ord(char):04X} ({name}) cannot be drawn in Helvetica"
            raise state.fail(line, message + advice) from None


def check_inline_markup(text: str, state: _ParserState, line: int) -> None:
    """Reject inline Markdown other than **bold**, which fpdf2 would misrender or drop."""
    if "`" in text:
        raise state.fail(line, "inline code (backticks) is not supported")
    if "![" in text:
        raise state.fail(line, "images are not supported")
    if INLINE_LINK.search(text):
        raise state.fail(line, "links are not supported; write the address as plain text")
    if HTML_TAG.search(text):
        raise state.fail(line, "HTML is not supported")
    if "\\" in text:
        raise state.fail(line, "backslashes are not supported")
    if "__" in text:
        raise state.fail(line, "__ emphasis is not supported; use **bold**")
    if "~~" in text:
        raise state.fail(line, "strikethrough (~~) is not supported")
    if "*" in text.replace("**", ""):
        raise state.fail(line, "single * (italics) is not supported; use **bold**")


def check_bold_markers(text: str, state: _ParserState, line: int) -> None:
    # Checked per block, not per line, because a bold span may wrap onto the next line.
    if text.count("**") % 2:
        raise state.fail(line, "unmatched ** (bold markers must come in pairs)")


def check_heading_text(text: str, state: _ParserState, line: int) -> None:
    if "**" in text:
        raise state.fail(line, "** is not supported in headings (they are already bold)")


def handle_heading(level: int, text: str, state: _ParserState, line: int) -> None:
    check_heading_text(text, state, line)
    state.flush()
    if level == 1:
        if state.title is not None:
            raise state.fail(line, "only one '# ' title is allowed; use ## for chapters")
        state.title = text
    elif level == 2:
        if state.title is None:
            raise state.fail(line, "the file must start with a '# Title' line")
        state.chapters.append(Chapter(text))
    else:
        state.add_block(Subheading(text), line)


def handle_list_item(ordered: bool, number: int, text: str, state: _ParserState, line: int) -> None:
    state.flush_paragraph()
    if state.list_ordered is not None and state.list_ordered != ordered:
        state.flush_list()
    if state.list_ordered is None:
        state.list_ordered = ordered
        state.list_start = number
        state.list_line = line
    state.list_items.append(text)


def handle_indented_line(stripped: str, state: _ParserState, line: int) -> None:
    # Indentation only makes sense as the continuation of a list item; anywhere else full
    # Markdown would turn it into a code block, which we do not render.
    if state.list_ordered is None:
        raise state.fail(line, "indented text is not supported; remove the leading spaces")
    if BULLET_ITEM.match(stripped) or NUMBERED_ITEM.match(stripped):
        raise state.fail(line, "nested lists are not supported")
    state.list_items[-1] += " " + stripped


def handle_text_line(text: str, state: _ParserState, line: int) -> None:
    if state.list_ordered is not None:
        # Like CommonMark, an unindented line right after an item continues that item.
        state.list_items[-1] += " " + text
        return
    if not state.paragraph_lines:
        state.paragraph_line = line
    state.paragraph_lines.append(text)


def unsupported_line_problem(line_text: str) -> str | None:
    for pattern, problem in UNSUPPORTED_LINE_STARTS:
        if pattern.match(line_text):
            return problem
    return None


def load_illustrations() -> dict[str, dict[str, str]]:
    manifest = ILLUSTRATIONS / "illustrations.json"
    data: dict[str, dict[str, str]] = json.loads(manifest.read_text(encoding="utf-8"))
    return data


def handle_picture_line(text: str, state: _ParserState, line: int) -> bool:
    """An illustration or placeholder line, added as its block; False for any other line."""
    if found := ILLUSTRATION_LINE.match(text):
        entry = load_illustrations().get(found.group(1))
        if entry is None:
            raise state.fail(line, f"unknown illustration {found.group(1)!r}")
        state.flush()
        image = ILLUSTRATIONS / entry["svg"]
        state.add_block(Illustration(found.group(1), entry["alt"], image), line)
        return True
    if found := PLACEHOLDER_LINE.match(text):
        state.flush()
        state.add_block(Placeholder(found.group(1)), line)
        return True
    return False


def parse_line(raw: str, state: _ParserState, line: int) -> None:
    text = raw.rstrip()
    if not text:
        state.flush()
        return
    check_characters(text, state, line)
    if handle_picture_line(text, state, line):
        return
    stripped = text.lstrip()
    problem = unsupported_line_problem(stripped)
    if problem:
        raise state.fail(line, problem)
    check_inline_markup(stripped, state, line)
    if stripped != text:
        handle_indented_line(stripped, state, line)
        return
    if heading := HEADING.match(text):
        handle_heading(len(heading.group(1)), heading.group(2), state, line)
    elif bullet := BULLET_ITEM.match(text):
        handle_list_item(False, 1, bullet.group(1), state, line)
    elif numbered := NUMBERED_ITEM.match(text):
        handle_list_item(True, int(numbered.group(1)), numbered.group(2), state, line)
    else:
        handle_text_line(text, state, line)


def parse_ebook(markdown: str, source: Path) -> Ebook:
    """Turn the Markdown subset into an Ebook, or raise UnsupportedMarkdownError."""
    state = _ParserState(source)
    lines = markdown.splitlines()
    for number, raw in enumerate(lines, start=1):
        parse_line(raw, state, number)
    state.flush()
    last_line = max(len(lines), 1)
    if state.title is None:
        raise state.fail(1, "the file must start with a '# Title' line")
    if not state.front_matter:
        raise state.fail(2, "add a subtitle paragraph between the title and the first chapter")
    if not state.chapters:
        raise state.fail(last_line, "the ebook has no '## ' chapters")
    return Ebook(state.title, state.front_matter[0], state.front_matter[1:], state.chapters)


# ------------------------------------------------------------------------ rendering


def escape_for_fpdf_markdown(text: str) -> str:
    # fpdf2's markdown mode reads "--" as an underline marker, but in our subset it is just
    # two hyphens; a backslash makes fpdf2 print the marker literally.
    return text.replace("--", "\\--")


class EbookPDF(FPDF):
    """FPDF with the ebook's footer: running title and page number, except on the cover."""

    def __init__(self, running_title: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format=PAGE_FORMAT)
        self.running_title = running_title

    def footer(self) -> None:
        if self.page_no() == 1:
            return
        self.set_y(FOOTER_OFFSET)
        self.set_font(FONT, "", 9)
        self.set_text_color(MUTED_TEXT)
        self.cell(self.epw / 2, 6, self.running_title, align=Align.L)
        self.cell(self.epw / 2, 6, str(self.page_no()), align=Align.R)


def body_line_height() -> float:
    points_to_mm = 25.4 / 72
    return BODY_PT * points_to_mm * LINE_HEIGHT_FACTOR


def use_body_font(pdf: FPDF) -> None:
    pdf.set_font(FONT, "", BODY_PT)
    pdf.set_text_color(BODY_TEXT)


def text_height(pdf: FPDF, width: float, line_height: float, text: str) -> float:
    """Height a multi_cell would take, measured without drawing it."""
    height = pdf.multi_cell(
        width,
        line_height,
        text,
        markdown=True,
        dry_run=True,
        output=MethodReturnValue.HEIGHT,
    )
    # multi_cell returns different types depending on `output`; HEIGHT gives a number.
    if not isinstance(height, float | int):
        raise TypeError(f"fpdf2 returned {type(height).__name__} instead of a height")
    return float(height)


def set_metadata(pdf: FPDF, ebook: Ebook) -> None:
    pdf.set_title(ebook.title)
    pdf.set_subject(ebook.subtitle)
    pdf.set_author(AUTHOR)
    pdf.set_creator("scripts/build_ebook.py")
    pdf.set_lang("en-US")
    pdf.set_creation_date(CREATION_DATE)


def draw_cover(pdf: FPDF, ebook: Ebook) -> None:
    pdf.add_page()
    band_height = pdf.h * 0.5
    pdf.set_fill_color(TEAL)
    pdf.rect(0, 0, pdf.w, band_height, style="F")
    # Soft circles in a lighter teal: a drawn pattern, not a picture to license.
    with pdf.local_context(fill_opacity=0.12):
        pdf.set_fill_color(COVER_TEXT)
        pdf.circle(pdf.w - 38, 40, 46, style="F")
        pdf.circle(pdf.w - 8, band_height - 20, 26, style="F")
        pdf.circle(18, 22, 14, style="F")
    pdf.set_fill_color(ACCENT)
    pdf.rect(MARGIN_SIDE, band_height * 0.30, 18, 1.6, style="F")

    pdf.set_y(band_height * 0.36)
    pdf.set_font(FONT, "B", 34)
    pdf.set_text_color(COVER_TEXT)
    pdf.multi_cell(0, 14, ebook.title, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font(FONT, "", 16)
    pdf.set_text_color(COVER_TINT)
    pdf.multi_cell(0, 8, ebook.subtitle, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.set_font(FONT, "I", 13)
    for line in ebook.cover_lines:
        text = escape_for_fpdf_markdown(line)
        pdf.multi_cell(0, 7, text, markdown=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    cover_art = ILLUSTRATIONS / load_illustrations()[COVER_ILLUSTRATION]["svg"]
    width = pdf.epw
    pdf.image(str(cover_art), x=MARGIN_SIDE, y=band_height + 14, w=width)

    pdf.set_y(pdf.h - MARGIN_BOTTOM - 10)
    pdf.set_font(FONT, "B", 12)
    pdf.set_text_color(TEAL)
    pdf.cell(pdf.epw / 2, 8, AUTHOR, align=Align.L)
    pdf.set_font(FONT, "", 12)
    pdf.set_text_color(MUTED_TEXT)
    pdf.cell(pdf.epw / 2, 8, "A free guide", align=Align.R)


def draw_contents(pdf: FPDF, outline: list[Any]) -> None:
    """The contents page: each chapter a link to its page."""
    pdf.set_xy(pdf.l_margin, pdf.t_margin)
    pdf.set_font(FONT, "B", CHAPTER_PT)
    pdf.set_text_color(TEAL)
    pdf.cell(0, 12, "Contents", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    for section in outline:
        link = pdf.add_link(page=section.page_number)
        pdf.set_font(FONT, "", 12.5)
        pdf.set_text_color(BODY_TEXT)
        pdf.cell(pdf.epw - 14, 10, section.name, link=link, align=Align.L)
        pdf.set_text_color(TEAL)
        pdf.set_font(FONT, "B", 12.5)
        pdf.cell(14, 10, str(section.page_number), link=link, align=Align.R)
        pdf.ln(10)
        pdf.set_draw_color(COVER_TINT)
        pdf.set_line_width(0.2)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + pdf.epw, pdf.get_y())


def draw_chapter_heading(pdf: FPDF, heading: str, is_first: bool) -> None:
    # The contents placeholder leaves a fresh page: the first chapter starts there.
    fresh_page = pdf.get_y() <= pdf.t_margin + 0.01
    wants_page = is_first or heading in OWN_PAGE or pdf.will_page_break(MIN_SPACE_FOR_CHAPTER)
    if wants_page and not fresh_page:
        pdf.add_page()
    elif not fresh_page:
        pdf.ln(8)
    pdf.start_section(heading, level=0)
    pdf.set_font(FONT, "B", CHAPTER_PT)
    pdf.set_text_color(TEAL)
    pdf.multi_cell(0, 9, heading, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    # A short rule under the heading marks the chapter start without a full page break.
    pdf.set_draw_color(TEAL)
    pdf.set_line_width(0.6)
    rule_y = pdf.get_y() + 1.5
    # Start where the text starts: cells indent their text by the cell margin.
    rule_x = pdf.l_margin + pdf.c_margin
    pdf.line(rule_x, rule_y, rule_x + 28, rule_y)
    pdf.set_y(rule_y + 5)


def draw_subheading(pdf: FPDF, text: str, keep_with: float = 0.0) -> None:
    """A subheading, kept on one page with two lines of what follows or `keep_with` mm."""
    pdf.set_font(FONT, "B", SUBHEADING_PT)
    heading_height = text_height(pdf, pdf.epw, 7, text)
    following = max(2 * body_line_height(), keep_with)
    if pdf.will_page_break(2 + heading_height + following):
        pdf.add_page()
    else:
        pdf.ln(2)
    pdf.set_text_color(TEAL)
    pdf.multi_cell(0, 7, text, align=Align.L, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)


def paragraph_height(pdf: FPDF, text: str) -> float:
    use_body_font(pdf)
    return text_height(pdf, pdf.epw, body_line_height(), escape_for_fpdf_markdown(text))


def draw_paragraph(pdf: FPDF, text: str) -> None:
    height = paragraph_height(pdf, text)
    # A short paragraph (a warning, a safety note) is not split across two pages.
    if height <= SHORT_PARAGRAPH_LINES * body_line_height() and pdf.will_page_break(height):
        pdf.add_page()
    use_body_font(pdf)
    pdf.multi_cell(
        0,
        body_line_height(),
        escape_for_fpdf_markdown(text),
        markdown=True,
        align=Align.L,
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(PARAGRAPH_GAP)


def draw_list_marker(pdf: FPDF, ordered: bool, number: int) -> None:
    line_height = body_line_height()
    if ordered:
        pdf.set_font(FONT, "B", BODY_PT)
        pdf.set_text_color(TEAL)
        pdf.set_x(pdf.l_margin)
        pdf.cell(LIST_INDENT - 1.5, line_height, f"{number}.", align=Align.R)
    else:
        # A drawn dot rather than a bullet character: Latin-1 Helvetica has no true bullet.
        radius = 0.8
        pdf.set_fill_color(TEAL)
        centre_x = pdf.l_margin + LIST_INDENT / 2 - 0.5
        centre_y = pdf.get_y() + line_height / 2
        pdf.circle(centre_x - radius, centre_y - radius, radius, style="F")


def draw_list(pdf: FPDF, block: ListBlock) -> None:
    for offset, item in enumerate(block.items):
        # Break before the marker, not inside the text, so a number never sits alone at the
        # bottom of a page while its text starts on the next one.
        if pdf.will_page_break(body_line_height()):
            pdf.add_page()
        draw_list_marker(pdf, block.ordered, block.start + offset)
        use_body_font(pdf)
        pdf.set_x(pdf.l_margin + LIST_INDENT)
        pdf.multi_cell(
            pdf.epw - LIST_INDENT,
            body_line_height(),
            escape_for_fpdf_markdown(item),
            markdown=True,
            align=Align.L,
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        pdf.ln(LIST_ITEM_GAP)
    pdf.ln(PARAGRAPH_GAP - LIST_ITEM_GAP)


def draw_illustration(pdf: FPDF, block: Illustration) -> None:
    height = ILLUSTRATION_WIDTH * 240 / 552
    if pdf.will_page_break(height + 4):
        pdf.add_page()
    x = pdf.l_margin + (pdf.epw - ILLUSTRATION_WIDTH) / 2
    pdf.image(str(block.image), x=x, y=pdf.get_y(), w=ILLUSTRATION_WIDTH, alt_text=block.alt)
    pdf.set_y(pdf.get_y() + height + 4)


def draw_placeholder(pdf: FPDF, block: Placeholder) -> None:
    """A dashed amber box no one can mistake for finished text."""
    pdf.set_font(FONT, "B", BODY_PT)
    text = f"PLACEHOLDER - {block.text}"
    height = text_height(pdf, pdf.epw - 12, body_line_height(), text) + 10
    if pdf.will_page_break(height + 4):
        pdf.add_page()
    top = pdf.get_y()
    pdf.set_fill_color(PLACEHOLDER_FILL)
    pdf.set_draw_color(PLACEHOLDER_INK)
    pdf.set_line_width(0.6)
    with pdf.local_context(dash_pattern={"dash": 2, "gap": 1.5}):
        pdf.rect(pdf.l_margin, top, pdf.epw, height, style="DF")
    pdf.set_xy(pdf.l_margin + 6, top + 5)
    pdf.set_text_color(PLACEHOLDER_INK)
    pdf.multi_cell(pdf.epw - 12, body_line_height(), text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_y(top + height + PARAGRAPH_GAP + 2)


def draw_block(pdf: FPDF, block: Block) -> None:
    if isinstance(block, Illustration):
        draw_illustration(pdf, block)
    elif isinstance(block, Placeholder):
        draw_placeholder(pdf, block)
    elif isinstance(block, Subheading):
        draw_subheading(pdf, block.text)
    elif isinstance(block, Paragraph):
        draw_paragraph(pdf, block.text)
    else:
        draw_list(pdf, block)


def draw_chapters(pdf: FPDF, chapters: Iterable[Chapter]) -> None:
    for index, chapter in enumerate(chapters):
        draw_chapter_heading(pdf, chapter.heading, is_first=index == 0)
        for position, block in enumerate(chapter.blocks):
            if isinstance(block, Subheading):
                keep = kept_with_heading(pdf, chapter.blocks[position + 1 : position + 3])
                draw_subheading(pdf, block.text, keep)
            else:
                draw_block(pdf, block)


def kept_with_heading(pdf: FPDF, following: Sequence[Block]) -> float:
    """Height of the intro paragraph and illustration that open a section, if it has one:
    an exercise's heading never sits on one page and its picture on the next."""
    height = 0.0
    for block in following:
        if isinstance(block, Paragraph):
            height += paragraph_height(pdf, block.text) + PARAGRAPH_GAP
        elif isinstance(block, Illustration):
            return height + ILLUSTRATION_WIDTH * 240 / 552 + 4
        else:
            break
    return 0.0


def render_pdf(ebook: Ebook) -> EbookPDF:
    pdf = EbookPDF(running_title=ebook.title)
    set_metadata(pdf, ebook)
    pdf.set_margins(MARGIN_SIDE, MARGIN_TOP, MARGIN_SIDE)
    pdf.set_auto_page_break(auto=True, margin=MARGIN_BOTTOM)
    draw_cover(pdf, ebook)
    pdf.add_page()
    pdf.insert_toc_placeholder(draw_contents, pages=1)
    draw_chapters(pdf, ebook.chapters)
    return pdf


# ---------------------------------------------------------------------- command line


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the Concepts of Self Healing ebook PDF from its Markdown source."
    )
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"Markdown source (default: {DEFAULT_SOURCE.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"PDF to write (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})",
    )
    return parser.parse_args(argv)


def write_pdf(ebook: Ebook, output: Path) -> int:
    """Render the ebook to output and return the page count."""
    pdf = render_pdf(ebook)
    output.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(output))
    return pdf.pages_count


def report_error(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_UNSUPPORTED


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    source: Path = arguments.source
    output: Path = arguments.out
    try:
        markdown = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return report_error(f"{source}: cannot read the source: {error}")
    try:
        ebook = parse_ebook(markdown, source)
    except UnsupportedMarkdownError as error:
        return report_error(str(error))
    pages = write_pdf(ebook, output)
    print(f"{output}: {pages} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
