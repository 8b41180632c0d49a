"""Reading bounce and complaint reports: what each kind of report says about which address."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from campaign.domain.tokens import sign, verify
from campaign.domain.verp import (
    CONFIRMATION,
    DELIVERY,
    ReturnPaths,
    TokenRef,
    canonical_address,
    parse,
    tokens_in,
)
from campaign.errors import InvalidToken
from campaign.people.bounces import Finding, evidence_of, findings
from campaign.people.report_trust import MAX_CLUES

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _read(name: str) -> list[Finding]:
    return findings(message_from_bytes((FIXTURES / name).read_bytes(), policy=policy.compat32))


def test_a_hard_bounce_names_the_failed_recipient_and_status() -> None:
    """A DSN with Action: failed and a 5.x.x status is a bounce for its Final-Recipient."""
    [finding] = _read("dsn_hard_bounce.eml")
    assert (finding.kind, finding.address) == ("bounce", "gone@example.org")
    assert finding.detail.startswith("5.1.1")


def test_a_delay_notice_is_not_a_bounce() -> None:
    """Action: delayed with a 4.x.x status stops nobody's email."""
    assert _read("dsn_delayed.eml") == []


def test_an_arf_report_is_a_complaint_about_the_original_recipient() -> None:
    """A feedback report with no Original-Rcpt-To names the original message's To address."""
    [finding] = _read("arf_complaint.eml")
    assert (finding.kind, finding.address) == ("complaint", "angry@example.org")
    assert "abuse" in finding.detail


def test_an_ordinary_email_says_nothing() -> None:
    """A reply that is not a multipart/report is ignored, however it is worded."""
    raw = (
        b"From: a@example.org\r\nSubject: Undelivered Mail\r\n\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
    )
    message = message_from_bytes(raw, policy=policy.compat32)
    assert findings(message) == []


PATHS = ReturnPaths("unit-test-secret-key-0123456789abcdef", "example.org")


def test_a_return_path_is_a_short_dot_atom_that_names_the_email() -> None:
    """`bounces+TOKEN@domain`: a lowercase dot-atom local part well under 64 characters."""
    for ident in (0, 1, 2**63 - 1):
        path = PATHS.return_path(DELIVERY, ident, "Reader@Example.org")
        local, _, domain = path.partition("@")
        assert domain == "example.org"
        assert len(local) <= 64
        assert re.fullmatch(r"bounces\+[0-9a-z-]+", local), path
        [token] = tokens_in(f"<{path}>")
        ref = parse(token)
        assert ref is not None
        assert (ref.kind, ref.ident) == (DELIVERY, ident)


def test_a_token_verifies_only_for_its_address_kind_and_id() -> None:
    """The same token fails for another address, the other kind, another id or another key."""
    ref = parse(PATHS.token(DELIVERY, 42, "ann@example.org"))
    assert ref is not None
    assert PATHS.verifies(ref, "ann@example.org")
    assert PATHS.verifies(ref, " ANN@Example.ORG ")  # an MTA may change case
    assert not PATHS.verifies(ref, "bob@example.org")
    assert not PATHS.verifies(ref, "ann@example.org.evil.net")
    assert not PATHS.verifies(TokenRef(CONFIRMATION, 42, ref.mac), "ann@example.org")
    assert not PATHS.verifies(TokenRef(DELIVERY, 43, ref.mac), "ann@example.org")
    other = ReturnPaths("another-unit-test-secret-key-0123456789", "example.org")
    assert not other.verifies(ref, "ann@example.org")


def test_an_uppercased_return_path_still_verifies() -> None:
    """Some MTAs uppercase the local part a report comes back to: the token still counts."""
    path = PATHS.return_path(DELIVERY, 7, "ann@example.org").upper()
    [token] = tokens_in(f"To: {path}")
    ref = parse(token)
    assert ref is not None
    assert PATHS.verifies(ref, "ann@example.org")


def test_an_internationalised_domain_matches_its_a_label_and_nothing_else() -> None:
    """Signed for x@straße.de, the token holds for x@xn--strae-oqa.de but not x@strasse.de."""
    ref = parse(PATHS.token(DELIVERY, 1, "x@straße.de"))
    assert ref is not None
    assert PATHS.verifies(ref, "x@xn--strae-oqa.de")
    assert not PATHS.verifies(ref, "x@strasse.de")
    assert canonical_address("x@xn--\u00e9.de") == "x@xn--\u00e9.de"  # not punycode: as is


def test_verp_tokens_and_link_tokens_are_not_interchangeable() -> None:
    """A link token (unsubscribe, confirm) is no VERP token, and a VERP token is no link."""
    secret = "unit-test-secret-key-0123456789abcdef"
    verp_token = PATHS.token(DELIVERY, 5, "ann@example.org")
    for purpose in ("unsubscribe", "confirm", "click"):
        with pytest.raises(InvalidToken):
            verify(secret, verp_token, purpose, NOW)
        assert parse(sign(secret, purpose, 5, NOW)) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "d1",
        "d1-",
        "x1-" + "a" * 20,
        "d1-" + "a" * 19,
        "d1-" + "a" * 21,
        "d1-" + "g" * 20,
        "d" + "f" * 17 + "-" + "a" * 20,
        "d-1-" + "a" * 20,
    ],
)
def test_a_malformed_or_truncated_token_is_refused_before_any_check(token: str) -> None:
    """Wrong kind, truncated or overlong MAC, non-hex, oversize id: parse gives None."""
    assert parse(token) is None


def test_a_return_path_is_found_only_as_a_whole_local_part() -> None:
    """`xbounces+...@` or a token with no `@` after it is not a return path."""
    token = PATHS.token(DELIVERY, 1, "a@example.org")
    assert tokens_in(f"Delivered-To: bounces+{token}@example.org") == [token]
    assert tokens_in(f"xbounces+{token}@example.org") == []
    assert tokens_in(f"bounces+{token}") == []


def test_a_report_stuffed_with_clues_is_read_only_a_few_of_them() -> None:
    """A forged report with thousands of tokens and Message-IDs costs a bounded number of
    lookups, and undecodable bytes in its returned headers do not stop the reading."""
    tokens = "".join(f"To: bounces+d{n:x}-{'a' * 20}@example.org\r\n" for n in range(5000))
    ids = "".join(f"Message-ID: <{n}@example.org>\r\n" for n in range(5000))
    raw = (
        f"{tokens}MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{ids}Subject: \xff\xfe caf\xe9\r\n\r\n--B--\r\n"
    ).encode("latin-1")
    evidence = evidence_of(message_from_bytes(raw, policy=policy.compat32))
    assert len(evidence.tokens) == MAX_CLUES
    assert evidence.message_ids == ["<0@example.org>"]
