"""The operators' console through its real ASGI application, on both databases: accounts,
sign-in and its throttle, session expiry on an injected clock, CSRF refusals, the audit log,
suppressions, the Today page and the proxy's prefix."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from campaign.clock import FixedClock
from campaign.engine import App
from campaign.errors import BadInput
from campaign.insights.today import Today, TodayNumbers
from campaign.interfaces.admin import create_admin_app
from campaign.interfaces.console.kit import Console
from campaign.people import operators, subscriptions
from campaign.storage import store
from tests.conftest import EngineFactory
from tests.helpers import run_campaign, tick

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ANN, PASSWORD = "ann@example.org", "correct horse battery staple"
LOOPBACK, FAR = "127.0.0.1", "203.0.113.7"
#: HTTP behaviour whose storage the other tests cover on both databases: run on SQLite only.
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class Browser:
    """A client of the operators' application that keeps its cookies, from one address."""

    app: App
    clock: FixedClock
    http: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    admin: Starlette

    @property
    def console(self) -> Console:
        """The console application's state (its kept counts)."""
        mount = next(r for r in self.admin.routes if isinstance(r, Mount) and r.path == "/console")
        found: Console = mount.app.state.console
        return found

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.get(path, **options))

    def post(self, path: str, data: dict[str, str], **options: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.post(path, data=data, **options))

    def csrf(self, path: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.get(path).text)
        assert found, f"no form with a CSRF token on {path}"
        return found.group(1)

    def sign_in(self, email: str = ANN, password: str = PASSWORD) -> httpx.Response:
        token = self.csrf("/console/login")
        return self.post(
            "/console/login", {"email": email, "password": password, "csrf_token": token}
        )


@pytest.fixture
def console(engine: EngineFactory) -> Iterator[Any]:
    """Make browsers of a console on a fixed clock: `console(client=..., **settings)`."""
    loops: list[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = []

    def make(
        client: str = LOOPBACK, app_clock: tuple[App, FixedClock] | None = None, **settings: str
    ) -> Browser:
        app, clock = app_clock or engine(START, **settings)
        admin = create_admin_app(app)
        transport = httpx.ASGITransport(app=admin, client=(client, 40000))
        # Off loopback the cookies are Secure: such a browser must come over https.
        scheme = "http" if client == LOOPBACK else "https"
        http = httpx.AsyncClient(transport=transport, base_url=f"{scheme}://admin.internal")
        loop = asyncio.new_event_loop()
        loops.append((loop, http))
        return Browser(app, clock, http, loop, admin)

    yield make
    for loop, http in loops:
        loop.run_until_complete(http.aclose())
        loop.close()


def _with_account(browser: Browser) -> Browser:
    operators.add_operator(browser.app.db, ANN, PASSWORD, START)
    return browser


def _audit(app: App) -> list[tuple[str, str, str]]:
    page = operators.audit_log(app.db, limit=100)
    return [(e.actor, e.action, e.detail) for e in reversed(page.entries)]


@ONE_DATABASE
def test_signing_in_sets_a_locked_down_session_cookie_kept_only_as_a_hash(
    console: Any,
) -> None:
    """The cookie is HttpOnly, SameSite=Lax, scoped to /console, Secure off loopback; the
    database keeps only a hash of its value."""
    browser = _with_account(console(client=FAR))
    answer = browser.sign_in()
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "campaign_console=" in c)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" in cookie
    assert "Path=/console" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    with browser.app.db.read() as session:
        assert store.find_session(session, token) is None
        assert store.find_session(session, operators.session_key(token)) is not None
    # A Secure cookie is not sent back over http: from loopback (a tunnel) it is not Secure.
    local = console(client=LOOPBACK, app_clock=(browser.app, browser.clock))
    answer = local.sign_in()
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "campaign_console=" in c)
    assert "Secure" not in cookie
    assert local.get("/console/today").status_code == 200


@ONE_DATABASE
def test_the_console_sends_strangers_to_the_sign_in_page(console: Any) -> None:
    """Every page needs a session: without one the browser goes to /login, and comes back."""
    browser = _with_account(console())
    answer = browser.get("/console/suppressions?q=x")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=%2Fsuppressions%3Fq%3Dx"
    token = browser.csrf("/console/login")
    answer = browser.post(
        "/console/login",
        {"email": ANN, "password": PASSWORD, "csrf_token": token, "next": "/suppressions?q=x"},
    )
    assert answer.headers["location"] == "/console/suppressions?q=x"
    token = browser.csrf("/console/login")
    answer = browser.post(
        "/console/login",
        {"email": ANN, "password": PASSWORD, "csrf_token": token, "next": "//evil.example"},
    )
    assert answer.headers["location"] == "/console/"  # never another site


