"""Building messages: headers that subscriber text cannot break, and what every email carries."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, message_from_string, policy
from email.header import decode_header, make_header
from email.headerregistry import Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.content.mime import address, build_message, header_text
from campaign.domain.addresses import wire_address
from campaign.errors import UnsendableAddress

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
        sender=Address("N", "n", "example.org"),
        recipient=address("ann@example.org"),
        subject="S",
        text="t",
        html="<p>t</p>",
        message_id="<1@example.org>",
        date=datetime(2026, 12, 1, tzinfo=UTC),
        extra_headers={"List-Unsubscribe": f"<{url}>"},
    )
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
            sender=Address("N", "n", "example.org"),
            recipient=address("ann@exämple.org", "Ann"),
            subject="S",
            text="t",
            html="<p>t</p>",
            message_id="<1@example.org>",
            date=datetime(2026, 12, 1, tzinfo=UTC),
        ),
        policy=policy.default,
    )
    assert [a.addr_spec for a in parsed["To"].addresses] == ["ann@xn--exmple-cua.org"]


def _to_header(email: str, name: str = "Ann") -> tuple[bytes, str]:
    data = build_message(
        sender=Address("N", "n", "example.org"),
        recipient=address(email, name),
        subject="S",
        text="t",
        html="<p>t</p>",
        message_id="<1@example.org>",
        date=datetime(2026, 12, 1, tzinfo=UTC),
    )
    # RFC 6532: a UTF-8 header is read as UTF-8.
    parsed = message_from_string(data.decode("utf-8"), policy=policy.default)
    return data, str(parsed["To"].addresses[0].addr_spec)


@pytest.mark.parametrize(
    ("email", "wire"),
    [
        ("x@straße.de", "x@xn--strae-oqa.de"),  # IDNA 2008: not strasse.de
        ("x@faß.de", "x@xn--fa-hia.de"),
        ("x@bücher.example.com", "x@xn--bcher-kva.example.com"),
        ("x@xn--strae-oqa.de", "x@xn--strae-oqa.de"),
    ],
)
def test_an_internationalised_domain_is_its_idna_2008_a_label_in_to(email: str, wire: str) -> None:
    """The To header carries the non-transitional A-label, never a different domain."""
    data, to = _to_header(email)
    assert to == wire
    assert data.isascii()


def test_a_non_ascii_local_part_is_a_utf8_to_header() -> None:
    """RFC 6532: a non-ASCII local part stays UTF-8 in To, its domain still the A-label."""
    data, to = _to_header("jürgen@straße.de", "Jürgen")
    assert to == "jürgen@xn--strae-oqa.de"
    assert "To: =?utf-8?q?J=C3=BCrgen?= <jürgen@xn--strae-oqa.de>".encode() in data
    assert data.replace("jürgen".encode(), b"").isascii()  # the only UTF-8 in the message


@pytest.mark.parametrize(
    ("email", "problem"),
    [
        ("x@exa\u00admple.com\u0000", "control character"),
        ("no-at-sign", "no local part"),
        ("@example.org", "no local part"),
        ("x@\u2028.de", "control character or a line break"),
        ("x@a\u200d\u0300.de", "no IDNA form"),
        ("x@-straße.de", "no IDNA form"),
    ],
)
def test_an_address_no_envelope_can_carry_is_refused_by_name(email: str, problem: str) -> None:
    """An address stored bypassing the checks is refused with a reason, before any SMTP."""
    with pytest.raises(UnsendableAddress) as caught:
        wire_address(email)
    assert problem in caught.value.message


def test_an_ascii_address_is_sent_as_stored() -> None:
    """The common case: nothing mapped, no SMTPUTF8."""
    wire = wire_address("Ann.Lee@Example.org")
    assert (wire.addr_spec, wire.smtputf8) == ("Ann.Lee@Example.org", False)
    assert wire_address("ü@straße.de").smtputf8


@pytest.mark.parametrize("evil", INJECTIONS)
def test_a_reply_to_name_never_adds_a_header(evil: str) -> None:
    """The Reply-To header is built as an address, so no name in it can start another header."""
    data = build_message(
        sender=Address("Pain & Injury Doctor", "newsletter", "example.org"),
        recipient=address("ann@example.org", "Ann"),
        subject="Hello",
        text="Hello",
        html="<p>Hello</p>",
        message_id="<1@example.org>",
        date=datetime(2026, 12, 1, 7, tzinfo=UTC),
        reply_to=address("care@example.org", evil),
    )
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    assert not re.search(r"^Bcc:", head, re.MULTILINE | re.IGNORECASE)
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["Reply-To"].addresses[0].addr_spec == "care@example.org"
