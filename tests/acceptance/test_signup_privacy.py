"""Signup as an attacker would try it, over real HTTP with a real SMTP server, on both
databases: probing who is subscribed (answers, timing), list bombing, and links that outlive
the person or the moment they were sent for."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from campaign.domain.addresses import email_hash
from campaign.people import signups, subscriptions
from campaign.storage import store
from tests.acceptance.conftest import NOW, Site, _serve
from tests.conftest import ROOT, EngineFactory
from tests.smtp_server import SMTPServer, free_port

SPAM_NAME = "WIN $5000 now: claim at https://evil.example/prize?x=1 <b>hurry</b>"


def _prepare_states(site: Site) -> dict[str, str]:
    """One address in each state a visitor could probe: the state's name to its address."""
    db, plan = site.app.db, site.app.plan
    for email in ("active@example.org", "gone@example.org", "bounced@example.org"):
        subscriptions.subscribe(db, plan, email=email, first_name=None, timezone=None, now=NOW)
    subscriptions.unsubscribe(db, email="gone@example.org", now=NOW)
    with db.transaction() as session:
        known = store.find_subscriber(session, "bounced@example.org")
        assert known is not None
        store.set_subscriber_status(session, known.id, "bounced", NOW)
        store.suppress(session, email_hash("bounced@example.org"), "bounced", NOW)
        store.suppress(session, email_hash("complained@example.org"), "complained", NOW)
    site.signup("pending@example.org")
    return {
        "pending": "pending@example.org",
        "active": "active@example.org",
        "unsubscribed": "gone@example.org",
        "bounced": "bounced@example.org",
        "suppressed": "complained@example.org",
    }


def _answers(url: str, states: dict[str, str], tag: str) -> list[tuple[int, str, str]]:
    """(status, form page, JSON body) for a new address and each known one."""
    emails = [f"new-{tag}@example.org", *states.values()]
    found = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for email in emails:
            form = http.post("/subscribe", data={"email": email, "first_name": "Eve"})
            api = http.post("/subscribe", json={"email": email, "first_name": "Eve"})
            assert form.status_code == api.status_code, email
            found.append((form.status_code, form.text, api.text))
    return found


@contextmanager
def _site(engine: EngineFactory, smtp_server: SMTPServer, **overrides: str) -> Iterator[Site]:
    """A served engine whose per-client limit does not get in the way of probing."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, clock = engine(NOW, PUBLIC_BASE_URL=url, SIGNUP_RATE_PER_MINUTE="10000", **overrides)
    serving = _serve(app, port)
    next(serving)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            yield Site(app, clock, url, http, smtp_server)
    finally:
        next(serving, None)


def test_every_state_gets_the_same_answer_with_the_relay_up_or_down(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """New, pending, active, unsubscribed, bounced or suppressed: the same status and body, in
    a form or JSON, whether the mail server answers or is down (no 503 that tells)."""
    with _site(engine, smtp_server) as up_site:
        states = _prepare_states(up_site)
        up = _answers(up_site.url, states, "up")
    with _site(engine, smtp_server, SMTP_PORT=str(free_port())) as down_site:  # nobody there
        down = _answers(down_site.url, states, "down")
        down_site.app.signup_mail.drain(NOW)  # the relay is down: the queue keeps them
    assert set(up + down) == {up[0]}
    assert up[0][0] == 200
    assert "Check your" in up[0][1]


def test_a_signup_takes_as_long_for_a_known_address_as_for_a_new_one(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """With a relay that takes 40 ms per command, the median answer time of each state is
    within a few milliseconds of a new address's (it was 4.5 ms against 130 ms)."""
    smtp_server.handler.command_delay = 0.040
    with _site(engine, smtp_server, ADMIN_LISTEN="off") as site:
        states = _prepare_states(site)
        site.app.signup_mail.start()  # the real sender, sending while the answers are timed
        try:
            timings = measure_signups(site.http, states, rounds=40)
        finally:
            site.app.signup_mail.stop()
    medians = {state: statistics.median(times) for state, times in timings.items()}
    gap = max(medians.values()) - min(medians.values())
    assert gap < 0.010, {state: f"{m * 1000:.1f} ms" for state, m in medians.items()}
    assert smtp_server.to("new-0@example.org")  # the confirmations did go out, off the path


def measure_signups(
    http: httpx.Client, states: dict[str, str], rounds: int
) -> dict[str, list[float]]:
    """Seconds per signup answer for each state (and "new": a fresh address every time),
    taken in turns so that the machine's load falls on every state alike."""
    timings: dict[str, list[float]] = {"new": [], **{state: [] for state in states}}
    for n in range(rounds):
        for state in timings:
            email = f"new-{n}@example.org" if state == "new" else states[state]
            started = time.perf_counter()
            answer = http.post("/subscribe", data={"email": email})
            timings[state].append(time.perf_counter() - started)
            assert answer.status_code == 200
    return timings