def test_wrong_passwords_throttle_the_account_for_fifteen_minutes(console: Any) -> None:
    """Past CONSOLE_LOGIN_ATTEMPTS failures even the right password is refused (429) until
    the window passes; an unknown account answers like a wrong password."""
    browser = _with_account(console(CONSOLE_LOGIN_ATTEMPTS="3"))
    assert browser.sign_in(email="nobody@example.org").status_code == 401
    for _ in range(3):
        refused = browser.sign_in(password="not the password at all")
        assert refused.status_code == 401
        assert "The address or the password is wrong." in refused.text
    throttled = browser.sign_in()
    assert throttled.status_code == 429
    assert "Too many failed sign-ins" in throttled.text
    assert throttled.headers["retry-after"] == "900"
    browser.clock.advance(timedelta(minutes=15, seconds=1))
    assert browser.sign_in().status_code == 303


def test_one_client_guessing_many_accounts_is_throttled_alone(console: Any) -> None:
    """Past CONSOLE_CLIENT_ATTEMPTS failures from one address, it is refused; others are not."""
    guesser = _with_account(console(client=FAR, CONSOLE_CLIENT_ATTEMPTS="2"))
    for n in range(2):
        assert guesser.sign_in(email=f"guess{n}@example.org").status_code == 401
    assert guesser.sign_in().status_code == 429
    other = console(client="198.51.100.4", app_clock=(guesser.app, guesser.clock))
    assert other.sign_in().status_code == 303


def test_sessions_end_when_idle_and_after_their_lifetime(console: Any) -> None:
    """Idle past CONSOLE_IDLE_MINUTES, or CONSOLE_SESSION_HOURS after sign-in, a session is
    gone: the browser is sent back to the login page."""
    browser = _with_account(console(CONSOLE_IDLE_MINUTES="30", CONSOLE_SESSION_HOURS="2"))
    browser.sign_in()
    browser.clock.advance(timedelta(minutes=29))
    assert browser.get("/console/audit").status_code == 200
    browser.clock.advance(timedelta(minutes=31))
    expired = browser.get("/console/audit")
    assert expired.status_code == 303
    assert expired.headers["location"].startswith("/console/login")
    browser.sign_in()
    for _ in range(4):  # active every 25 minutes: never idle, but past 2 hours in all
        browser.clock.advance(timedelta(minutes=25))
        assert browser.get("/console/audit").status_code == 200
    browser.clock.advance(timedelta(minutes=21))
    assert browser.get("/console/audit").status_code == 303


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(console: Any) -> None:
    """A signed-in browser's POST without the session's token, or with another, is a 403 and
    neither suppresses nor audits anything."""
    browser = _with_account(console())
    browser.sign_in()
    before = _audit(browser.app)
    for token in ({}, {"csrf_token": "0" * 64}):
        answer = browser.post("/console/suppressions", {"email": "x@example.org", **token})
        assert answer.status_code == 403
    assert operators.audit_log(browser.app.db).entries[0].action == "sign-in"
    assert _audit(browser.app) == before
    with browser.app.db.read() as session:
        assert (
            store.list_suppressions(session, search="", email_hash=None, offset=0, limit=5)[1] == 0
        )
    login = browser.post("/console/login", {"email": ANN, "password": PASSWORD})
    assert login.status_code == 403  # the login form has its token too
    token = browser.csrf("/console/suppressions")
    multipart = browser.loop.run_until_complete(
        browser.http.post(
            "/console/suppressions",
            data={"email": "y@example.org", "csrf_token": token},
            files={"attachment": ("list.csv", b"email\ny@example.org\n", "text/csv")},
        )
    )
    assert multipart.status_code == 303  # a file upload's form carries its token the same way


def test_suppressions_are_added_searched_and_cleared_and_each_change_is_audited(
    console: Any,
) -> None:
    """Adding one unsubscribes its subscriber and keeps reason, source and note; search finds
    it by part of the address; clearing lifts it; the audit log names who did each."""
    browser = _with_account(console())
    app = browser.app
    subscriptions.subscribe(
        app.db, app.plan, email="rex@example.org", first_name="Rex", timezone="UTC", now=START
    )
    browser.sign_in()
    token = browser.csrf("/console/suppressions")
    added = browser.post(
        "/console/suppressions",
        {"email": " rex@Example.ORG ", "note": "asked by phone <b>", "csrf_token": token},
    )
    assert added.status_code == 303
    shown = browser.get(added.headers["location"]).text
    assert "Suppressed." in shown
    assert "rex@example.org" in shown
    assert "manual" in shown
    assert "console" in shown
    assert "asked by phone &lt;b&gt;" in shown  # autoescaped
    with app.db.read() as session:
        known = store.find_subscriber(session, "rex@example.org")
    assert known is not None
    assert known.status == "unsubscribed"
    again = browser.post("/console/suppressions", {"email": "rex@example.org", "csrf_token": token})
    assert again.status_code == 400
    assert "suppressed already" in again.text
    assert "rex@example.org" not in browser.get("/console/suppressions?q=nobody").text
    found = browser.get("/console/suppressions?q=REX@").text
    key = re.search(r'name="key" value="([0-9a-f]{64})"', found)
    assert key
    cleared = browser.post(
        "/console/suppressions/clear", {"key": key.group(1), "q": "rex@", "csrf_token": token}
    )
    assert cleared.status_code == 303
    assert "No suppressions match" in browser.get(cleared.headers["location"]).text
    changes = [entry for entry in _audit(app) if entry[1].startswith("suppression")]
    assert changes == [
        (ANN, "suppression.add", "rex@example.org: asked by phone <b>"),
        (ANN, "suppression.clear", "rex@example.org (manual)"),
    ]
    audit_page = browser.get("/console/audit").text
    assert "suppression.clear" in audit_page
    assert "asked by phone &lt;b&gt;" in audit_page


