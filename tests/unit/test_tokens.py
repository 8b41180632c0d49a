"""Signed link tokens: genuine ones verify, anything altered, expired or misdirected is refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.domain.tokens import TokenClaims, sign, verify
from campaign.errors import InvalidToken

SECRET = "test-secret-key-that-is-long-enough-0123456789"
NOW = datetime(2026, 5, 1, 7, 0, tzinfo=UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _refused(token: str, purpose: str = "unsubscribe", secret: str = SECRET) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        verify(secret, token, purpose, NOW)
    return caught.value


def test_a_signed_token_verifies_to_its_claims() -> None:
    """A token verifies back to the purpose, subscriber id and issue time it was signed with."""
    token = sign(SECRET, "unsubscribe", 42, NOW)

    assert verify(SECRET, token, "unsubscribe", NOW) == TokenClaims("unsubscribe", 42, NOW)


def test_a_token_is_safe_in_a_url() -> None:
    """A token uses only URL-safe characters, so it survives in a link unchanged."""
    token = sign(SECRET, "unsubscribe", 123_456_789, NOW)

    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_the_issue_time_is_kept_to_the_second() -> None:
    """The issue time in a token is the signing time without its fraction of a second."""
    token = sign(SECRET, "unsubscribe", 1, NOW + timedelta(microseconds=999_999))

    assert verify(SECRET, token, "unsubscribe", NOW).issued_at == NOW


def test_a_token_with_an_altered_payload_is_refused() -> None:
    """Swapping in another subscriber id while keeping the original MAC is refused."""
    _, mac = sign(SECRET, "unsubscribe", 42, NOW).split(".", 1)
    forged = f"{_b64(f'unsubscribe.43.{int(NOW.timestamp())}'.encode())}.{mac}"

    _refused(forged)


def test_a_token_with_an_altered_mac_is_refused() -> None:
    """Changing one character of the signature is refused."""
    payload, mac = sign(SECRET, "unsubscribe", 42, NOW).split(".", 1)
    altered = ("B" if mac[0] == "A" else "A") + mac[1:]

    _refused(f"{payload}.{altered}")


def test_a_token_for_another_purpose_is_refused() -> None:
    """An unsubscribe token cannot be used to confirm a subscription."""
    token = sign(SECRET, "unsubscribe", 42, NOW)

    _refused(token, purpose="confirm")


def test_a_token_signed_with_another_secret_is_refused() -> None:
    """A token signed by another installation's secret is refused."""
    token = sign("another-secret-key-0123456789-abcdefghij", "unsubscribe", 42, NOW)

    _refused(token)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "not a token",
        "abc",
        "a.b",
        "%%%.###",
        "\x00",
        _b64(b"unsubscribe.42") + ".abc",
        _b64(b"unsubscribe.forty-two.1777618800") + ".abc",
        _b64(b"\xff\xfe") + ".abc",
    ],
)
def test_garbage_is_refused(garbage: str) -> None:
    """Strings that are not tokens at all are refused as invalid links."""
    _refused(garbage)


def test_an_expired_token_is_refused() -> None:
    """A token older than the allowed age is refused with a message saying it has expired."""
    token = sign(SECRET, "confirm", 42, NOW - timedelta(days=7, seconds=1))

    with pytest.raises(InvalidToken, match="expired"):
        verify(SECRET, token, "confirm", NOW, max_age=timedelta(days=7))


def test_a_token_within_its_age_is_accepted() -> None:
    """A token exactly as old as the allowed age still verifies."""
    token = sign(SECRET, "confirm", 42, NOW - timedelta(days=7))

    claims = verify(SECRET, token, "confirm", NOW, max_age=timedelta(days=7))

    assert claims.subject_id == 42


@settings(database=None, deadline=None, max_examples=500)
@given(
    subject_id=st.integers(0, 10**12),
    purpose=st.sampled_from(["unsubscribe", "confirm"]),
    issued_offset=st.integers(-(10**8), 10**8),
    data=st.data(),
)
def test_any_single_character_change_is_refused_or_harmless(
    subject_id: int, purpose: str, issued_offset: int, data: st.DataObject
) -> None:
    """Changing any one character of a token is refused, unless it decodes to the same claims."""
    issued = NOW + timedelta(seconds=issued_offset)
    token = sign(SECRET, purpose, subject_id, issued)
    original = verify(SECRET, token, purpose, NOW)
    position = data.draw(st.integers(0, len(token) - 1), label="position")
    replacement = data.draw(
        st.characters(min_codepoint=0, max_codepoint=127).filter(lambda c: c != token[position]),
        label="replacement",
    )
    altered = token[:position] + replacement + token[position + 1 :]

    try:
        claims = verify(SECRET, altered, purpose, NOW)
    except InvalidToken:
        return
    assert claims == original


def test_a_non_ascii_signature_is_refused() -> None:
    """A token whose signature part holds a non-ASCII character is refused as invalid."""
    payload, _ = sign(SECRET, "unsubscribe", 42, NOW).split(".", 1)

    _refused(f"{payload}.é")


def test_an_absurd_issue_time_is_refused() -> None:
    """A forged payload with an out-of-range issue time is refused as invalid, not a crash."""
    _refused(_b64(b"unsubscribe.1.99999999999999999999") + ".abc")


def test_a_confirmation_link_from_before_schema_0008_does_not_verify() -> None:
    """Old "confirm" tokens named a subscriber id; confirmation links now name a confirmation
    row under another purpose, so an old token can never be read as a row's id."""
    from campaign.domain.tokens import CONFIRM_SIGNUP

    legacy = sign(SECRET, "confirm", 42, NOW)
    with pytest.raises(InvalidToken):
        verify(SECRET, legacy, CONFIRM_SIGNUP, NOW, max_age=timedelta(days=7))
    assert (
        verify(SECRET, sign(SECRET, CONFIRM_SIGNUP, 42, NOW), CONFIRM_SIGNUP, NOW).subject_id == 42
    )
