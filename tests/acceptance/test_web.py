"""The public HTTP side over real HTTP: uvicorn on loopback, httpx, a real SMTP server, both
databases."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from campaign.engine import make_service, return_paths
from campaign.insights import reports
from campaign.interfaces.admin import start_side_services
from campaign.people import bounces, subscriptions
from tests.acceptance.conftest import NOW, Site, _serve
from tests.bounce_reports import dsn
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer, free_port
from tests.tools import ROOT


def test_signup_then_confirm_sends_the_welcome_email_at_once(site: Site) -> None:
    """Signup mails a confirmation link; confirming sends the welcome and ebook with no tick."""
    page = site.signup("maria@example.org", first_name="Maria", timezone="Europe/Berlin")
    assert page.status_code == 200
    assert "Check your email" in page.text
    assert "newsletter@example.org" in page.text  # the real MAIL_FROM, to add to contacts
    [confirmation] = site.mail_to("maria@example.org")
    link = site.link_in(confirmation, "confirm")
    shown = site.http.get(link)
    assert shown.status_code == 200
    assert "<form" in shown.text
    assert site.status_of("maria@example.org") == "pending"  # a GET changes nothing
    done = site.http.post(link)
    assert done.status_code == 200
    assert site.status_of("maria@example.org") == "active"
    welcome = site.mail_to("maria@example.org")[1]
    assert str(welcome["X-Campaign-Step"]).endswith("/welcome")
    assert [a.get_filename() for a in welcome.iter_attachments()] == [
        "concepts-of-self-healing.pdf"
    ]
    again = site.http.post(link)  # a second click restarts nothing
    assert again.status_code == 200
    assert len(site.mail_to("maria@example.org")) == 2


def test_a_known_address_gets_the_same_answer_as_a_new_one(site: Site) -> None:
    """Whether an address is new, pending, active or unsubscribed, the answer is identical."""
    subscriptions.subscribe(
        site.app.db,
        site.app.plan,
        email="active@example.org",
        first_name=None,
        timezone=None,
        now=NOW,
    )
    subscriptions.subscribe(
        site.app.db,
        site.app.plan,
        email="gone@example.org",
        first_name=None,
        timezone=None,
        now=NOW,
    )
    subscriptions.unsubscribe(site.app.db, email="gone@example.org", now=NOW)
    answers = [
        site.signup(email)
        for email in (
            "new@example.org",
            "new@example.org",
            "active@example.org",
            "gone@example.org",
        )
    ]
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    json_answers = [
        site.http.post("/subscribe", json={"email": e}).json()
        for e in ("other@example.org", "active@example.org")
    ]
    assert json_answers[0] == json_answers[1]


def test_a_resignup_never_restarts_or_duplicates_a_running_plan(site: Site) -> None:
    """An active subscriber who signs up again gets no new email and keeps their place."""
    site.app.signups.double_opt_in = False
    site.signup("sam@example.org")
    assert len(site.mail_to("sam@example.org")) == 1  # the welcome, sent by the engine at once
    tick(site.app, site.clock, NOW + timedelta(days=1, hours=-2))  # day 1 at 07:00 UTC
    before = len(site.mail_to("sam@example.org"))
    assert before == 2
    site.signup("sam@example.org")
    tick(site.app, site.clock, NOW + timedelta(days=1, hours=-1))
    assert len(site.mail_to("sam@example.org")) == before


def test_without_double_opt_in_the_welcome_goes_straight_after_signup(site: Site) -> None:
    """With DOUBLE_OPT_IN=false the first email is the welcome, sent by the engine at once."""
    site.app.signups.double_opt_in = False
    site.signup("direct@example.org")
    [welcome] = site.mail_to("direct@example.org")
    assert str(welcome["X-Campaign-Step"]).endswith("/welcome")


def test_a_bad_address_is_refused_next_to_the_field(site: Site) -> None:
    """A bad address gets its message beside the field (HTML) or a 422 naming it (JSON)."""
    form = site.signup("maria@@example.org")
    assert form.status_code == 422
    assert 'id="email-error"' in form.text
    assert 'value="maria@@example.org"' in form.text
    api = site.http.post("/subscribe", json={"email": "not-an-address"})
    assert api.status_code == 422
    assert api.json()["field"] == "email"
    assert site.smtp.received == []


def test_one_click_unsubscribe_stops_the_plan_at_once(site: Site) -> None:
    """RFC 8058: a POST of List-Unsubscribe=One-Click unsubscribes; no later email goes out."""
    site.app.signups.double_opt_in = False
    site.signup("leaver@example.org")
    [welcome] = site.mail_to("leaver@example.org")
    url = str(welcome["List-Unsubscribe"]).strip("<>")
    assert url.startswith(site.url + "/unsubscribe/")
    response = httpx.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert site.status_of("leaver@example.org") == "unsubscribed"
    for hours in range(0, 72, 6):
        tick(site.app, site.clock, NOW + timedelta(hours=hours))
    assert len(site.mail_to("leaver@example.org")) == 1


def test_a_get_of_the_unsubscribe_link_only_shows_a_button(site: Site) -> None:
    """Link scanners fetch links: a GET shows a confirm button and unsubscribes nobody."""
    site.app.signups.double_opt_in = False
    site.signup("kept@example.org")
    [welcome] = site.mail_to("kept@example.org")
    path = site.link_in(welcome, "unsubscribe")
    page = site.http.get(path)
    assert page.status_code == 200
    assert "Unsubscribe me" in page.text
    assert site.status_of("kept@example.org") == "active"
    site.http.post(path)
    assert site.status_of("kept@example.org") == "unsubscribed"


def test_forged_altered_or_expired_links_change_nothing(site: Site) -> None:
    """A forged, altered or expired token gets a 400 page and leaves the subscriber as is."""
    site.signup("maria@example.org")
    [confirmation] = site.mail_to("maria@example.org")
    link = site.link_in(confirmation, "confirm")
    altered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    for bad in (altered, "/confirm/forged.token", "/unsubscribe/" + link.split("/")[-1]):
        response = site.http.post(bad)
        assert response.status_code == 400, bad
        assert "This link does not work" in response.text
    site.clock.advance(timedelta(days=8))
    expired = site.http.post(link)
    assert expired.status_code == 400
    assert "expired" in expired.text
    assert site.status_of("maria@example.org") == "pending"


def test_the_signup_rate_limit_answers_429_with_retry_after(site: Site) -> None:
    """The 11th signup in a minute from one address is refused with 429 and Retry-After."""
    codes = [site.signup(f"p{n}@example.org").status_code for n in range(11)]
    assert codes == [200] * 10 + [429]
    refused = site.http.post("/subscribe", json={"email": "p9@example.org"})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    site.clock.advance(timedelta(seconds=61))
    assert site.signup("later@example.org").status_code == 200


def test_a_filled_honeypot_is_accepted_silently_and_dropped(site: Site) -> None:
    """A bot filling the hidden field sees success, but nobody is stored or mailed."""
    response = site.signup("bot@example.org", website="http://spam.example")
    assert response.status_code == 200
    assert "Check your email" in response.text
    assert site.status_of("bot@example.org") is None
    assert site.smtp.received == []


@pytest.mark.parametrize("trap", [True, 1, 0, "x", " "], ids=repr)
def test_a_json_bot_that_fills_the_honeypot_in_any_way_is_dropped(site: Site, trap: object) -> None:
    """Over JSON too, whatever fills the hidden field (true, a number, text) drops the signup
    with the same 200 a person gets."""
    response = site.http.post("/subscribe", json={"email": "jsbot@example.org", "website": trap})
    assert response.status_code == 200
    assert site.status_of("jsbot@example.org") is None
    assert site.smtp.received == []


def test_a_json_client_that_leaves_the_honeypot_empty_signs_up(site: Site) -> None:
    """An empty, false or null honeypot is a person's: they are signed up."""
    for n, empty in enumerate(["", False, None]):
        response = site.http.post(
            "/subscribe", json={"email": f"person{n}@example.org", "website": empty}
        )
        assert response.status_code == 200, empty
        assert site.status_of(f"person{n}@example.org") == "pending", empty


