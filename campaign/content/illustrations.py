"""The exercise pictures a lesson shows with `{{ illustration("chin-tuck") }}`: read from the
templates folder's `images/illustrations.json` (drawn by scripts/build_illustrations.py) and
printed as one `<img>` hosted under PUBLIC_BASE_URL, with its alt text, so the email reads
the same with images off."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateRuntimeError
from markupsafe import Markup, escape

#: the manifest, relative to the templates folder; the web app serves its folder at /images/.
MANIFEST = Path("images") / "illustrations.json"
#: an image file name the web app serves: lowercase words joined by hyphens, 1x or 2x.
IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*(?:@2x)?\.(?:png|svg)$")

_IMG_STYLE = "display:block;width:100%;max-width:552px;height:auto;border:0"


class Illustrations:
    """The template function `illustration(key)`, over one templates folder's manifest."""

    def __init__(self, templates_dir: Path, public_base_url: str) -> None:
        # Underscored: the sandbox keeps templates out of them (the manifest's server path).
        self._base = f"{public_base_url.rstrip('/')}/images/"
        self._manifest = templates_dir / MANIFEST
        self._entries: dict[str, dict[str, Any]] = {}
        self._problem = ""
        try:
            data = json.loads(self._manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._problem = f"there is no {self._manifest}"
            return
        except (OSError, ValueError) as exc:
            self._problem = f"{self._manifest} cannot be read ({exc})"
            return
        if isinstance(data, dict):
            self._entries = {
                key: entry for key, entry in data.items() if _usable(entry) and isinstance(key, str)
            }

    def __repr__(self) -> str:
        return "illustration(key)"

    def __call__(self, key: object) -> Markup:
        entry = self._entries.get(key) if isinstance(key, str) else None
        if entry is None:
            known = ", ".join(sorted(self._entries)) or self._problem or "none"
            raise TemplateRuntimeError(f"unknown illustration {key!r}; known: {known}")
        # A presentation table: Outlook honours the width there, and screen readers skip it.
        return Markup(
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'border="0" style="margin:0 0 16px 0"><tr><td>'
            '<img src="{src}" width="{width}" height="{height}" alt="{alt}" style="{style}">'
            "</td></tr></table>"
        ).format(
            src=self._base + entry["png"],
            width=entry["width"],
            height=entry["height"],
            alt=escape(entry["alt"]),
            style=_IMG_STYLE,
        )


def _usable(entry: object) -> bool:
    """An entry whose file name the web app would serve and whose size and alt are real."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("png"), str)
        and bool(IMAGE_NAME.match(entry["png"]))
        and isinstance(entry.get("alt"), str)
        and bool(entry["alt"].strip())
        and all(type(entry.get(side)) is int for side in ("width", "height"))
    )