def test_twenty_signups_of_one_address_send_one_confirmation(site: Site) -> None:
    """List bombing: repeated signups (from any client) get the usual answer and send nothing
    more than one email per 10 minutes and three a day."""
    for n in range(20):
        forwarded = {"X-Forwarded-For": f"203.0.113.{n}"}  # a trusted proxy: other clients
        email = "Victim@Example.ORG" if n % 2 else "victim@example.org"  # one address
        answer = site.http.post("/subscribe", data={"email": email}, headers=forwarded)
        assert answer.status_code == 200
    assert len(site.mail_to("victim@example.org")) == 1
    for _ in range(4):  # 11 minutes apart: the fourth within the day is refused
        site.clock.advance(timedelta(minutes=11))
        site.signup("victim@example.org")
    assert len(site.mail_to("victim@example.org")) == 3
    site.clock.advance(timedelta(days=1))
    site.signup("victim@example.org")
    assert len(site.mail_to("victim@example.org")) == 4


def test_the_limit_holds_across_instances_on_one_database(
    site: Site, engine: EngineFactory
) -> None:
    """A second engine on the same database counts the same confirmations: still one email."""
    other, _ = engine(NOW)
    site.signup("victim@example.org")
    result = other.signups.signup(
        email="victim@example.org",
        first_name=None,
        timezone=None,
        visitor=signups.Visitor(ip="198.51.100.1"),
        now=NOW + timedelta(minutes=5),
    )
    assert result.outcome == "confirmation-limited"
    other.signup_mail.drain(NOW + timedelta(minutes=5))
    assert len(site.mail_to("victim@example.org")) == 1


def _raw_to(site: Site, email: str) -> list[bytes]:
    site.app.signup_mail.drain(site.clock.now())
    return [r.data for r in site.smtp.to(email)]


