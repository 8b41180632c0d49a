"""CPU per email of rendering a step that prints a custom subscriber field, by render path.

    .venv/bin/python bench/fields_render.py                 # day02, 2,000 emails
    .venv/bin/python bench/fields_render.py --count 5000

A copy of the shipped plan declares two fields (a choice and a number) and day02 prints the
choice; day01 reads none. Each figure is the median CPU time (this thread's) over `count`
renders, each for a different subscriber and value, after a warm-up that builds the step's
skeleton: day01 (fields declared, unread: rendered without them), day02 through the skeleton
(fields filled in, checked against a Jinja render per email), and day02 in full (Jinja, CSS
inlining and text conversion for every email, what a step reading fields first cost).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from campaign.content.plan_check import shared_context
from campaign.content.render import Renderer, subscriber_context
from campaign.domain.plan import load_plan
from campaign.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FIELDS = (
    "fields:\n  pain_area: {type: choice, choices: [upper-back, neck, low-back, knee]}\n"
    "  desk_hours: {type: number, min: 0, max: 24}\n"
)
AREAS = ["upper-back", "neck", "low-back", "knee"]
WARM_UP = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    count = parser.parse_args().count
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        shutil.copytree(ROOT / "plans", folder / "plans")
        shutil.copytree(ROOT / "templates" / "emails", folder / "emails")
        (folder / "assets").symlink_to(ROOT / "assets")
        plan_path = folder / "plans" / "thirty_day.yaml"
        plan_path.write_text(plan_path.read_text().replace("steps:\n", FIELDS + "steps:\n", 1))
        day02 = folder / "emails" / "day02.html"
        line = "<p>For your {{ subscriber.fields.pain_area }}.</p>{% endblock %}"
        day02.write_text(day02.read_text().replace("{% endblock %}", line, 1))
        settings = Settings.from_env(
            {
                "PUBLIC_BASE_URL": "https://news.example.org",
                "PLAN_PATH": str(plan_path),
                "TEMPLATES_DIR": str(folder / "emails"),
            }
        )
        plan = load_plan(settings.plan_path, settings.templates_dir)
        renderer = Renderer(plan, settings.templates_dir, shared_context(settings, plan))

        def one(key: str, n: int, *, full: bool = False) -> float:
            step = plan.step_by_key(key)
            assert step is not None
            fields: dict[str, str | int | bool] = {"pain_area": AREAS[n % 4], "desk_hours": n % 25}
            subscriber = subscriber_context(f"r{n}@example.org", f"Reader{n}", fields)
            extra = {"unsubscribe_url": f"https://news.example.org/unsubscribe/t{n}"}
            started = time.thread_time()
            if full:
                renderer.render(step, renderer.context(step, subscriber, **extra))
            else:
                renderer.render_for(step, subscriber, **extra)
            return time.thread_time() - started

        for label, key, full in (
            ("day01, fields unread", "day01", False),
            ("day02, prints a field (skeleton)", "day02", False),
            ("day02, prints a field (full path)", "day02", True),
        ):
            for n in range(WARM_UP):
                one(key, n, full=full)
            times = [one(key, n, full=full) for n in range(count)]
            print(f"{label:36} {statistics.median(times) * 1000:.3f} ms an email")


if __name__ == "__main__":
    main()
