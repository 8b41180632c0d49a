"""MIME messages from rendered parts; subscriber text reaches headers only through `header_text`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")
# RFC 5322 allows 998 characters a line; folding at 78 would RFC 2047-encode a long
# List-Unsubscribe URL, which mailbox providers then cannot read.
_POLICY = policy.SMTP.clone(max_line_length=998)
# RFC 2045: quoted-printable lines are at most 76 characters.
_BODY_POLICY = policy.SMTP.clone(max_line_length=76)


def header_text(value: str, limit: int = 200) -> str:
    """Text safe for a header: encoded words decoded, CR, LF and other controls made spaces.

    Decoding first matters: `=?utf-8?q?x=0D=0ABcc:_a@b?=` is harmless-looking text that the
    stdlib would turn back into a real line break when it folds the header.
    """
    try:
        decoded = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        decoded = value
    if "=?" in decoded:  # nested or broken encoded words: drop the markers, keep the words.
        decoded = decoded.replace("=?", "").replace("?=", "")
    cleaned = _SPACES.sub(" ", _CONTROL.sub(" ", decoded)).strip()
    return cleaned[:limit]


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str = "application"
    subtype: str = "pdf"


def build_message(
    *,
    sender: Address,
    recipient: Address,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    extra_headers: Mapping[str, str] = {},
    attachments: Sequence[Attachment] = (),
) -> bytes:
    """A multipart/alternative message (mixed when there are attachments), as SMTP bytes."""
    # Bodies are encoded under the standard policy (quoted-printable lines of 76 characters);
    # only the final serialisation uses the long-line policy for headers.
    message = EmailMessage(policy=_BODY_POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = header_text(subject, limit=250)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["MIME-Version"] = "1.0"
    for name, value in extra_headers.items():
        message[name] = header_text(value, limit=900)
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    for attachment in attachments:
        message.add_attachment(
            attachment.content,
            maintype=attachment.maintype,
            subtype=attachment.subtype,
            filename=attachment.filename,
        )
    return message.as_bytes(policy=_POLICY)


def address(email: str, display_name: str = "") -> Address:
    """An Address whose display name went through `header_text`; the addr_spec is validated."""
    local, _, domain = email.rpartition("@")
    return Address(display_name=header_text(display_name, limit=100), username=local, domain=domain)
