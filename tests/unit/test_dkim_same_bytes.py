"""DkimSigner signs with OpenSSL, yet writes the very DKIM-Signature dkimpy alone writes: same
tags, folding and body hash, and the same b= (RSA PKCS#1 v1.5 and Ed25519 are deterministic)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import SimpleNamespace

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign.clock import FixedClock
from campaign.content.dkim import SIGNED_HEADERS, DkimSigner, present_signed_headers
from campaign.content.dkim_keys import KeyType, SigningKey, new_signing_key
from campaign.content.mime import address, build_message

AT = datetime(2026, 11, 3, 9, 30, 17, tzinfo=UTC)
DOMAIN, SELECTOR = "example.org", "s2026"

#: header text as a person types it: any letters (accents, Cyrillic, CJK, emoji), no controls.
PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))
#: a body line: the same, plus tabs and spaces (relaxed canonicalization squeezes them), some
#: repeated into lines of thousands of characters.
LINE = st.builds(
    lambda piece, times: piece * times,
    st.text(st.one_of(PRINTABLE, st.sampled_from(" \t")), max_size=100),
    st.one_of(st.just(1), st.integers(1, 40)),
)


@pytest.fixture(scope="module")
def keys() -> dict[KeyType, SigningKey]:
    return {kind: new_signing_key(kind)[1] for kind in ("rsa", "ed25519")}


def dkimpy_signed(message: bytes, key: SigningKey) -> bytes:
    """`message` signed by dkim.sign alone (pure-Python RSA, PyNaCl), at AT."""
    with frozen_dkimpy_time():
        header: bytes = dkim.sign(
            message,
            SELECTOR.encode("ascii"),
            DOMAIN.encode("ascii"),
            key.private,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=key.algorithm,
            include_headers=present_signed_headers(message),
            linesep=b"\r\n",
        )
    return header + message


@contextmanager
def frozen_dkimpy_time() -> Iterator[None]:
    """dkimpy reads t= from its module's `time`; this replaces that name only, for a block."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dkim, "time", SimpleNamespace(time=lambda: AT.timestamp()))
        yield


def assert_same_bytes(message: bytes, key: SigningKey) -> None:
    ours = DkimSigner(DOMAIN, SELECTOR, key, FixedClock(AT)).sign(message)
    assert ours == dkimpy_signed(message, key)
    record = f"v=DKIM1; k={key.kind}; p={key.public}".encode("ascii")
    with frozen_dkimpy_time():  # t= is never in the verifier's future, whatever the date
        assert dkim.verify(ours, dnsfunc=lambda name, timeout=5: record)


@settings(max_examples=40, deadline=None)
@given(
    subject=st.text(PRINTABLE, max_size=300),
    name=st.text(PRINTABLE, max_size=60),
    lines=st.lists(LINE, max_size=12),
    list_id=st.text(PRINTABLE, max_size=120),
)
@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_a_composed_message_gets_dkimpys_exact_signature(
    keys: dict[KeyType, SigningKey],
    kind: KeyType,
    subject: str,
    name: str,
    lines: list[str],
    list_id: str,
) -> None:
    """Any subject, display name and List-Id (encoded words, folded) and any body with long
    lines: the signed bytes equal dkimpy's own, and dkimpy verifies them."""
    text = "\n".join(lines) + "\n"
    message = build_message(
        sender=address("newsletter@example.org", "Clinic"),
        recipient=address("sam@example.com", name),
        subject=subject,
        text=text,
        html=f"<p>{text}</p>\n",
        message_id="<m1@example.org>",
        date=AT,
        extra_headers={"List-Id": f"{list_id} <plan.example.org>"},
    )
    assert_same_bytes(message, keys[kind])


def raw_headers() -> st.SearchStrategy[list[tuple[str, str]]]:
    """From, then any of the other signed headers and an unsigned one, some repeated, values
    in raw UTF-8 (as SMTPUTF8 carries them), some very long, some folded by hand."""
    names = st.sampled_from([*SIGNED_HEADERS[1:], "X-Campaign-Step", "subject", "TO"])
    value = st.builds(
        lambda words, fold: (" \r\n\t" if fold else " ").join(words),
        st.lists(st.text(PRINTABLE, min_size=1, max_size=400), min_size=1, max_size=4),
        st.booleans(),
    )
    return st.builds(
        lambda sender, rest: [("From", sender), *rest],
        value,
        st.lists(st.tuples(names, value), max_size=10),
    )


@settings(max_examples=40, deadline=None)
@given(headers=raw_headers(), lines=st.lists(LINE, max_size=12), blank_tail=st.integers(0, 3))
@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_raw_utf8_and_long_headers_get_dkimpys_exact_signature(
    keys: dict[KeyType, SigningKey],
    kind: KeyType,
    headers: list[tuple[str, str]],
    lines: list[str],
    blank_tail: int,
) -> None:
    """Hand-made messages: 8-bit header values, lines far past 998 characters, repeated and
    oddly cased names, trailing blank lines: the same bytes as dkimpy's signature."""
    head = "".join(f"{field}: {value}\r\n" for field, value in headers)
    body = "".join(f"{line}\r\n" for line in lines) + "\r\n" * blank_tail
    assert_same_bytes((head + "\r\n" + body).encode("utf-8"), keys[kind])


def test_a_message_without_from_is_refused_as_dkimpy_refuses_it(
    keys: dict[KeyType, SigningKey],
) -> None:
    """DKIM requires From to be signed: no From, no signature, dkimpy's error."""
    message = b"To: sam@example.com\r\nSubject: Hi\r\n\r\nHello\r\n"
    with pytest.raises(dkim.ParameterError, match="From"):
        DkimSigner(DOMAIN, SELECTOR, keys["rsa"]).sign(message)
    with pytest.raises(dkim.ParameterError, match="From"):
        dkimpy_signed(message, keys["rsa"])


def test_the_timestamp_comes_from_the_signers_clock(keys: dict[KeyType, SigningKey]) -> None:
    """t= is the clock's second, so a signature made under a fixed clock is reproducible."""
    message = b"From: a@example.org\r\n\r\nHi\r\n"
    signed = DkimSigner(DOMAIN, SELECTOR, keys["ed25519"], FixedClock(AT)).sign(message)
    assert f" t={int(AT.timestamp())};".encode("ascii") in signed
