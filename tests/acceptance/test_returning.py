"""Returning people over real HTTP and SMTP, on both databases: someone who unsubscribed and
signs up again starts the plan afresh from the welcome, in a new enrollment; the old one stays
in the log; suppressed addresses stay refused."""

from __future__ import annotations

import threading
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from campaign.engine import make_service, return_paths
from campaign.people import bounces, subscriptions
from tests.acceptance.conftest import NOW, Site
from tests.bounce_reports import arf
from tests.helpers import tick

PLAN = "thirty-day-self-healing"


def _steps(site: Site, email: str) -> list[str]:
    return [str(m["X-Campaign-Step"]).removeprefix(PLAN + "/") for m in site.mail_to(email)]


def _confirm_link(site: Site, email: str, nth: int) -> str:
    """The link in the `nth` confirmation email (run a pass first if it is queued, not sent)."""
    found = [m for m in site.mail_to(email) if _steps_of(m) == "confirmation"]
    if len(found) < nth:
        make_service(site.app).run_pass(site.clock.now())
        found = [m for m in site.mail_to(email) if _steps_of(m) == "confirmation"]
    return site.link_in(found[nth - 1], "confirm")


def _steps_of(message: EmailMessage) -> str:
    return str(message["X-Campaign-Step"]).removeprefix(PLAN + "/")


def _morning(day: int) -> timedelta:
    """From NOW (09:00 UTC) to the send time (07:00 UTC) of plan day `day`."""
    return timedelta(days=day, hours=-2)


