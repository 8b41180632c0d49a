"""Editing the plan while subscribers are mid-month: matched by key, never twice, never crashing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign.engine import make_service
from campaign.people import subscriptions
from tests.conftest import EngineFactory
from tests.helpers import hours
from tests.smtp_server import SMTPServer

START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
STEP_ORDER = ["welcome"] + [f"day{n:02d}" for n in range(1, 31)]


def _steps(smtp: SMTPServer, email: str) -> list[str]:
    return [str(r.message["X-Campaign-Step"]).split("/")[1] for r in smtp.to(email)]


def _step_block(text: str, key: str) -> str:
    start = text.index(f"  - key: {key}\n")
    end = text.find("  - key: ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_a_valid_edit_changes_the_next_email_and_an_invalid_one_is_refused(
    engine: EngineFactory,
    smtp_server: SMTPServer,
    plan_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The service keeps the last good plan on a broken edit (logging file:line), then takes a
    good edit for the next email."""
    app, _ = engine(START, PLAN_PATH=str(plan_file))
    service = make_service(app)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name=None, timezone="UTC", now=START
    )
    service.run_pass(START)
    original = plan_file.read_text()
    broken = original.replace("template: day01.html", "template: day01-missing.html")
    plan_file.write_text(broken)
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if "day01-missing" in t)
    with caplog.at_level(logging.ERROR):
        service.run_pass(START + timedelta(days=1, hours=7))
    assert f"thirty_day.yaml:{line}: steps[1].template:" in caplog.text
    assert _steps(smtp_server, "ann@example.org") == ["welcome", "day01"]  # the old plan went on
    plan_file.write_text(
        original.replace("Squeezed discs, stretched joint capsules", "Edited preheader").replace(
            'subject: "What slouching really does inside your spine"',
            'subject: "Edited: what slouching does"',
        )
    )
    service.run_pass(START + timedelta(days=2, hours=7))
    [_, _, day02] = smtp_server.to("ann@example.org")
    assert str(day02.message["Subject"]) == "Edited: what slouching does"


def test_steps_added_removed_and_moved_are_matched_by_key(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """Mid-month edits: a removed step is not sent, a new one goes to those not yet past its
    day, and a step moved later never reaches anyone twice."""
    early = START - timedelta(days=12)
    app, _ = engine(early, PLAN_PATH=str(plan_file))
    service = make_service(app)
    subscriptions.subscribe(
        app.db, app.plan, email="early@example.org", first_name=None, timezone="UTC", now=early
    )
    for instant in hours(early, 12 * 24):
        service.run_pass(instant)
    subscriptions.subscribe(
        app.db, app.plan, email="late@example.org", first_name=None, timezone="UTC", now=START
    )
    for instant in hours(START, 5 * 24 + 8):
        service.run_pass(instant)
    assert _steps(smtp_server, "late@example.org") == STEP_ORDER[:6]  # through day 5

    text = plan_file.read_text()
    day06, day10 = _step_block(text, "day06"), _step_block(text, "day10")
    bonus = day06.replace("key: day06", "key: bonus")
    moved = day10.replace("day: 10", "day: 31")
    text = text.replace(day06, bonus).replace(day10, "") + moved
    plan_file.write_text(text)
    for instant in hours(START + timedelta(days=5, hours=8), 28 * 24):
        service.run_pass(instant)

    late = _steps(smtp_server, "late@example.org")
    assert late == [*STEP_ORDER[:6], "bonus", "day07", "day08", "day09", *STEP_ORDER[11:], "day10"]
    early_steps = _steps(smtp_server, "early@example.org")
    assert early_steps == STEP_ORDER  # had day06 and day10 already: nothing twice, no bonus