def _decoded(raw: bytes) -> str:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    parts = [str(value) for value in message.values()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


def test_a_name_never_carries_spam_into_the_confirmation_email(site: Site) -> None:
    """Text and a URL typed as the first name appear nowhere in the confirmation email (raw or
    decoded, headers or body); the name is used only once the person confirmed."""
    site.signup("stranger@example.org", first_name=SPAM_NAME)
    [raw] = _raw_to(site, "stranger@example.org")
    for text in (raw.decode("ascii", "replace"), _decoded(raw)):
        for piece in ("evil.example", "WIN", "5000", "hurry", "prize"):
            assert piece not in text
    [confirmation] = site.mail_to("stranger@example.org")
    assert str(confirmation["To"]) == "stranger@example.org"


def test_an_erased_persons_old_links_do_nothing_to_the_next_subscriber(site: Site) -> None:
    """Erase a person, then sign someone up: the old unsubscribe and confirm links of the
    erased person never touch the newcomer (SQLite no longer reuses the ids)."""
    site.signup("first@example.org")
    [confirmation] = site.mail_to("first@example.org")
    old_confirm = site.link_in(confirmation, "confirm")
    assert site.http.post(old_confirm).status_code == 200
    welcome = site.mail_to("first@example.org")[1]
    old_unsubscribe = site.link_in(welcome, "unsubscribe")
    subscriptions.forget_person(site.app.db, "first@example.org", NOW)

    site.signup("second@example.org")
    assert site.http.post(old_confirm).status_code == 400
    assert site.status_of("second@example.org") == "pending"
    [second] = site.mail_to("second@example.org")
    assert site.http.post(site.link_in(second, "confirm")).status_code == 200
    site.http.post(old_unsubscribe)
    assert site.status_of("second@example.org") == "active"


def test_a_confirm_link_does_nothing_after_the_person_unsubscribed(site: Site) -> None:
    """Confirm, unsubscribe, then use the old confirmation link: still unsubscribed; a new
    signup's link works, the old one never again."""
    site.signup("leaver@example.org")
    [confirmation] = site.mail_to("leaver@example.org")
    old_link = site.link_in(confirmation, "confirm")
    site.http.post(old_link)
    welcome = site.mail_to("leaver@example.org")[1]
    site.http.post(site.link_in(welcome, "unsubscribe"))
    assert site.status_of("leaver@example.org") == "unsubscribed"
    refused = site.http.post(old_link)
    assert refused.status_code == 400
    assert "no longer valid" in refused.text
    assert site.http.get(old_link).status_code == 400  # no button that cannot work
    assert site.status_of("leaver@example.org") == "unsubscribed"

    site.clock.advance(timedelta(minutes=11))
    site.signup("leaver@example.org")
    new_link = site.link_in(site.mail_to("leaver@example.org")[-1], "confirm")
    assert site.http.post(old_link).status_code == 400
    assert site.status_of("leaver@example.org") == "unsubscribed"
    assert site.http.post(new_link).status_code == 200
    assert site.status_of("leaver@example.org") == "active"


def test_an_unconfirmed_signup_that_unsubscribed_cannot_be_confirmed_later(site: Site) -> None:
    """Someone else signed you up; you pressed unsubscribe in that email: its confirm link is
    dead, so whoever signed you up cannot confirm you by it afterwards."""
    site.signup("target@example.org")
    [confirmation] = site.mail_to("target@example.org")
    site.http.post(site.link_in(confirmation, "unsubscribe"))
    assert site.http.post(site.link_in(confirmation, "confirm")).status_code == 400
    assert site.status_of("target@example.org") == "unsubscribed"


def test_of_two_pending_links_the_first_used_wins_and_the_other_dies(site: Site) -> None:
    """Signup A, then signup B of the same pending address: either link confirms (both went to
    the same inbox); once one did, the other is inert."""
    site.signup("twice@example.org")
    site.clock.advance(timedelta(minutes=11))
    site.signup("twice@example.org")
    link_a, link_b = (site.link_in(m, "confirm") for m in site.mail_to("twice@example.org"))
    assert link_a != link_b
    assert site.http.post(link_b).status_code == 200
    assert site.status_of("twice@example.org") == "active"
    assert site.http.post(link_a).status_code == 400
    assert site.http.post(link_b).status_code == 200  # the same link again restarts nothing
    assert len(site.mail_to("twice@example.org")) == 3  # two confirmations, one welcome


def test_a_confirmation_link_from_before_the_upgrade_is_refused(site: Site) -> None:
    """Links signed as "confirm" named a subscriber id: they no longer verify at all."""
    from campaign.domain import tokens

    site.signup("old@example.org")
    with site.app.db.transaction() as session:
        known = store.find_subscriber(session, "old@example.org")
    assert known is not None
    secret = site.app.settings.secret_key.get_secret_value()
    legacy = tokens.sign(secret, "confirm", known.id, NOW)
    assert site.http.post(f"/confirm/{legacy}").status_code == 400
    assert site.status_of("old@example.org") == "pending"


def test_a_refused_confirmation_is_retried_and_sent_once(site: Site) -> None:
    """A relay that defers (451) the confirmation: it goes later, once, with no new signup."""
    site.smtp.handler.data_replies.append("451 4.3.0 try again later")
    site.signup("later@example.org")
    assert site.mail_to("later@example.org") == []
    site.clock.advance(timedelta(minutes=2))
    assert len(site.mail_to("later@example.org")) == 1
    site.clock.advance(timedelta(hours=1))
    assert len(site.mail_to("later@example.org")) == 1


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["run_scheduler.py", "--http"], id="run_scheduler-http"),
        pytest.param(["-m", "campaign", "serve", "--host", "127.0.0.1", "--port"], id="serve"),
    ],
)
def test_the_confirmation_leaves_within_seconds_whatever_the_tick(
    command: list[str], env: dict[str, str], smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """As a real process with TICK_SECONDS=3600, a signup's confirmation reaches the relay
    within seconds; /metrics answers 404 on the public port and 200 on ADMIN_LISTEN."""
    port, admin_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    where = f"127.0.0.1:{port}" if command[0] == "run_scheduler.py" else str(port)
    settings = {
        **os.environ,
        **env,
        "PYTHONPATH": str(ROOT),
        "TICK_SECONDS": "3600",
        "PUBLIC_BASE_URL": url,
        "ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
    }
    with (tmp_path / "service.log").open("wb") as log:
        service = subprocess.Popen(
            [sys.executable, *command, where],
            cwd=ROOT,
            env=settings,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            _wait_for(lambda: _answers_at(http, "/subscribe"))
            signed_up = time.monotonic()
            assert http.post("/subscribe", data={"email": "quick@example.org"}).status_code == 200
            _wait_for(lambda: bool(smtp_server.to("quick@example.org")))
            took = time.monotonic() - signed_up
            assert http.get("/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{admin_port}/metrics").status_code == 200
    finally:
        service.terminate()
        service.wait(timeout=15)
    assert took < 5, (took, (tmp_path / "service.log").read_text())
    [message] = smtp_server.to("quick@example.org")
    assert "/confirm/" in message.message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]  # a text part


def _answers_at(http: httpx.Client, path: str) -> bool:
    try:
        http.get(path)
    except httpx.TransportError:
        return False
    return True


def _wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    """Poll a real process's progress with a bound (not a sleep on a schedule)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
