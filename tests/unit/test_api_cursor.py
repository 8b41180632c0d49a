"""The delivery log's cursors: opaque, round-tripping, and anything else refused naming `since`."""

from __future__ import annotations

import pytest

from campaign.interfaces.api.problems import FieldProblem
from campaign.interfaces.api.routes import decode_cursor, encode_cursor


@pytest.mark.parametrize("after_id", [0, 1, 41, 2**40])
def test_a_cursor_gives_back_the_id_it_was_made_from(after_id: int) -> None:
    """decode(encode(id)) is the id, and the cursor does not show it as a plain number."""
    cursor = encode_cursor(after_id)
    assert decode_cursor(cursor) == after_id
    assert cursor != str(after_id)


@pytest.mark.parametrize(
    "cursor", ["", "12", "ZDE6", "ZDE6LTE", "ZDE6MQ==x", "%%%", "ZDE6" + "OTk5" * 10, "\u00e9"]
)
def test_anything_but_a_cursor_of_ours_is_refused_naming_since(cursor: str) -> None:
    """Empty, a bare number, a negative id, junk, an absurd id: FieldProblem on `since`."""
    with pytest.raises(FieldProblem) as refused:
        decode_cursor(cursor)
    assert [field for field, _ in refused.value.errors] == ["since"]
