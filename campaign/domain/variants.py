"""Which subject of a step's subject test an enrollment gets: chosen from the enrollment and the
step alone, so every process, restart and retry chooses the same one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def choose_variant(enrollment_id: int, step_key: str, names: Sequence[str]) -> str | None:
    """One of `names` for this enrollment's step (None when the step tests no subject).

    SHA-256 of the enrollment and the step key, as a number, modulo the number of variants:
    the same answer everywhere (unlike Python's salted `hash`), about uniform across
    enrollments, and independent from one step to the next.
    """
    if not names:
        return None
    digest = hashlib.sha256(f"{enrollment_id}:{step_key}".encode()).digest()
    return names[int.from_bytes(digest[:8], "big") % len(names)]