def test_today_shows_what_was_sent_what_is_due_and_why_sending_is_paused(
    console: Any,
) -> None:
    """The Today page counts the welcomes sent this hour, their latency, and the paused
    scheduler's reason."""
    browser = _with_account(console())
    app, clock = browser.app, browser.clock
    for name in ("ada", "bob", "cy"):
        subscriptions.subscribe(
            app.db,
            app.plan,
            email=f"{name}@example.org",
            first_name=name,
            timezone="UTC",
            now=START,
        )
    tick(app, clock, START + timedelta(minutes=2))
    with app.db.transaction() as session:
        store.beat(session, "host:1:abc", START, clock.now(), 0.4, "the mail server refused: 421")
    browser.sign_in()
    page = browser.get("/console/today").text
    sent = re.search(r'<div class="figure">(\d+)</div><small>sent in the last 24 h', page)
    assert sent
    assert sent.group(1) == "3"
    assert "2026-12-01 09:00: 3 sent" in page  # the chart's bar for this hour
    assert "Sending is paused" in page
    assert "the mail server refused: 421" in page
    assert "120.0 s" in page or "2.0 min" in page  # welcome latency p50


class HeldNumbers(TodayNumbers):
    """Today's numbers counted only once the test lets the count go (a count that takes long
    at a million subscribers, without waiting for the clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.go = threading.Event(), threading.Event()
        self.counts = 0

    def get(
        self, key: Hashable, now: datetime, count: Callable[[], Today]
    ) -> tuple[Today | None, datetime | None]:
        def held() -> Today:
            self.counts += 1
            self.started.set()
            assert self.go.wait(30), "the test never let the count go"
            return count()

        return super().get(key, now, held)


@ONE_DATABASE
def test_today_answers_while_its_numbers_are_being_counted(console: Any) -> None:
    """A count that has not finished does not hold the page: Today says the numbers are being
    counted and still shows that sending is paused and why; once the count is done its
    numbers show, with when they were counted, and are not counted again within the minute."""
    browser = _with_account(console())
    app, clock = browser.app, browser.clock
    subscriptions.subscribe(
        app.db, app.plan, email="ada@example.org", first_name="Ada", timezone="UTC", now=START
    )
    tick(app, clock, START + timedelta(minutes=2))
    with app.db.transaction() as session:
        store.beat(session, "host:1:abc", START, clock.now(), 0.4, "the mail server refused: 421")
    held = browser.console.kept["today"] = HeldNumbers()
    browser.sign_in()

    page = browser.get("/console/today").text
    assert held.started.is_set()  # the count began; it is held until `go` below
    assert "The numbers are being counted" in page
    assert "sent in the last 24 h" not in page
    assert "Sending is paused" in page
    assert "the mail server refused: 421" in page

    held.go.set()
    held.join()
    clock.advance(timedelta(seconds=30))
    page = browser.get("/console/today").text
    sent = re.search(r'<div class="figure">(\d+)</div><small>sent in the last 24 h', page)
    assert sent
    assert sent.group(1) == "1"
    assert "30 s ago" in page
    assert "Sending is paused" in page
    assert held.counts == 1


@ONE_DATABASE
def test_the_proxy_prefix_is_believed_only_from_trusted_proxies(console: Any) -> None:
    """From FORWARDED_ALLOW_IPS, X-Forwarded-Prefix goes in front of every link, redirect and
    the cookie's path; from anyone else it is ignored."""
    browser = _with_account(console())
    proxied = {"x-forwarded-prefix": "/ops", "x-forwarded-proto": "https"}
    form = browser.get("/console/login", headers=proxied)
    assert 'action="/ops/console/login"' in form.text
    assert 'href="/ops/console/static/console.css"' in form.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token
    login_cookie = form.headers["set-cookie"]
    assert "Path=/ops/console" in login_cookie
    assert "Secure" in login_cookie
    # What the browser sends back to https://proxy/ops/console/login, passed on as /console.
    nonce = login_cookie.split(";")[0]
    browser.http.cookies.clear()
    answer = browser.post(
        "/console/login",
        {"email": ANN, "password": PASSWORD, "csrf_token": token.group(1)},
        headers={**proxied, "cookie": nonce},
    )
    assert answer.headers["location"] == "/ops/console/"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "campaign_console=" in c)
    assert "Path=/ops/console" in cookie
    assert "Secure" in cookie
    stranger = console(client=FAR, app_clock=(browser.app, browser.clock))
    assert 'action="/console/login"' in stranger.get("/console/login", headers=proxied).text


