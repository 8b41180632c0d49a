"""Building messages: headers that subscriber text cannot break, and what every email carries."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.headerregistry import Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.message import address, build_message, header_text

INJECTIONS = [
    "Eve\r\nBcc: victim@example.net",
    "Eve\nBcc: victim@example.net",
    "Eve\rBcc: victim@example.net",
    "=?utf-8?q?x=0D=0ABcc:_victim@example.net?=",
    "==??utf-8?q?x=0D=0ABcc:_victim@example.net??==",  # markers that rejoin when stripped
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


CONTROL = r"[\x00-\x1f\x7f\u0085\u2028\u2029]+"


def _reference_header_text(value: str, limit: int = 200) -> str:
    """`header_text` without its fast path, kept to compare against."""
    try:
        decoded = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        decoded = value
    while "=?" in decoded:
        decoded = decoded.replace("=?", "").replace("?=", "")
    cleaned = re.sub(r"\s{2,}", " ", re.sub(CONTROL, " ", decoded)).strip()
    return cleaned[:limit]


@settings(max_examples=500)
@given(
    st.one_of(
        st.text(),
        st.text(alphabet=st.characters(max_codepoint=127)),
        st.sampled_from(INJECTIONS),
    ),
    st.integers(1, 300),
)
def test_header_text_fast_path_changes_nothing(value: str, limit: int) -> None:
    """Plain ASCII skips decoding, with exactly the result the full sanitiser gives."""
    assert header_text(value, limit) == _reference_header_text(value, limit)


def test_a_non_ascii_domain_is_written_as_punycode() -> None:
    """An internationalised domain appears in To as its IDNA form, which any reader accepts."""
    parsed = message_from_bytes(
        build_message(
            sender=Address("N", "n", "example.org"), recipient=address("ann@exämple.org", "Ann"),
            subject="S", text="t", html="<p>t</p>", message_id="<1@example.org>",
            date=datetime(2026, 12, 1, tzinfo=UTC),
        ),
        policy=policy.default,
    )  # fmt: skip
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ann@xn--exmple-cua.org"]
