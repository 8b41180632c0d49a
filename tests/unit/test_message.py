"""Building messages: headers that subscriber text cannot break, and what every email carries."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.headerregistry import Address

import pytest

from campaign.message import address, build_message, header_text

INJECTIONS = [
    "Eve\r\nBcc: victim@example.net",
    "Eve\nBcc: victim@example.net",
    "Eve\rBcc: victim@example.net",
    "=?utf-8?q?x=0D=0ABcc:_victim@example.net?=",
    "=?utf-8?b?eA0KQmNjOiB2aWN0aW1AZXhhbXBsZS5uZXQ=?=",
    "Eve\u2028Bcc: victim@example.net",
]


def _build(name: str, subject: str) -> bytes:
    return build_message(
        sender=Address("Pain & Injury Doctor", "newsletter", "example.org"),
        recipient=address("ann@example.org", name),
        subject=subject,
        text="Hello",
        html="<p>Hello</p>",
        message_id="<1@example.org>",
        date=datetime(2026, 12, 1, 7, tzinfo=UTC),
        extra_headers={"List-Unsubscribe": "<https://x.example.org/unsubscribe/abc>"},
    )


@pytest.mark.parametrize("evil", INJECTIONS)
def test_line_breaks_in_a_name_or_subject_never_add_a_header(evil: str) -> None:
    """Raw or encoded CR/LF in subscriber text stays inside its header as plain text."""
    data = _build(evil, f"Hi {evil}")
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["Bcc"] is None
    assert b"\nBcc:" not in data
    assert b"\rBcc:" not in data
    assert [str(a.addr_spec) for a in parsed["To"].addresses] == ["ann@example.org"]
    assert "\n" not in str(parsed["Subject"])
    assert "\r" not in str(parsed["Subject"])


def test_header_text_keeps_ordinary_names_readable() -> None:
    """Accents and punctuation in names survive the sanitiser unchanged."""
    assert header_text("José O'Brien-Müller") == "José O'Brien-Müller"


def test_a_long_unsubscribe_url_stays_readable_by_mailbox_providers() -> None:
    """List-Unsubscribe is never RFC 2047-encoded, so Gmail and Yahoo can parse the URL."""
    url = "https://news.example.org/unsubscribe/" + "a" * 120
    data = build_message(
        sender=Address("N", "n", "example.org"), recipient=address("ann@example.org"),
        subject="S", text="t", html="<p>t</p>", message_id="<1@example.org>",
        date=datetime(2026, 12, 1, tzinfo=UTC), extra_headers={"List-Unsubscribe": f"<{url}>"},
    )  # fmt: skip
    assert f"List-Unsubscribe: <{url}>".encode() in data


def test_a_message_has_text_and_html_alternatives() -> None:
    """Every email carries a plain-text part and an HTML part, text first."""
    parsed = message_from_bytes(_build("Ann", "Hello"), policy=policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