def test_accounts_are_unique_by_address_and_removing_one_ends_its_sessions(
    console: Any,
) -> None:
    """An address has one account whatever its case; a short password is refused; removing
    an account signs its browsers out at once; both changes are audited."""
    browser = _with_account(console())
    db = browser.app.db
    with pytest.raises(BadInput, match="exists already"):
        operators.add_operator(db, "ANN@example.org", PASSWORD, START)
    with pytest.raises(BadInput, match="at least 12 characters"):
        operators.add_operator(db, "bo@example.org", "short", START)
    with pytest.raises(BadInput, match="EMAIL 'bo example' is not an address"):
        operators.add_operator(db, "bo example", PASSWORD, START)
    assert [a.email for a in operators.list_operators(db)] == [ANN]
    browser.sign_in()
    assert browser.get("/console/audit").status_code == 200
    assert operators.remove_operator(db, ANN, START)
    assert not operators.remove_operator(db, ANN, START)
    assert browser.get("/console/audit").status_code == 303
    assert operators.list_operators(db) == []
    assert [(a, b) for a, b, _ in _audit(browser.app) if b.startswith("operator")] == [
        ("command line", "operator.add"),
        ("command line", "operator.remove"),
    ]


@ONE_DATABASE
def test_today_names_a_refused_plan_edit_until_it_is_fixed(
    console: Any, engine: EngineFactory, plan_file: Path
) -> None:
    """A broken save of the plan shows on Today with its file:line; a good save clears it."""
    browser = _with_account(console(app_clock=engine(START, PLAN_PATH=str(plan_file))))
    browser.sign_in()
    assert "The last plan edit was refused" not in browser.get("/console/today").text
    original = plan_file.read_text()
    broken = original.replace("template: day01.html", "template: day01-missing.html")
    plan_file.write_text(broken)
    line = next(n for n, t in enumerate(broken.splitlines(), 1) if "day01-missing" in t)
    page = browser.get("/console/today").text
    assert "The last plan edit was refused" in page
    assert f"thirty_day.yaml:{line}: steps[1].template" in page
    plan_file.write_text(original)
    assert "The last plan edit was refused" not in browser.get("/console/today").text


@ONE_DATABASE
def test_signing_out_ends_the_session_for_good(console: Any) -> None:
    """Sign out (a form with its token) deletes the session: its cookie, replayed, opens
    nothing; the audit log says so."""
    browser = _with_account(console())
    browser.sign_in()
    stolen = browser.http.cookies["campaign_console"]
    token = browser.csrf("/console/audit")
    answer = browser.post("/console/logout", {"csrf_token": token})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login"
    browser.http.cookies.set("campaign_console", stolen)
    replayed = browser.get("/console/audit")
    assert replayed.status_code == 303
    assert [a for _, a, _ in _audit(browser.app)][-2:] == ["sign-in", "sign-out"]


@ONE_DATABASE
def test_clearing_a_suppression_on_the_command_line_is_audited(
    console: Any, env: dict[str, str], tmp_path: Path
) -> None:
    """`campaign suppressions clear` writes the same audit entry as the console's clear, by
    "command line"; clearing an address that is not suppressed writes none."""
    browser = _with_account(console())
    app = browser.app
    subscriptions.subscribe(
        app.db, app.plan, email="rex@example.org", first_name="Rex", timezone="UTC", now=START
    )
    subscriptions.forget_person(app.db, "rex@example.org", START)
    for _ in range(2):
        cleared = run_campaign(env, tmp_path, "suppressions", "clear", "rex@example.org")
        assert cleared.returncode == 0, cleared.stderr
    assert "was not suppressed" in cleared.stdout
    assert [e for e in _audit(app) if e[1] == "suppression.clear"] == [
        ("command line", "suppression.clear", "rex@example.org (forgotten)")
    ]
    browser.sign_in()
    assert "rex@example.org (forgotten)" in browser.get("/console/audit").text
