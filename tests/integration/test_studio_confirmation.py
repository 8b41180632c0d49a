"""The preview studio shows the double opt-in email beside the month, through its HTTP app."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx

from campaign.clock import FixedClock
from campaign.interfaces.studio import create_studio
from campaign.settings import Settings
from tests.plans_folder import THIRTY, plans_folder
from tests.tools import ROOT


def test_the_studio_lists_and_shows_the_confirmation_email(tmp_path: Path) -> None:
    """The timeline starts with the confirmation email; its page shows the subject, the HTML
    with its confirm link, and the headers the sender would send."""
    settings = Settings.from_env(
        {
            "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            "PUBLIC_BASE_URL": "https://news.example.org",
        }
    )
    clock = FixedClock(datetime(2026, 12, 1, 7, tzinfo=UTC))
    studio = create_studio(settings, clock.now)

    async def visit() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=studio)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            return (
                await client.get("/"),
                await client.get("/confirmation"),
                await client.get("/confirmation/email.html"),
            )

    timeline, page, email = asyncio.run(visit())
    assert timeline.status_code == 200
    first = timeline.text.index('href="/confirmation"')
    assert first < timeline.text.index('href="/step/welcome"')
    assert "Please confirm your email to get your free ebook" in timeline.text
    assert page.status_code == 200
    assert "<h2>Confirmation: Please confirm your email to get your free ebook</h2>" in page.text
    assert "X-Campaign-Step: thirty-day-self-healing/confirmation" in page.text
    assert 'href="https://news.example.org/confirm/' in email.text
    assert "Hi there," in email.text  # as sent: no first name before confirmation


def test_the_studio_shows_each_plan_of_a_folder(tmp_path: Path) -> None:
    """With a folder of plans, the month links every plan; `?plan=knee` shows the knee plan's
    month, its steps' pages and emails (links keep the plan); an unknown plan is a 404."""
    settings = Settings.from_env(
        {
            "PLAN_PATH": str(plans_folder(tmp_path)),
            "DEFAULT_PLAN": THIRTY,
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            "PUBLIC_BASE_URL": "https://news.example.org",
        }
    )
    studio = create_studio(settings, FixedClock(datetime(2026, 12, 1, 7, tzinfo=UTC)).now)

    async def visit(*paths: str) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=studio)
        async with httpx.AsyncClient(transport=transport, base_url="http://studio") as client:
            return [await client.get(path) for path in paths]

    default, knee, step, email, unknown = asyncio.run(
        visit(
            "/",
            "/?plan=knee",
            "/step/day01?plan=knee",
            "/step/day01/email.html?plan=knee",
            "/?plan=ankle",
        )
    )
    assert 'href="/?plan=knee"' in default.text
    assert "Your free ebook is here" in default.text
    assert "Your knee plan starts today" not in default.text
    assert knee.status_code == 200
    assert "Your knee plan starts today" in knee.text
    assert 'href="/step/day01?plan=knee"' in knee.text
    assert 'aria-current="page">Five days for your knees (knee)' in knee.text
    assert "<h2>Day 1: Knees, lesson one</h2>" in step.text
    assert 'src="/step/day01/email.html?plan=knee"' in step.text
    assert "X-Campaign-Step: knee/day01" in step.text
    assert email.status_code == 200
    assert unknown.status_code == 404
