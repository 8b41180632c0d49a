"""`campaign report`: one self-contained HTML page with the month's funnel and the step table."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, StrictUndefined

if TYPE_CHECKING:  # the report's types only: the page needs no database
    from campaign.insights.reports import Stats


def render_report(numbers: Stats, generated: datetime) -> str:
    """The report page for `reports.stats` numbers; no external file, font or script."""
    steps = numbers["steps"]
    width, height, gap = 900, 260, 4
    slot = width / max(len(steps), 1)
    top = max([row["sent"] for row in steps] + [1])
    bars = []
    for i, row in enumerate(steps):
        h = round(row["sent"] / top * (height - 20), 1)
        bars.append(
            {
                "key": row["key"],
                "day": row["day"],
                "value": row["sent"],
                "x": round(i * slot + gap / 2, 1),
                "w": round(slot - gap, 1),
                "y": round(height - h, 1),
                "h": h,
                "show_label": i % 5 == 0 or i == len(steps) - 1,
            }
        )
    page = (Path(__file__).parent / "report.html").read_text(encoding="utf-8")
    environment = Environment(autoescape=True, undefined=StrictUndefined)
    return environment.from_string(page).render(
        plan=numbers["name"],
        subscribers=numbers["subscribers"],
        steps=steps,
        subject_tests=numbers.get("subject_tests", []),
        bars=bars,
        width=width,
        height=height,
        last_day=steps[-1]["day"] if steps else 0,
        generated=f"{generated:%Y-%m-%d %H:%M} UTC",
    )