def test_an_oversized_body_is_refused(site: Site) -> None:
    """A request body over the small limit is refused with 413 before it is parsed."""
    response = site.signup("big@example.org", first_name="x" * 20_000)
    assert response.status_code == 413
    assert site.status_of("big@example.org") is None


def test_pending_signups_never_confirmed_are_purged(site: Site) -> None:
    """After PENDING_PURGE_DAYS an unconfirmed signup is deleted by the scheduler."""
    site.signup("ghost@example.org")
    from campaign.engine import make_service

    service = make_service(site.app)
    service.run_pass(NOW + timedelta(days=13))
    assert site.status_of("ghost@example.org") == "pending"
    service.run_pass(NOW + timedelta(days=15))
    assert site.status_of("ghost@example.org") is None


def test_the_ebook_is_served_under_the_public_url(site: Site) -> None:
    """The welcome email's download link answers with the PDF itself."""
    response = site.http.get("/ebook/concepts-of-self-healing.pdf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content == (ROOT / "assets" / "concepts-of-self-healing.pdf").read_bytes()
    assert site.http.get("/ebook/../../etc/passwd").status_code == 404


def test_healthz_reports_the_last_pass_and_metrics_count_signups(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """/healthz is 503 until a pass has run, then 200; /metrics, on the operators' listener
    (ADMIN_LISTEN) and not the public one, counts signups and backlog."""
    port, admin_port = free_port(), free_port()
    site_url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    app, _ = engine(NOW, PUBLIC_BASE_URL=site_url, ADMIN_LISTEN=f"127.0.0.1:{admin_port}")
    serving = _serve(app, port)
    next(serving)
    side = start_side_services(app)
    try:
        assert httpx.get(site_url + "/healthz").status_code == 503
        make_service(app).run_pass(NOW)
        health = httpx.get(site_url + "/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        httpx.post(site_url + "/subscribe", data={"email": "m@example.org"})
        assert httpx.get(site_url + "/metrics").status_code == 404
        metrics = _get_when_up(admin_url + "/metrics").text
        detailed = _get_when_up(admin_url + "/healthz")
    finally:
        side.close()
        next(serving, None)
    assert 'campaign_signups_total{outcome="confirmation-queued"} 1.0' in metrics
    assert "campaign_backlog_due 0.0" in metrics
    assert detailed.status_code == 200
    assert detailed.json()["detail"] == "ok"


def test_admin_listen_off_serves_no_metrics_anywhere(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """ADMIN_LISTEN=off starts no operators' listener; the public /metrics stays 404."""
    port = free_port()
    app, _ = engine(NOW, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", ADMIN_LISTEN="off")
    serving = _serve(app, port)
    next(serving)
    side = start_side_services(app)
    try:
        assert side.server is None
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
    finally:
        side.close()
        next(serving, None)


def test_a_busy_admin_port_is_reported_and_the_public_pages_still_serve(
    engine: EngineFactory, smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    """ADMIN_LISTEN on a port in use: one error line names it; the public pages still answer."""
    port, admin_port = free_port(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin_port))
        taken.listen()
        app, _ = engine(
            NOW, PUBLIC_BASE_URL=f"http://127.0.0.1:{port}", ADMIN_LISTEN=f"127.0.0.1:{admin_port}"
        )
        serving = _serve(app, port)
        next(serving)
        side = start_side_services(app)
        try:
            assert httpx.get(f"http://127.0.0.1:{port}/subscribe").status_code == 200
        finally:
            side.close()
            next(serving, None)
    assert f"could not start on ADMIN_LISTEN=127.0.0.1:{admin_port}" in caplog.text


def _get_when_up(url: str) -> httpx.Response:
    """GET `url`, once its listener (started in a thread just now) has bound its socket."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return httpx.get(url)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # waiting for a socket to be bound, not for a schedule


def test_signup_and_confirmation_are_recorded_as_consent(site: Site) -> None:
    """Each consent keeps time, IP, user agent and source page, and `export` shows them."""
    site.http.post(
        "/subscribe",
        data={"email": "c@example.org", "source": "https://health.example/back-pain"},
        headers={"User-Agent": "TestBrowser/1.0"},
    )
    [confirmation] = site.mail_to("c@example.org")
    site.http.post(site.link_in(confirmation, "confirm"), headers={"User-Agent": "TestBrowser/1.0"})
    consents = subscriptions.export_person(site.app.db, "c@example.org")["consents"]
    assert [c["kind"] for c in consents] == ["signup", "confirm"]
    assert consents[0]["ip"] == "127.0.0.1"
    assert consents[0]["user_agent"] == "TestBrowser/1.0"
    assert consents[0]["source_page"] == "https://health.example/back-pain"
    assert consents[0]["at"] == NOW.isoformat()


def test_healthz_and_metrics_say_when_sending_is_paused(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """An unreachable mail server pauses sending: /healthz is 503 and says why; a gauge is 1."""
    port, admin_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    app, _ = engine(
        NOW,
        PUBLIC_BASE_URL=url,
        SMTP_PORT=str(free_port()),  # nobody there
        ADMIN_LISTEN=f"127.0.0.1:{admin_port}",
    )
    subscriptions.subscribe(
        app.db, app.plan, email="wait@example.org", first_name=None, timezone=None, now=NOW
    )
    make_service(app).run_pass(NOW)
    serving = _serve(app, port)
    next(serving)
    side = start_side_services(app)
    try:
        health = httpx.get(url + "/healthz")
        metrics = _get_when_up(f"http://127.0.0.1:{admin_port}/metrics").text
    finally:
        side.close()
        next(serving, None)
    assert health.status_code == 503
    assert health.json()["reason"] == "sending-paused"
    assert "cannot connect" in reports.health(app.db, NOW, tick_seconds=30).detail
    assert "cannot connect" not in health.text  # the detail is for operators only
    assert "campaign_sending_paused 1.0" in metrics


def test_a_bounced_address_is_never_mailed_again_until_an_operator_clears_it(
    site: Site, tmp_path: Path
) -> None:
    """After a DSN bounce of the confirmation is ingested, a new signup gets the usual page but
    no email."""
    site.signup("gone@example.org")
    assert len(site.mail_to("gone@example.org")) == 1  # the engine sends what was queued
    [confirmation] = site.smtp.to("gone@example.org")
    maildir = tmp_path / "bounces" / "new"
    maildir.mkdir(parents=True)
    report_bytes = dsn(delivered_to=confirmation.sender, final_recipient="gone@example.org")
    (maildir / "1.eml").write_bytes(report_bytes)
    report = bounces.ingest(
        site.app.db, [tmp_path / "bounces"], NOW, return_paths=return_paths(site.app.settings)
    )
    assert len(report.bounced) == 1
    answer = site.signup("gone@example.org")
    assert answer.status_code == 200
    assert "Check your email" in answer.text
    assert len(site.mail_to("gone@example.org")) == 1
    assert subscriptions.clear_suppression(site.app.db, email="gone@example.org", now=NOW)
    site.clock.advance(timedelta(minutes=11))  # past the one-confirmation-per-10-minutes cap
    site.signup("gone@example.org")
    assert len(site.mail_to("gone@example.org")) == 2  # a confirmation, at last


def test_a_refused_plan_edit_shows_in_healthz_and_a_gauge_until_fixed(
    engine: EngineFactory, smtp_server: SMTPServer, plan_file: Path
) -> None:
    """A broken save, then a changed plan id: /healthz says degraded with reason
    plan-edit-refused and the file:line (still 200: the last good plan sends on), the gauge
    is 1 on every pass until a good save, and the subscriber's month goes on meanwhile."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, clock = engine(NOW, PUBLIC_BASE_URL=url, PLAN_PATH=str(plan_file))
    service = make_service(app)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name=None, timezone="UTC", now=NOW
    )
    serving = _serve(app, port)
    next(serving)

    def health_at(instant: datetime) -> tuple[int, dict[str, object], str]:
        clock.set(instant)
        service.run_pass(instant)
        health = httpx.get(url + "/healthz")
        gauge = next(
            line
            for line in app.metrics.render().decode().splitlines()  # as ADMIN_LISTEN shows
            if line.startswith("campaign_plan_edit_refused ")
        )
        return health.status_code, {**health.json(), "detail": app.health().detail}, gauge

    try:
        code, body, gauge = health_at(NOW)
        assert (code, body["status"], body["reason"], gauge) == (
            200,
            "ok",
            "ok",
            "campaign_plan_edit_refused 0.0",
        )
        original = plan_file.read_text()
        broken = original.replace("template: day01.html", "template: day01-missing.html")
        plan_file.write_text(broken)
        line = next(n for n, t in enumerate(broken.splitlines(), 1) if "day01-missing" in t)
        for hours in (1, 2):  # refused at the save, and still shown at the next pass
            code, body, gauge = health_at(NOW + timedelta(hours=hours))
            assert code == 200
            assert body["status"] == "degraded"
            assert body["reason"] == "plan-edit-refused"
            assert f"thirty_day.yaml:{line}: steps[1].template" in str(body["detail"])
            assert gauge == "campaign_plan_edit_refused 1.0"
        plan_file.write_text(original)
        code, body, gauge = health_at(NOW + timedelta(hours=3))
        assert (code, body["status"], body["reason"], gauge) == (
            200,
            "ok",
            "ok",
            "campaign_plan_edit_refused 0.0",
        )

        plan_file.write_text(original.replace("id: thirty-day-self-healing", "id: renamed", 1))
        code, body, gauge = health_at(NOW + timedelta(hours=22))  # day 1, 07:00 UTC
        detail = str(body["detail"])
        assert "plan id changed" in detail
        assert "campaign plan rename thirty-day-self-healing renamed" in detail
        assert gauge == "campaign_plan_edit_refused 1.0"
    finally:
        next(serving, None)
    steps = [str(r.message["X-Campaign-Step"]) for r in smtp_server.to("ann@example.org")]
    assert steps == ["thirty-day-self-healing/welcome", "thirty-day-self-healing/day01"]
