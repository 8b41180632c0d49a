"""Readable plain text from an email's HTML: paragraphs, numbered lists, links spelled out."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "table", "tr", "ul", "ol", "blockquote"}
_SKIP = {"style", "script", "head", "title"}
_VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "source"}


class _TextWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.lists: list[list[int]] = []  # per open list: [is_ordered, counter]
        self.links: list[str | None] = []
        self.link_text: list[str] = []
        self.skip_depth = 0
        self.hidden_stack: list[bool] = []

    def _newlines(self, count: int) -> None:
        text = "".join(self.out)
        trailing = len(text) - len(text.rstrip("\n"))
        if text.strip():
            self.out.append("\n" * max(count - trailing, 0))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in _VOID:
            if not self.skip_depth:
                self._void(tag, attributes)
            return
        hidden = attributes.get("aria-hidden") == "true" or "display:none" in (
            (attributes.get("style") or "").replace(" ", "")
        )
        if tag in _SKIP or hidden:
            self.skip_depth += 1
            self.hidden_stack.append(True)
            return
        self.hidden_stack.append(False)
        if self.skip_depth:
            return
        if tag in _BLOCKS:
            self._newlines(2)
        if tag in {"h1", "h2"}:
            self.out.append("## " if tag == "h2" else "# ")
        if tag in {"ul", "ol"}:
            self.lists.append([tag == "ol", 0])
        if tag == "li":
            self._newlines(1)
            if self.lists and self.lists[-1][0]:
                self.lists[-1][1] += 1
                self.out.append(f"{self.lists[-1][1]}. ")
            else:
                self.out.append("- ")
        if tag == "a":
            self.links.append(attributes.get("href"))
            self.link_text.append("")

    def _void(self, tag: str, attributes: dict[str, str | None]) -> None:
        if tag == "br":
            self.out.append("\n")
        elif tag == "hr":
            self._newlines(2)
        elif tag == "img" and attributes.get("alt"):
            self.out.append(f"[{attributes['alt']}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self._pop(tag)

    def handle_endtag(self, tag: str) -> None:
        self._pop(tag)

    def _pop(self, tag: str) -> None:
        if tag in _VOID:
            return
        was_hidden = self.hidden_stack.pop() if self.hidden_stack else False
        if was_hidden:
            self.skip_depth -= 1
            return
        if self.skip_depth:
            return
        if tag == "a" and self.links:
            href, text = self.links.pop(), self.link_text.pop().strip()
            if href and href.startswith(("http://", "https://", "mailto:")) and href != text:
                self.out.append(f" <{href}>" if text else href)
        if tag in {"ul", "ol"} and self.lists:
            self.lists.pop()
        if tag in _BLOCKS:
            self._newlines(2)

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        text = re.sub(r"\s+", " ", data)
        if self.out and self.out[-1].endswith("\n"):
            text = text.lstrip()
        if self.link_text:
            self.link_text[-1] += text
        self.out.append(text)


def html_to_text(html: str) -> str:
    """Plain text a person can read in any client; hidden preheaders are left out."""
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    text = "".join(writer.out)
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
