"""SMTP transparency: the engine's dot-stuffing gives exactly smtplib's bytes."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from campaign.smtp import dot_stuffed

#: bytes rich in what matters: dots, both line endings and their halves.
LINES = st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"a", b" ", b"\x00"])).map(
    b"".join
)


@given(st.one_of(LINES, st.binary()))
def test_dot_stuffing_matches_smtplib(data: bytes) -> None:
    assert dot_stuffed(data) == re.sub(rb"(?m)^\.", b"..", data)


def test_a_leading_dot_and_a_lone_dot_line_are_doubled() -> None:
    assert dot_stuffed(b".first\r\n.\r\nlast") == b"..first\r\n..\r\nlast"