def _unsubscribe(site: Site, email: str) -> None:
    last = site.mail_to(email)[-1]
    response = httpx.post(
        str(last["List-Unsubscribe"]).strip("<>"),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert site.status_of(email) == "unsubscribed"


def test_a_returning_subscriber_gets_the_welcome_again_then_lesson_one(site: Site) -> None:
    """Unsubscribe on day 5, sign up again, confirm: the welcome arrives again, lesson 1 the
    next morning; the old enrollment and its deliveries stay in `export`; a second click of
    the confirmation link starts nothing."""
    email = "back@example.org"
    site.signup(email, first_name="Bea")
    site.http.post(_confirm_link(site, email, 1))
    for day in range(1, 6):
        tick(site.app, site.clock, NOW + _morning(day))
    assert _steps(site, email) == ["confirmation", "welcome", *[f"day0{n}" for n in range(1, 6)]]
    site.clock.set(NOW + timedelta(days=5, hours=1))
    _unsubscribe(site, email)
    tick(site.app, site.clock, NOW + _morning(6))
    assert _steps(site, email)[-1] == "day05"  # nothing after leaving

    site.clock.set(NOW + timedelta(days=6, hours=3))
    answer = site.signup(email, first_name="Bea")
    assert answer.status_code == 200
    link = _confirm_link(site, email, 2)
    confirmed = site.http.post(link)
    assert confirmed.status_code == 200
    assert site.status_of(email) == "active"
    welcome = site.mail_to(email)[-1]
    assert _steps_of(welcome) == "welcome"
    assert [a.get_filename() for a in welcome.iter_attachments()] == [
        "concepts-of-self-healing.pdf"
    ]
    assert site.http.post(link).status_code == 200  # a second click
    tick(site.app, site.clock, NOW + _morning(7))
    tick(site.app, site.clock, NOW + _morning(7) + timedelta(hours=1))
    assert _steps(site, email)[-3:] == ["confirmation", "welcome", "day01"]

    data = subscriptions.export_person(site.app.db, email)
    old, new = data["enrollments"]
    assert (old["status"], new["status"]) == ("cancelled", "active")
    by_enrollment = {
        e["id"]: sorted(d["step_key"] for d in data["deliveries"] if d["enrollment_id"] == e["id"])
        for e in (old, new)
    }
    assert by_enrollment[old["id"]] == sorted(["welcome", *[f"day0{n}" for n in range(1, 6)]])
    assert by_enrollment[new["id"]] == ["day01", "welcome"]
    kinds = [c["kind"] for c in data["consents"]]
    assert kinds == ["signup", "confirm", "signup", "confirm", "confirm"]


def test_two_simultaneous_clicks_of_a_confirmation_link_start_one_enrollment(site: Site) -> None:
    """A double click (two POSTs at once) of a returning subscriber's link: one welcome, one
    new enrollment."""
    email = "twice@example.org"
    site.app.signups.double_opt_in = False
    site.signup(email)
    _unsubscribe(site, email)
    site.app.signups.double_opt_in = True
    site.clock.set(NOW + timedelta(hours=2))
    site.signup(email)
    link = _confirm_link(site, email, 1)
    answers: list[int] = []

    def click() -> None:
        with httpx.Client(base_url=site.url, timeout=10) as client:
            answers.append(client.post(link).status_code)

    clicks = [threading.Thread(target=click) for _ in range(4)]
    for thread in clicks:
        thread.start()
    for thread in clicks:
        thread.join()
    assert answers == [200] * 4
    tick(site.app, site.clock, NOW + timedelta(hours=3))
    assert _steps(site, email) == ["welcome", "confirmation", "welcome"]
    enrollments = subscriptions.export_person(site.app.db, email)["enrollments"]
    assert [e["status"] for e in enrollments] == ["cancelled", "active"]


def test_without_double_opt_in_a_returning_signup_restarts_from_the_welcome(site: Site) -> None:
    """DOUBLE_OPT_IN=false: the second signup after an unsubscribe sends the welcome again; a
    third one, while the new plan runs, changes nothing."""
    email = "direct@example.org"
    site.app.signups.double_opt_in = False
    site.signup(email)
    assert _steps(site, email) == ["welcome"]  # sent by the engine, woken by the signup
    tick(site.app, site.clock, NOW + _morning(1))
    site.clock.set(NOW + timedelta(days=1))
    _unsubscribe(site, email)
    site.clock.set(NOW + timedelta(days=2))
    site.signup(email)
    site.signup(email)
    tick(site.app, site.clock, NOW + timedelta(days=2, minutes=5))
    assert _steps(site, email) == ["welcome", "day01", "welcome"]
    assert len(subscriptions.export_person(site.app.db, email)["enrollments"]) == 2


def test_a_complaint_between_signup_and_confirmation_keeps_the_address_refused(
    site: Site, tmp_path: Path
) -> None:
    """A returning subscriber who complained about an old email before clicking the new
    confirmation link is not mailed: the click sees the suppression."""
    email = "angry@example.org"
    site.app.signups.double_opt_in = False
    site.signup(email)
    _unsubscribe(site, email)
    [welcome] = site.smtp.to(email)
    site.app.signups.double_opt_in = True
    site.signup(email)
    link = _confirm_link(site, email, 1)
    (tmp_path / "arf.eml").write_bytes(arf(original=welcome.data))  # about the old welcome
    report = bounces.ingest(
        site.app.db, [tmp_path / "arf.eml"], NOW, return_paths=return_paths(site.app.settings)
    )
    assert report.complained
    sent = len(site.mail_to(email))
    assert site.http.post(link).status_code in (200, 400)
    tick(site.app, site.clock, NOW + timedelta(minutes=5))
    assert len(site.mail_to(email)) == sent
    assert site.status_of(email) == "complained"


def test_import_never_resubscribes_and_subscribe_does_only_when_asked(site: Site) -> None:
    """`import` leaves an unsubscribed address alone (no fresh consent); `subscribe` restarts
    it only with resubscribe=True, recording an operator consent; a forgotten address stays
    refused."""
    db, plan = site.app.db, site.app.plan
    subscriptions.subscribe(
        db, plan, email="old@example.org", first_name=None, timezone=None, now=NOW
    )
    tick(site.app, site.clock, NOW)
    subscriptions.unsubscribe(db, email="old@example.org", now=NOW)
    report = subscriptions.import_rows(db, plan, [(2, {"email": "OLD@example.org"})], now=NOW)
    assert (report.added, report.already_known) == (0, 1)
    plain = subscriptions.subscribe(
        db, plan, email="old@example.org", first_name=None, timezone=None, now=NOW
    )
    assert (plain.created, plain.restarted, plain.status) == (False, False, "unsubscribed")
    tick(site.app, site.clock, NOW + timedelta(hours=1))
    assert _steps(site, "old@example.org") == ["welcome"]

    again = subscriptions.subscribe(
        db, plan, email="old@example.org", first_name=None, timezone=None, now=NOW, resubscribe=True
    )
    assert again.restarted
    twice = subscriptions.subscribe(
        db, plan, email="old@example.org", first_name=None, timezone=None, now=NOW, resubscribe=True
    )
    assert not twice.restarted  # already active: nothing restarts
    tick(site.app, site.clock, NOW + timedelta(hours=2))
    assert _steps(site, "old@example.org") == ["welcome", "welcome"]
    consents = subscriptions.export_person(db, "old@example.org")["consents"]
    assert [c["kind"] for c in consents] == ["operator"]
    subscriptions.forget_person(db, "old@example.org", NOW)
    with pytest.raises(subscriptions.Suppressed):
        subscriptions.subscribe(
            db,
            plan,
            email="old@example.org",
            first_name=None,
            timezone=None,
            now=NOW,
            resubscribe=True,
        )
