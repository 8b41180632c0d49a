"""CPU per email of `Composer.compose`, by stage: render (Jinja + CSS + text), MIME, total.

    .venv/bin/python bench/compose_cpu.py                       # day01, day07, welcome; 2,000 each
    .venv/bin/python bench/compose_cpu.py --steps day15 --count 5000

Each figure is the median CPU time (this thread's, so other processes on the machine do not
count) over `count` calls, each for a different subscriber (accented, empty, long and quoted
names), after a warm-up that builds the per-step caches. No database and no SMTP: this is the
CPU the engine spends between claiming an email and handing it to SMTP.
The "full path" lines are what every email cost before the per-step skeleton: css-inline and
html_to_text run for it, as they still do for the first email of a step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from campaign.content.compose import Composer, Recipient
from campaign.content.mime import address, build_message
from campaign.content.plaintext import html_to_text
from campaign.content.plan_check import shared_context
from campaign.content.render import Renderer, subscriber_context
from campaign.domain.plan import load_plan
from campaign.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
NAMES = ["Ann", "José", "Zoë Müller", "", "Li", "Anne-Marie O'Brien", 'Dr. Bob "B" Smith']
WARM_UP = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", default=["day01", "day07", "welcome"])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()

    composer = make_composer()
    print(f"median CPU us per email over {args.count} subscribers")
    print(f"{'step':10} {'render':>8} {'mime':>8} {'compose':>8}   {'full path':>9} {'text':>8}")
    for key in args.steps:
        row = measure(composer, key, args.count)
        print(
            f"{key:10} {row['render']:8.0f} {row['mime']:8.0f} {row['compose']:8.0f}   "
            f"{row['full']:9.0f} {row['text']:8.0f}"
        )
    print()
    print("render    Composer.render: Jinja, CSS-inlined HTML and text filled in from the step")
    print("mime      build_message: headers, quoted-printable parts, cached attachment")
    print("compose   Composer.compose: all of the above plus the signed unsubscribe link")
    print("full path Renderer.render: Jinja, css-inline and html_to_text for this one email")
    print("text      html_to_text alone, the share of the full path spent on plain text")


def make_composer() -> Composer:
    settings = Settings.from_env(
        {
            "PUBLIC_BASE_URL": "https://news.example.org",
            "POSTAL_ADDRESS": "Pain & Injury Doctor, 1 Test Street, Testville",
            "MAIL_FROM": "Pain & Injury Doctor <newsletter@example.org>",
            "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        }
    )
    plan = load_plan(settings.plan_path, settings.templates_dir)
    renderer = Renderer(plan, settings.templates_dir, shared_context(settings, plan))
    return Composer(
        plan=plan,
        renderer=renderer,
        sender=address(settings.sender_address, plan.sender_name or settings.sender_name),
        public_base_url=settings.public_base_url,
        secret_key=settings.secret_key.get_secret_value(),
    )


def recipient(n: int) -> Recipient:
    name = NAMES[n % len(NAMES)]
    return Recipient(n + 1, f"reader{n}@example.org", f"{name}{n}" if name and n % 3 else name)


def median_us(call: Callable[[int], object], count: int) -> float:
    for n in range(WARM_UP):
        call(n)
    times = []
    for n in range(count):
        started = time.thread_time_ns()
        call(n)
        times.append(time.thread_time_ns() - started)
    return statistics.median(times) / 1000


def measure(composer: Composer, key: str, count: int) -> dict[str, float]:
    step = composer.plan.step_by_key(key)
    if step is None:
        raise SystemExit(f"no step {key!r} in {composer.plan.source}")
    renderer = composer.renderer
    rendered = [composer.render(step, recipient(n), NOW) for n in range(count + WARM_UP)]
    recipients = [address(recipient(n).email, recipient(n).first_name) for n in range(count)]

    def mime(n: int) -> bytes:
        email = rendered[n]
        return build_message(
            sender=composer.sender,
            recipient=recipients[n % count],
            subject=email.subject,
            text=email.text_part,
            html=email.html_part,
            message_id=f"<{n}@example.org>",
            date=NOW,
            extra_headers={
                "List-Unsubscribe": f"<{composer.unsubscribe_url(n, NOW)}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "X-Campaign-Step": f"{composer.plan.id}/{step.key}",
            },
        )

    def full(n: int) -> object:
        person = recipient(n)
        context = renderer.context(
            step,
            subscriber_context(person.email, person.first_name),
            **composer._link_values(step, person.subscriber_id, NOW),
        )
        return renderer.render(step, context)

    return {
        "render": median_us(lambda n: composer.render(step, recipient(n), NOW), count),
        "mime": median_us(mime, count),
        "compose": median_us(
            lambda n: composer.compose(
                step, recipient(n), message_id=f"<{n}@example.org>", now=NOW
            ),
            count,
        ),
        "full": median_us(full, count),
        "text": median_us(lambda n: html_to_text(rendered[n].html), count),
    }


if __name__ == "__main__":
    main()
