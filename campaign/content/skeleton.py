"""Placeholder renders: a step rendered once with stand-ins for subscriber values, so the
expensive work (CSS inlining, deriving the text) runs once per step, not once per email.

Pure string and HTML handling; `campaign.content.skeleton_render` decides when one is used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

# The text conversion spells out links by scheme, so a placeholder carries its value's scheme.
SCHEMES = ("https://", "http://", "mailto:")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
# Elements whose content is not plain text: a placeholder there is not known to be inert.
_RAW_TEXT = {"style", "script", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext"}
_RAW_TEXT |= {"textarea", "template"}
#: An attribute selector that compares a value (`[href^="https"]`) could match a value; one
#: that only asks for an attribute (`[data-ogsc]`, dark mode in Outlook.com) cannot.
_VALUE_SELECTOR = re.compile(r"\[[^\]]*=")
#: Where a value may be a link's href: an <a>, and the VML button Outlook draws instead.
_LINKS = {("href", "a"), ("href", "v:roundrect")}


@dataclass(frozen=True)
class Fill:
    """A string with placeholders in it, split once so that filling values in is one join."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]  # the value that goes after each piece but the last

    @classmethod
    def split(cls, text: str, placeholders: re.Pattern[str], index: Mapping[str, int]) -> Fill:
        parts = placeholders.split(text)
        return cls(tuple(parts[0::2]), tuple(index[p] for p in parts[1::2]))

    def segments(self, values: Sequence[str]) -> list[str]:
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out += (values[slot], piece)
        return out

    def fill(self, values: Sequence[str]) -> str:
        return "".join(self.segments(values))


@dataclass(frozen=True)
class Skeleton:
    """One step rendered with placeholders: raw and inlined HTML, text, and its links."""

    raw: Fill
    html: Fill
    text: Fill | None  # None when the step has its own text template
    links: tuple[tuple[Fill, Fill, bool], ...]  # (href, text, spelled out) holding values
    used: tuple[int, ...]  # the values that appear at all
    #: the template only prints its values: filling them in equals rendering, unchecked.
    only_prints: bool = False


class _PlaceholderScan(HTMLParser):
    """Finds placeholders anywhere but in text and in alt, title and link href attributes."""

    def __init__(self, placeholders: re.Pattern[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.placeholders = placeholders
        self.inert = True
        self.raw_text = 0  # open elements whose content is not plain text
        self.in_style = False
        self.css: list[str] = []

    def _found(self, text: str | None) -> bool:
        return text is not None and self.placeholders.search(text) is not None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # A placeholder left once quoted values are gone sits in a name or an unquoted value.
        if self._found(_QUOTED.sub("", self.get_starttag_text() or "")) or tag == "link":
            self.inert = False  # and a stylesheet link brings CSS this scan cannot read
        for name, value in attrs:
            if self._found(value) and name not in ("alt", "title") and (name, tag) not in _LINKS:
                self.inert = False
        self.raw_text += tag in _RAW_TEXT
        self.in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self.inert = self.inert and not self._found(tag)
        if tag in _RAW_TEXT and self.raw_text:
            self.raw_text -= 1
        self.in_style = False

    def handle_data(self, data: str) -> None:
        if self.in_style:
            self.css.append(data)
        if self.raw_text and self._found(data):
            self.inert = False

    def handle_comment(self, data: str) -> None:
        if data.startswith("[if mso") and data.endswith("<![endif]"):
            # Outlook's markup (a button's VML): read as HTML under the same rules, so a
            # value may be the href of its <v:roundrect> as of an <a>, and nothing else.
            inner = _PlaceholderScan(self.placeholders)
            inner.feed(data[data.index("]>") + 2 : -len("<![endif]")])
            inner.close()
            self.inert = self.inert and inner.inert and inner.raw_text == 0
            return
        self.inert = self.inert and not self._found(data)

    def handle_decl(self, decl: str) -> None:
        self.handle_comment(decl)

    def handle_pi(self, data: str) -> None:
        self.handle_comment(data)

    def unknown_decl(self, data: str) -> None:
        self.handle_comment(data)


def inert(raw: str, placeholders: re.Pattern[str]) -> bool:
    """Whether a value in place of each placeholder is plain text that CSS cannot select on."""
    # Placeholders in attribute names are refused by the scan, so `[name]` selects alike.
    scan = _PlaceholderScan(placeholders)
    scan.feed(raw)
    scan.close()
    # An attribute selector could match a value; "&" just before one could join a reference.
    reference = re.search(r"&[#0-9A-Za-z]*" + placeholders.pattern, raw)
    return scan.inert and not _VALUE_SELECTOR.search("".join(scan.css)) and reference is None


def scheme(value: str) -> str:
    return next((scheme for scheme in SCHEMES if value.startswith(scheme)), "")


def regular(value: str) -> bool:
    """Whether filling `value` in equals rendering it: the text conversion collapses, strips and
    splits on whitespace, and an empty value changes what is around it."""
    # isprintable() is False for every whitespace character but the space, and for controls.
    return (
        value.isprintable()
        and value[:1] not in ("", " ")
        and value[-1] != " "
        and "  " not in value
    )
