"""Screenshots for the README: the preview studio and a report of a simulated month.

    .venv/bin/python scripts/screenshot_marketer_tools.py --out docs/

Builds a throw-away SQLite database, enrols 200 sample subscribers, walks 32 days of passes
on a fixed clock into the recording transport (nothing is sent), lets a few unsubscribe,
then writes `report.html` and screenshots it and the preview studio in Debian's Chromium.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from campaign.clock import FixedClock
from campaign.delivery.testing import RecordingTransport
from campaign.engine import build
from campaign.insights import reports
from campaign.insights.report_page import render_report
from campaign.interfaces.studio import create_studio
from campaign.people import subscriptions
from campaign.settings import Settings
from campaign.storage.db import Database

START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def simulated_report(folder: Path) -> Path:
    url = f"sqlite:///{folder / 'demo.db'}"
    database = Database(url)
    database.upgrade()
    database.dispose()
    clock = FixedClock(START)
    app = build(
        Settings.from_env({"DATABASE_URL": url}), clock=clock, transport=RecordingTransport()
    )
    chance = random.Random(7)  # noqa: S311 - not security: the same picture every run
    for n in range(200):
        subscriptions.subscribe(
            app.db,
            app.plan,
            email=f"reader{n}@example.org",
            first_name=None,
            timezone="Europe/Berlin",
            now=START,
        )
    for hour in range(32 * 24):
        now = START + timedelta(hours=hour)
        clock.set(now)
        app.dispatcher.run_pass(now)
        if hour % 24 == 8:
            for n in chance.sample(range(200), 2):  # a second unsubscribe is a no-op
                subscriptions.unsubscribe(app.db, email=f"reader{n}@example.org", now=now)
    target = folder / "report.html"
    target.write_text(render_report(reports.stats(app.db, app.plan), clock.now()))
    app.close()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        report = simulated_report(Path(scratch))
        config = uvicorn.Config(
            create_studio(Settings.from_env({}), FixedClock(START).now),
            host="127.0.0.1",
            port=8791,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto("http://127.0.0.1:8791/")
            page.screenshot(path=str(args.out / "preview-studio.png"))
            page.goto("http://127.0.0.1:8791/step/day03")
            page.wait_for_timeout(500)
            page.screenshot(path=str(args.out / "preview-step.png"))
            page.goto(report.as_uri())
            page.screenshot(path=str(args.out / "report.png"), full_page=True)
            browser.close()
        server.should_exit = True
    for name in ("preview-studio.png", "preview-step.png", "report.png"):
        print(args.out / name)


if __name__ == "__main__":
    main()
