"""The consoles the commands print through: untrusted text shown as it is, never as markup."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console

#: Control characters but tab and newline: an escape sequence in a bounce report's text
#: must not retitle or repaint the operator's terminal (Rich strips only some of them).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class PlainConsole(Console):
    """A console that prints untrusted text as it is: markup and emoji codes off (a stray
    "[/x]" in a name or a report is text, not a Rich tag that crashes the command), and
    control characters shown as \\xNN."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, **options)

    def print(self, *objects: Any, **options: Any) -> None:
        shown = [_CONTROL.sub(_escaped, o) if isinstance(o, str) else o for o in objects]
        super().print(*shown, **options)


def _escaped(found: re.Match[str]) -> str:
    return f"\\x{ord(found.group(0)):02x}"
