"""Draw the exercise illustrations from their pose descriptions, as SVG and PNG.

    .venv/bin/python scripts/build_illustrations.py [POSES.yaml] [--out FOLDER]

Each exercise in ``assets/illustrations/poses.yaml`` becomes one picture showing its start
and end position side by side (552 x 240, sized for a phone), written to
``templates/emails/images/`` as ``KEY.svg``, ``KEY.png`` (1x) and ``KEY@2x.png``, plus
``illustrations.json``: each key's alt text, size and file names, which the emails' template
function ``illustration("KEY")`` and the ebook read. Rebuilding unchanged poses gives the
same bytes (no dates or tool versions are written), so ``make illustrations`` only shows up
in version control when a drawing really changed.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cairosvg
from PIL import Image
from ruamel.yaml import YAML

sys.path.insert(0, str(Path(__file__).resolve().parent))
from illustration_figure import ARROW, arrow, figure, prop

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / "assets" / "illustrations" / "poses.yaml"
DEFAULT_OUTPUT = REPO_ROOT / "templates" / "emails" / "images"
MANIFEST = "illustrations.json"

WIDTH, HEIGHT = 552, 240
PANEL = WIDTH // 2
CARD_LINE = "#d6e6e7"
# Few colours (teal, a paler teal, sage props, one warm accent, white) drawn with soft edges:
# a 48-colour palette keeps the edges smooth at a fraction of a full-colour PNG's size.
PNG_COLOURS = 48
KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
EXIT_BAD_INPUT = 2


class PoseError(Exception):
    """A pose description the drawing code cannot use."""


def _panel(spec: Mapping[str, Any], offset: int) -> str:
    parts = [prop(item) for item in spec.get("props", [])]
    parts.append(figure(spec))
    parts += [arrow(item["points"], float(item.get("curve", 0))) for item in spec.get("arrows", [])]
    return f'<g transform="translate({offset},0)">{"".join(parts)}</g>'


def svg_for(exercise: Mapping[str, Any]) -> str:
    """The exercise's start and end side by side on a white rounded card."""
    shared = list(exercise.get("props", []))
    start = {**exercise["start"], "props": shared + list(exercise["start"].get("props", []))}
    end = {**exercise["end"], "props": shared + list(exercise["end"].get("props", []))}
    middle = PANEL
    chevron = (
        f'<circle cx="{middle}" cy="{HEIGHT // 2}" r="13" fill="#ffffff" stroke="{CARD_LINE}" '
        f'stroke-width="2"/><polyline points="{middle - 3},{HEIGHT // 2 - 6} {middle + 4},'
        f'{HEIGHT // 2} {middle - 3},{HEIGHT // 2 + 6}" fill="none" stroke="{ARROW}" '
        'stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
        f"<title>{_escape(exercise['alt'])}</title>"
        f'<rect x="1" y="1" width="{WIDTH - 2}" height="{HEIGHT - 2}" rx="16" fill="#ffffff" '
        f'stroke="{CARD_LINE}" stroke-width="2"/>'
        f'<line x1="{middle}" y1="24" x2="{middle}" y2="{HEIGHT - 24}" stroke="{CARD_LINE}" '
        'stroke-width="2" stroke-dasharray="4 6"/>'
        f"{_panel(start, 0)}{_panel(end, PANEL)}{chevron}</svg>\n"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def png_for(svg: str, scale: int) -> bytes:
    """The SVG rasterised at `scale`, as a small palette PNG with no metadata."""
    raw = cairosvg.svg2png(bytestring=svg.encode(), output_width=WIDTH * scale)
    image = Image.open(io.BytesIO(raw)).convert("RGBA")
    small = image.quantize(PNG_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def load_poses(source: Path) -> dict[str, Any]:
    data = YAML(typ="safe").load(source.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not data:
        raise PoseError(f"{source}: expected a mapping of exercise keys to poses")
    for key, exercise in data.items():
        if not isinstance(key, str) or not KEY.match(key):
            raise PoseError(f"{source}: {key!r} is not a kebab-case key like chin-tuck")
        for field in ("title", "alt", "start", "end"):
            if not isinstance(exercise, dict) or field not in exercise:
                raise PoseError(f"{source}: {key} has no {field}")
    return data


def build(source: Path, output: Path) -> list[str]:
    """Write every exercise's SVG, PNGs and the manifest to `output`; return the keys."""
    poses = load_poses(source)
    output.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    for key, exercise in sorted(poses.items()):
        svg = svg_for(exercise)
        (output / f"{key}.svg").write_text(svg, encoding="utf-8")
        (output / f"{key}.png").write_bytes(png_for(svg, 1))
        (output / f"{key}@2x.png").write_bytes(png_for(svg, 2))
        manifest[key] = {
            "title": exercise["title"],
            "alt": " ".join(str(exercise["alt"]).split()),
            "width": WIDTH,
            "height": HEIGHT,
            "png": f"{key}.png",
            "png_2x": f"{key}@2x.png",
            "svg": f"{key}.svg",
        }
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (output / MANIFEST).write_text(text, encoding="utf-8")
    return sorted(poses)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw the exercise illustrations.")
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args(argv)
    try:
        keys = build(arguments.source, arguments.out)
    except (PoseError, KeyError, ValueError, TypeError) as error:
        print(f"{arguments.source}: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{arguments.out}: {len(keys)} illustrations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
