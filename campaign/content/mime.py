"""MIME messages from rendered parts, written directly as SMTP bytes; subscriber text reaches
headers only through `header_text`."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.utils import format_datetime

from campaign.domain.addresses import ascii_domain

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
# RFC 5322 allows 998 characters a line; folding at 78 would RFC 2047-encode a long
# List-Unsubscribe URL, which mailbox providers then cannot read.
_MAX_LINE = 998
# RFC 2047: a line holding an encoded word is at most 76 characters, a word at most 75.
_ENCODED_LINE = 76
_WORD_START, _WORD_END = "=?utf-8?q?", "?="
_WORD_ROOM = 75 - len(_WORD_START) - len(_WORD_END)
# RFC 2047 section 5(3): the only characters an encoded word in a phrase may carry as
# themselves; using this strictest set everywhere makes one encoder fit every header.
_Q_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_BYTE = tuple("_" if b == 0x20 else chr(b) if b in _Q_PLAIN else f"={b:02X}" for b in range(256))
_HEADER_NAME = re.compile(r"[!-9;-~]+")
# RFC 5322 specials: a display name holding one must be a quoted string.
_SPECIALS = re.compile(r'[()<>@,:;."\[\]\\]')
# RFC 2045: a quoted-printable line is at most 76 characters, a soft break's "=" included.
_QP_LINE = 76
_QP_TOKEN = re.compile(r"=[0-9A-F]{2}|.", re.DOTALL)  # one encoded character or byte


def header_text(value: str, limit: int = 200) -> str:
    """Text safe for a header: encoded words decoded, CR, LF and other controls made spaces.

    Decoding first matters: `=?utf-8?q?x=0D=0ABcc:_a@b?=` is harmless-looking text that the
    stdlib would turn back into a real line break when it folds the header.
    """
    if "=?" not in value and value.isascii() and value.isprintable() and "  " not in value:
        return value.strip()[:limit]  # the common case, which every step below leaves alone
    decoded = value
    # Without "=?" there is no encoded word, and decoding would hand the text back unchanged.
    if "=?" in value:
        try:
            decoded = str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            decoded = value
        # Nested or broken encoded words: drop the markers, keep the words. Until none is
        # left: removing one "=?" from "==??" joins a new one.
        while "=?" in decoded:
            decoded = decoded.replace("=?", "").replace("?=", "")
    cleaned = _SPACES.sub(" ", _CONTROL.sub(" ", decoded)).strip()
    return cleaned[:limit]


@dataclass(frozen=True)
class PartText:
    """The text of one body part, and the segments it was joined from when most of them are
    shared by many emails (a step's template text between subscriber values): `build_message`
    then encodes each shared segment only once. Without segments the text is encoded whole.

    Make one with `PartText(text)` or `PartText.joined(segments)`, which keeps the two consistent.
    """

    text: str
    segments: tuple[str, ...] | None = None

    @classmethod
    def joined(cls, segments: Iterable[str]) -> PartText:
        # Plain str: a subclass such as markupsafe's Markup changes what `+` does.
        pieces = tuple([s if type(s) is str else str(s) for s in segments])
        return cls("".join(pieces), pieces)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str = "application"
    subtype: str = "pdf"

    @functools.cached_property
    def mime_part(self) -> bytes:
        """Headers and base64 body of this attachment, encoded once however many emails carry it."""
        body = base64.encodebytes(self.content).replace(b"\n", b"\r\n")
        head = (
            f"Content-Type: {self.maintype}/{self.subtype}\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: attachment; {_filename_param(self.filename)}\r\n\r\n"
        )
        return head.encode("ascii") + body


def build_message(
    *,
    sender: Address,
    recipient: Address,
    subject: str,
    text: str | PartText,
    html: str | PartText,
    message_id: str,
    date: datetime,
    extra_headers: Mapping[str, str] = {},
    attachments: Sequence[Attachment] = (),
    reply_to: Address | None = None,
) -> bytes:
    """A multipart/alternative message (mixed when there are attachments), as SMTP bytes.

    Each body part is a `str`, encoded whole, or a `PartText` that may carry its segments.
    """
    # Two boundaries, neither a prefix of the other. "=_" cannot occur in quoted-printable
    # or base64 text, so no body needs scanning for a clash.
    nonce = os.urandom(12).hex()
    alternative, mixed = f"=_a{nonce}", f"=_m{nonce}"
    lines = [
        _address_header("From", sender),
        _address_header("To", recipient),
        *([_address_header("Reply-To", reply_to)] if reply_to is not None else []),
        _text_header("Subject", header_text(subject, limit=250)),
        _verbatim_header("Date", _date(date)),
        _verbatim_header("Message-ID", message_id),
        "MIME-Version: 1.0",
        *(
            _text_header(name, header_text(value, limit=900))
            for name, value in extra_headers.items()
        ),
        f"Content-Type: multipart/{'mixed' if attachments else 'alternative'}; "
        f'boundary="{mixed if attachments else alternative}"',
        "",
    ]
    if attachments:
        lines += [
            f"--{mixed}",
            f'Content-Type: multipart/alternative; boundary="{alternative}"',
            "",
        ]
    lines += [f"--{alternative}", *_text_part_head("plain"), _quoted_printable(text)]
    lines += [f"--{alternative}", *_text_part_head("html"), _quoted_printable(html)]
    lines.append(f"--{alternative}--\r\n")
    # ASCII but for a To header with a non-ASCII local part (RFC 6532).
    data = "\r\n".join(lines).encode("utf-8")
    if not attachments:
        return data
    parts = [data]
    for attachment in attachments:
        parts += [f"\r\n--{mixed}\r\n".encode("ascii"), attachment.mime_part]
    parts.append(f"\r\n--{mixed}--\r\n".encode("ascii"))
    return b"".join(parts)


def address(email: str, display_name: str = "") -> Address:
    """An Address whose display name went through `header_text`; the addr_spec is validated."""
    local, _, domain = email.rpartition("@")
    return Address(display_name=header_text(display_name, limit=100), username=local, domain=domain)


def _text_part_head(subtype: str) -> tuple[str, str, str]:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
        "",
    )


def _quoted_printable(part: str | PartText) -> str:
    """Body text as quoted-printable lines of at most 76 characters, each ending in CRLF.

    Line breaks are normalised the way the stdlib does (CR, LF and CRLF all end a line, and
    the text ends with one), so the decoded body is what `EmailMessage` would have carried.
    """
    if isinstance(part, str):
        text = part
    elif part.segments is not None and "\r" not in part.text:
        return _quoted_printable_segments(part.segments)
    else:
        text = part.text
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()  # the final line break; an empty text is still one (empty) line
    # Most lines of an email are the same for every subscriber: each is encoded once. Long
    # ones are not kept, so a template written on one line cannot fill memory with copies.
    cached, encode = _quoted_printable_line_cached, _quoted_printable_line
    return "".join([cached(line) if len(line) < 1000 else encode(line) for line in lines])


def _quoted_printable_line(line: str) -> str:
    # b2a_qp escapes "=", non-ASCII, controls, whitespace before a line end and a lone dot,
    # and breaks long lines with "=" (soft breaks) at 76 characters.
    encoded = binascii.b2a_qp(line.encode("utf-8"), istext=True).decode("ascii")
    if encoded.startswith("From ") or "\nFrom " in encoded:
        encoded = _rewrapped_without_from(encoded)
    return encoded.replace("\n", "\r\n") + "\r\n"


def _rewrapped_without_from(encoded: str) -> str:
    """One line's encoding broken again so that no physical line starts with "From ", which
    mbox tools would mangle to ">From ": its F is written =46, and lines still fit 76."""
    tokens = _QP_TOKEN.findall(encoded.replace("=\n", ""))
    lines = [""]
    for i, piece in enumerate(tokens):
        if len(lines[-1]) + len(piece) > _QP_LINE - 1:
            lines[-1] += "="
            lines.append("")
        if not lines[-1] and "".join(tokens[i : i + 5]) == "From ":
            piece = "=46"
        lines[-1] += piece
    if lines[-1] == ".":
        lines[-1] = "=2E"  # b2a_qp's rule: no line of a lone dot
    return "\n".join(lines)


_quoted_printable_line_cached = functools.lru_cache(maxsize=8192)(_quoted_printable_line)


def _quoted_printable_segments(segments: Sequence[str]) -> str:
    """The joined text encoded segment by segment; it decodes to what `_quoted_printable` gives.

    A segment that ends inside a line ends with a soft line break, which decodes to nothing,
    so the next segment starts a fresh line and no line passes 76 characters.
    """
    encoded = "".join(
        [
            _plain_segment(segment) if _is_plain(segment) else _quoted_printable_segment(segment)
            for segment in segments
        ]
    )
    if encoded.endswith("=\r\n"):
        encoded = encoded[:-3] + "\r\n"  # the text ends inside a line: end it for good
    return encoded or "\r\n"


def _is_plain(segment: str) -> bool:
    # Most subscriber values need no encoding at all: short printable ASCII with no "=".
    # Template text (longer, or holding a line break) goes through the cache instead.
    return (
        0 < len(segment) < 4 * _QP_LINE
        and segment.isascii()
        and segment.isprintable()
        and "=" not in segment
        and "From " not in segment
    )


def _plain_segment(segment: str) -> str:
    """A plain segment in lines of 75 characters, each ending in a soft line break."""
    room = _QP_LINE - 1
    if len(segment) <= room:
        return segment + "=\r\n"
    return "".join([segment[i : i + room] + "=\r\n" for i in range(0, len(segment), room)])


@functools.lru_cache(maxsize=4096)
def _quoted_printable_segment(segment: str) -> str:
    lines = segment.split("\n")
    encoded = [_quoted_printable_line_cached(line) for line in lines[:-1]]
    if lines[-1]:
        encoded.append(_with_soft_break(_quoted_printable_line(lines[-1])[:-2]))
    return "".join(encoded)


def _with_soft_break(encoded: str) -> str:
    """Encoded text ending in a soft line break, its last line cut if the "=" would not fit."""
    last = encoded[encoded.rfind("\n") + 1 :]
    if len(last) < _QP_LINE:
        return encoded + "=\r\n"
    cut = len(encoded) - len(last) + _QP_LINE - 1
    cut -= 1 if encoded[cut - 1] == "=" else 2 if encoded[cut - 2] == "=" else 0  # keep =XX whole
    return encoded[:cut] + "=\r\n" + encoded[cut:] + "=\r\n"


@functools.lru_cache(maxsize=64)
def _date(date: datetime) -> str:
    # A pass stamps every message with the one `now` it read: format it once.
    return format_datetime(date)


def _verbatim_header(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} may not contain CR or LF: {value!r}")
    return f"{name}: {value}"


def _address_header(name: str, mailbox: Address) -> str:
    """`Name <addr>`, the name quoted or RFC 2047-encoded as it needs; the bare addr if no name."""
    addr_spec = _wire_addr_spec(mailbox)
    display = mailbox.display_name
    if not display:
        return _verbatim_header(name, addr_spec)
    if _plain(display):
        if _SPECIALS.search(display):
            display = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return _verbatim_header(name, f"{display} <{addr_spec}>")
    return _fold(name, [_display_name_word(display), f"<{addr_spec}>"], _MAX_LINE)


def _wire_addr_spec(mailbox: Address) -> str:
    """The addr-spec as the envelope has it: an internationalised domain as its A-label.

    A non-ASCII local part stays UTF-8 (RFC 6532): such a message goes only over SMTPUTF8.
    """
    addr_spec = mailbox.addr_spec
    if addr_spec.isascii():
        return addr_spec
    return Address(username=mailbox.username, domain=ascii_domain(mailbox.domain).lower()).addr_spec


def _text_header(name: str, value: str) -> str:
    """An unstructured header: words that are not plain printable ASCII become encoded words."""
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"not a header name: {name!r}")
    words = value.split(" ")
    if _plain(value):
        line = f"{name}: {value}"
        return line if len(line) <= _MAX_LINE else _fold(name, words, _MAX_LINE)
    plain = [_plain(word) for word in words]
    atoms: list[str] = []
    run: list[str] = []  # consecutive words to encode, spaces and all, as one text
    for word, is_plain in zip(words, plain, strict=True):
        if not is_plain:
            run.append(word)
            continue
        if run:
            # The space after an encoded word is kept by decoders only outside the word.
            atoms += _encoded_words(" ".join(run))
            run = []
        atoms.append(word)
    if run:
        atoms += _encoded_words(" ".join(run))
    return _fold(name, atoms, _ENCODED_LINE)


def _plain(text: str) -> bool:
    """Printable ASCII with no "=?": text that may stand in a header as itself."""
    return text.isascii() and text.isprintable() and "=?" not in text


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 Q-encoded words of at most 75 characters, never splitting a character."""
    words: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        piece = "".join([_Q_BYTE[b] for b in char.encode("utf-8")])
        if size + len(piece) > _WORD_ROOM and current:
            words.append(_WORD_START + "".join(current) + _WORD_END)
            current, size = [], 0
        current.append(piece)
        size += len(piece)
    words.append(_WORD_START + "".join(current) + _WORD_END)
    return words


def _display_name_word(display: str) -> str:
    """A display name as one encoded word, Q or B, whichever is shorter.

    One word even past RFC 2047's 75 characters, as the stdlib writes it: Python's address
    parser keeps the space between two encoded words of a phrase, so splitting the name would
    change it. Names are at most 100 characters, so the line stays within 998.
    """
    data = display.encode("utf-8")
    quoted = "".join([_Q_BYTE[b] for b in data])
    if len(quoted) <= 4 * -(-len(data) // 3):
        return _WORD_START + quoted + _WORD_END
    return "=?utf-8?b?" + base64.b64encode(data).decode("ascii") + _WORD_END


def _fold(name: str, atoms: Sequence[str], width: int) -> str:
    """Atoms joined by spaces, a line broken before an atom that would pass `width`.

    Unfolding only removes the CRLF, so the space stays; between two encoded words decoders
    drop it, which is why a space inside encoded text is encoded too.
    """
    lines = [f"{name}:"]
    for atom in atoms:
        if len(lines[-1]) + 1 + len(atom) > width and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + atom
    return "\r\n".join(lines)


def _filename_param(filename: str) -> str:
    """`filename="x.pdf"`, or RFC 2231 `filename*=utf-8''...` for names that are not plain ASCII."""
    if filename.isascii() and filename.isprintable():
        return 'filename="' + filename.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "filename*=utf-8''" + urllib.parse.quote(filename, safe="")
