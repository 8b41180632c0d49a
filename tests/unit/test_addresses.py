"""The address rules (README "Addresses"): what is accepted, its stored normal form, and the
human-readable reason for what is refused (FAULT-PLAN case 45)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.domain.addresses import email_hash
from campaign.errors import InvalidAddress
from campaign.people.person_fields import first_name_of, normalise_address

LOCAL_64 = "a" * 64
# 64 + 1 + 189 = 254 characters: the longest address RFC 5321 allows.
DOMAIN_189 = ".".join(["b" * 62, "c" * 62, "d" * 59]) + ".com"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("x@straße.de", "x@straße.de"),
        ("x@Straße.DE", "x@straße.de"),
        ("x@xn--strae-oqa.de", "x@straße.de"),  # the A-label is the same domain
        ("X@STRASSE.de", "X@strasse.de"),  # not straße.de: another domain
        ("Ü@example.com", "ü@example.com"),  # a non-ASCII local part in lower case
        ("u\u0308@example.com", "ü@example.com"),  # NFC: one ü, however typed
        ("Ann.Lee@Example.ORG", "Ann.Lee@example.org"),  # an ASCII local part keeps its case
        ("  ann@example.org ", "ann@example.org"),
        (f"{LOCAL_64}@example.org", f"{LOCAL_64}@example.org"),
        (f"{LOCAL_64}@{DOMAIN_189}", f"{LOCAL_64}@{DOMAIN_189}"),
    ],
)
def test_an_accepted_address_is_stored_in_its_normal_form(typed: str, stored: str) -> None:
    """Each spelling of one address is stored the same way; different domains stay apart."""
    assert normalise_address(typed) == stored


def test_the_a_label_and_the_u_label_are_one_subscriber_but_strasse_is_another() -> None:
    """Duplicates are found by the normal form (and its suppression hash)."""
    same = {normalise_address(a).lower() for a in ("x@xn--strae-oqa.de", "x@Straße.DE")}
    assert len(same) == 1
    assert normalise_address("X@STRASSE.de").lower() not in same
    assert email_hash(normalise_address("x@XN--STRAE-OQA.de")) == email_hash("x@straße.de")


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        (f"{LOCAL_64}a@example.org", "too long before the @-sign"),
        (f"{LOCAL_64}@{DOMAIN_189}x", "too long"),
        ("user@localhost", "It should have a period"),
        ("user@[127.0.0.1]", "bracketed IP address"),
        ('"quoted local"@example.org', "Quoting the part before the @-sign"),
        ("x\x00y@example.org", "U+0000"),
        ("x@exa\nmple.org", "invalid characters"),
        ("x@example.test", "special-use or reserved name"),
        ("", "must have an @-sign"),
        ("x@-straße.de", "after the @-sign"),
    ],
)
def test_a_refused_address_gets_a_human_readable_reason(typed: str, reason: str) -> None:
    """Each refusal is an InvalidAddress (exit 2, HTTP 4xx) that says what is wrong."""
    with pytest.raises(InvalidAddress) as caught:
        normalise_address(typed)
    assert reason in caught.value.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_an_address_or_an_invalid_address(typed: str) -> None:
    """No input makes the normaliser raise anything but InvalidAddress; what it accepts is
    stable and free of control characters (so PostgreSQL can store it)."""
    try:
        stored = normalise_address(typed)
    except InvalidAddress:
        return
    assert normalise_address(stored) == stored
    assert stored.isprintable()


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("Ann\x00", "Ann"), ("Eve\r\nBcc: x@example.net", "Eve Bcc: x@example.net"), ("A\tB", "A B")],
)
def test_a_name_loses_its_control_characters(typed: str, stored: str) -> None:
    """NUL (which PostgreSQL refuses), CR, LF and tabs in a name become single spaces."""
    assert first_name_of(typed) == stored
