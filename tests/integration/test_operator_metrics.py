"""The numbers operators alert on move with a real pass over SMTP, as ADMIN_LISTEN shows them:
welcome latency, bounces and complaints, pass duration, due backlog and its oldest age."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from campaign.engine import App, make_service, return_paths
from campaign.interfaces.admin import create_admin_app
from campaign.people import bounces, subscriptions
from campaign.storage import store
from tests.bounce_reports import arf
from tests.conftest import EngineFactory
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _scrape(app: App) -> dict[str, float]:
    """/metrics from the operators' application, as `name{labels}` -> value."""

    async def get() -> str:
        transport = httpx.ASGITransport(app=create_admin_app(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            return (await client.get("/metrics")).text

    text = asyncio.run(get())
    samples = re.findall(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.MULTILINE)
    return {name: float(value) for name, value in samples}


def test_a_pass_moves_backlog_welcome_latency_bounces_complaints_and_pass_duration(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Three due welcomes wait 40 s (backlog 3, oldest 40 s); the pass sends two 40 s after
    enrollment (histogram count 2, sum 80, all under 60 s) and one bounces at RCPT; a
    complaint then counts as well; the backlog and its age go back to 0."""
    app, clock = engine(START)
    smtp_server.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"
    for email in ("ann@example.org", "bob@example.org", "gone@example.org"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Sam", timezone="UTC", now=START
        )
    clock.set(START + timedelta(seconds=40))

    before = _scrape(app)
    assert before["campaign_backlog_due"] == 3
    assert before["campaign_oldest_due_age_seconds"] == 40
    assert before["campaign_welcome_latency_seconds_count"] == 0
    assert before["campaign_pass_seconds_count"] == 0

    result = make_service(app).run_once()
    assert (result.sent, result.bounced) == (2, 1)

    after = _scrape(app)
    assert after["campaign_backlog_due"] == 0
    assert after["campaign_oldest_due_age_seconds"] == 0
    assert after["campaign_welcome_latency_seconds_count"] == 2
    assert after["campaign_welcome_latency_seconds_sum"] == 80
    assert after['campaign_welcome_latency_seconds_bucket{le="30.0"}'] == 0
    assert after['campaign_welcome_latency_seconds_bucket{le="60.0"}'] == 2
    assert after["campaign_pass_seconds_count"] == 1
    assert after['campaign_suppressions{reason="bounced"}'] == 1
    assert after['campaign_emails{status="sent",step="welcome"}'] == 2

    [ann] = smtp_server.to("ann@example.org")
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "complaint.eml").write_bytes(arf(original=ann.data))
    report = bounces.ingest(app.db, [folder], START, return_paths=return_paths(app.settings))
    assert len(report.complained) == 1

    complained = _scrape(app)
    assert complained['campaign_suppressions{reason="complained"}'] == 1
    assert complained['campaign_suppressions{reason="bounced"}'] == 1


def test_a_welcome_sent_at_confirmation_is_timed_too(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The welcome the confirmation wakes (not a scheduled pass) is observed as well."""
    app, clock = engine(START)
    subscriptions.subscribe(
        app.db, app.plan, email="cy@example.org", first_name="Cy", timezone="UTC", now=START
    )
    with app.db.transaction() as session:
        subscriber = store.find_subscriber(session, "cy@example.org")
        assert subscriber is not None
        enrollment = store.active_enrollment_id(session, subscriber.id, app.plan.id)
    clock.set(START + timedelta(seconds=3))
    app.signup_mail.wake(enrollment)
    app.signup_mail.drain(clock.now())

    assert len(smtp_server.to("cy@example.org")) == 1
    scraped = _scrape(app)
    assert scraped["campaign_welcome_latency_seconds_count"] == 1
    assert scraped["campaign_welcome_latency_seconds_sum"] == 3
