"""Readable plain text from an email's HTML: paragraphs, numbered lists, links spelled out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "table", "tr", "ul", "ol", "blockquote"}
_CELLS = {"td", "th"}
_SKIP = {"style", "script", "head", "title"}
_SCHEMES = ("http://", "https://", "mailto:")
_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "wbr",
}


class _TextWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.trailing_newlines = 0  # newlines at the end of `out`, kept so no join is needed
        self.open: list[tuple[str, bool]] = []  # open elements: (tag, hides its content)
        self.hidden = 0  # how many open elements hide their content
        self.lists: list[list[int]] = []  # per open list: [is_ordered, counter]
        self.links: list[tuple[str | None, list[str]]] = []
        self.closed_links: list[tuple[str | None, str]] = []  # (href, text) of each shown link

    def _write(self, text: str) -> None:
        if not text:
            return
        if self.links:
            self.links[-1][1].append(text)
        self.out.append(text)
        stripped = text.rstrip("\n")
        if stripped:
            self.trailing_newlines = len(text) - len(stripped)
        else:
            self.trailing_newlines += len(text)

    def _newlines(self, count: int) -> None:
        if self.out and self.trailing_newlines < count:
            self._write("\n" * (count - self.trailing_newlines))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in _VOID:
            if not self.hidden:
                self._void(tag, attributes)
            return
        style = (attributes.get("style") or "").replace(" ", "").lower()
        hides = tag in _SKIP or attributes.get("aria-hidden") == "true" or "display:none" in style
        if tag == "p" and self.open and self.open[-1][0] == "p":
            self._close_to(len(self.open) - 1)  # a <p> implicitly ends the open <p>
        self.open.append((tag, hides))
        self.hidden += hides
        if self.hidden:
            return
        if tag in _BLOCKS:
            self._newlines(2)
        if tag in {"h1", "h2"}:
            self._write("## " if tag == "h2" else "# ")
        if tag in _CELLS and self.out and self.trailing_newlines == 0:
            self._write(" ")
        if tag in {"ul", "ol"}:
            self.lists.append([tag == "ol", 0])
        if tag == "li":
            self._newlines(1)
            if self.lists and self.lists[-1][0]:
                self.lists[-1][1] += 1
                self._write(f"{self.lists[-1][1]}. ")
            else:
                self._write("- ")
        if tag == "a":
            self.links.append((attributes.get("href"), []))

    def _void(self, tag: str, attributes: dict[str, str | None]) -> None:
        if tag == "br":
            self._write("\n")
        elif tag == "hr":
            self._newlines(2)
        elif tag == "img" and attributes.get("alt"):
            self._write(f"[{attributes['alt']}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        # Like a browser: an end tag closes the nearest open element of its name and every
        # element left open inside it; an end tag with no open element is ignored.
        for position in range(len(self.open) - 1, -1, -1):
            if self.open[position][0] == tag:
                self._close_to(position)
                return

    def _close_to(self, position: int) -> None:
        while len(self.open) > position:
            tag, hides = self.open.pop()
            if not self.hidden:
                self._closed(tag)
            self.hidden -= hides

    def _closed(self, tag: str) -> None:
        if tag == "a" and self.links:
            href, parts = self.links.pop()
            text = "".join(parts).strip()
            self.closed_links.append((href, text))
            if href is not None and spells_out(href, text):
                self._write(f" <{href}>" if text else href)
        if tag in {"ul", "ol"} and self.lists:
            self.lists.pop()
        if tag in _BLOCKS:
            self._newlines(2)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        text = _WHITESPACE.sub(" ", data)
        if not self.out or self.trailing_newlines:
            text = text.lstrip()
        self._write(text)


@dataclass(frozen=True)
class Conversion:
    text: str
    #: (href, text) of every link shown, in order: what `spells_out` decided on.
    links: tuple[tuple[str | None, str], ...]


def spells_out(href: str, text: str) -> bool:
    """Whether a link's address follows its text: absolute ones, unless the text already is it."""
    return href.startswith(_SCHEMES) and href != text


def convert(html: str) -> Conversion:
    """The plain text of `html`, with the links it decided about."""
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    lines = [line.rstrip() for line in "".join(writer.out).splitlines()]
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"
    return Conversion(text, tuple(writer.closed_links))


def html_to_text(html: str) -> str:
    """Plain text a person can read in any client; hidden preheaders are left out."""
    return convert(html).text
