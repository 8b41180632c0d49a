"""What the engine's SMTP client writes is what smtplib would: dot-stuffed data and paths."""

from __future__ import annotations

import re
import smtplib

from hypothesis import given
from hypothesis import strategies as st

from campaign.delivery.smtp import dot_stuffed, smtp_path

#: bytes rich in what matters: dots, both line endings and their halves.
LINES = st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"a", b" ", b"\x00"])).map(
    b"".join
)


@given(st.one_of(LINES, st.binary()))
def test_dot_stuffing_matches_smtplib(data: bytes) -> None:
    assert dot_stuffed(data) == re.sub(rb"(?m)^\.", b"..", data)


def test_a_leading_dot_and_a_lone_dot_line_are_doubled() -> None:
    assert dot_stuffed(b".first\r\n.\r\nlast") == b"..first\r\n..\r\nlast"


#: addr-spec characters, dots and a few non-ASCII ones, in any order (valid or not).
ADDRESS_PART = st.text(alphabet="ab1.-_+!#$%&'*/=?^`{|}~éü", min_size=1, max_size=10)


@given(ADDRESS_PART, ADDRESS_PART)
def test_the_path_of_a_plain_address_is_smtplibs(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    assert smtp_path(address) == smtplib.quoteaddr(address)


@given(st.text(max_size=40))
def test_the_path_of_any_text_is_smtplibs(text: str) -> None:
    assert smtp_path(text) == smtplib.quoteaddr(text)
