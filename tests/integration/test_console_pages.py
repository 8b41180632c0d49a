"""The console's Subscribers, Plan and Import pages over HTTP (the operators' application, on
both databases): what they show, each action behind its CSRF token, and the audit entry of
each change."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from campaign.engine import App
from campaign.interfaces.admin import create_admin_app
from campaign.people import directory, operators
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
OPERATOR, PASSWORD = "op@example.org", "correct horse battery staple"


class ConsoleClient:
    """A synchronous client of an ASGI app that keeps its cookies (starlette's ConsoleClient
    warns about its httpx; this is the webhook tests' ASGITransport, kept between requests)."""

    def __init__(self, app: Any) -> None:
        self.transport = httpx.ASGITransport(app=app)
        self.cookies = httpx.Cookies()

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=self.transport,
                base_url="https://testserver",
                cookies=self.cookies,
                follow_redirects=options.pop("follow_redirects", True),
            ) as client:
                answer = await client.request(method, path, **options)
                self.cookies = client.cookies
                return answer

        return asyncio.run(send())

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self.request("POST", path, **options)


def _token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@pytest.fixture
def signed_in(engine: EngineFactory, smtp_server: SMTPServer) -> tuple[App, ConsoleClient]:
    """An engine with Ann (welcome sent) and a hostile name, and a signed-in console client."""
    app, clock = engine(NOW)
    app.subscribe("ann@example.org", name="Ann", timezone="UTC", now=NOW)
    app.subscribe("eve@example.org", name="<script>alert(1)</script>", timezone="UTC", now=NOW)
    tick(app, clock, NOW)
    operators.add_operator(app.db, OPERATOR, PASSWORD, NOW)
    client = ConsoleClient(create_admin_app(app))
    login = client.get("/console/login")
    answer = client.post(
        "/console/login",
        data={"email": OPERATOR, "password": PASSWORD, "csrf_token": _token(login.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    return app, client


def _id(app: App, query: str) -> int:
    return directory.search(app.db, query).rows[0].id


def _audit(app: App) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.detail) for e in operators.audit_log(app.db).entries]


def test_search_lists_matches_and_escapes_what_subscribers_typed(
    signed_in: tuple[App, ConsoleClient],
) -> None:
    """A search shows each match linking to its page; a name with markup shows as text."""
    app, client = signed_in
    page = client.get("/console/subscribers", params={"q": "A"})
    assert page.status_code == 200
    assert f'href="/console/subscribers/{_id(app, "ann")}"' in page.text
    assert "eve@example.org" not in page.text
    everyone = client.get("/console/subscribers").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in everyone
    assert "<script>alert" not in everyone
    refused = client.get("/console/subscribers", params={"cursor": "@@@"})
    assert refused.status_code == 400
    assert "cursor" in refused.text


def test_the_subscriber_page_shows_the_delivery_log_and_unsubscribes_with_csrf(
    signed_in: tuple[App, ConsoleClient], smtp_server: SMTPServer
) -> None:
    """The page shows the welcome's Message-ID; unsubscribing needs the form's token, then
    works, and the audit log names the operator."""
    app, client = signed_in
    ann = _id(app, "ann")
    page = client.get(f"/console/subscribers/{ann}")
    (welcome,) = smtp_server.to("ann@example.org")
    assert str(welcome.message["Message-ID"]).replace("<", "&lt;").replace(">", "&gt;") in page.text
    assert "250 accepted" in page.text
    forged = client.post(f"/console/subscribers/{ann}/unsubscribe", data={"csrf_token": "x"})
    assert forged.status_code == 403
    assert directory.person(app.db, ann).subscriber["status"] == "active"
    done = client.post(
        f"/console/subscribers/{ann}/unsubscribe", data={"csrf_token": _token(page.text)}
    )
    assert done.status_code == 200
    assert "Unsubscribed" in done.text
    assert directory.person(app.db, ann).subscriber["status"] == "unsubscribed"
    assert (OPERATOR, "subscriber.unsubscribe", f"#{ann}") in _audit(app)


def test_resend_and_export_are_audited(
    signed_in: tuple[App, ConsoleClient], smtp_server: SMTPServer
) -> None:
    """Resend sends the welcome once more; export downloads the JSON of `campaign export`."""
    app, client = signed_in
    ann = _id(app, "ann")
    token = _token(client.get(f"/console/subscribers/{ann}").text)
    page = client.post(f"/console/subscribers/{ann}/resend", data={"csrf_token": token})
    assert "sent again" in page.text
    assert len(smtp_server.to("ann@example.org")) == 2
    assert "(resent)" in page.text
    exported = client.post(f"/console/subscribers/{ann}/export", data={"csrf_token": token})
    assert exported.headers["content-disposition"].startswith("attachment")
    assert exported.json()["subscriber"]["email"] == "ann@example.org"
    actions = [action for _, action, _ in _audit(app)]
    assert "subscriber.resend_welcome" in actions
    assert "subscriber.export" in actions


def test_forget_asks_for_the_address_first(signed_in: tuple[App, ConsoleClient]) -> None:
    """The confirmation page must get the address typed; a wrong one erases nothing."""
    app, client = signed_in
    ann = _id(app, "ann")
    asked = client.get(f"/console/subscribers/{ann}/forget")
    assert "cannot be undone" in asked.text
    token = _token(asked.text)
    wrong = client.post(
        f"/console/subscribers/{ann}/forget", data={"csrf_token": token, "confirm": "bob@x.org"}
    )
    assert wrong.status_code == 400
    assert directory.search(app.db, "ann").rows
    client.post(
        f"/console/subscribers/{ann}/forget",
        data={"csrf_token": token, "confirm": "ANN@example.org"},
    )
    assert directory.search(app.db, "ann").rows == []
    assert (OPERATOR, "subscriber.forget", f"#{ann}") in _audit(app)
    assert all("ann@" not in detail for _, _, detail in _audit(app))


def test_the_plan_page_counts_and_previews_each_step(signed_in: tuple[App, ConsoleClient]) -> None:
    """The timeline shows the two welcomes sent; a step's page frames its email at 375 and
    800 px, served sandboxed; the confirmation email has its page too."""
    app, client = signed_in
    timeline = client.get("/console/plan")
    assert timeline.status_code == 200
    welcome = app.plan.steps[0]
    row = re.search(rf'href="/console/plan/{welcome.key}">.*?</tr>', timeline.text, re.S)
    assert row is not None
    assert re.findall(r'class="num">([\d,]+)<', row.group(0))[0] == "2"
    step = client.get(f"/console/plan/{app.plan.steps[3].key}")
    assert 'width="375"' in step.text
    assert 'width="800"' in step.text
    email = client.get(f"/console/plan/{app.plan.steps[3].key}/email.html")
    assert "sandbox" in email.headers["content-security-policy"]
    assert "Ann" in email.text
    assert client.get("/console/plan/confirmation").status_code == 200
    assert client.get("/console/plan/no-such-step").status_code == 404


def test_import_previews_row_by_row_then_commits(signed_in: tuple[App, ConsoleClient]) -> None:
    """The upload's report lists every row and stores nothing; committing adds the new rows
    once (a second commit of the same upload is refused) and is audited."""
    app, client = signed_in
    token = _token(client.get("/console/import").text)
    csv = b"email,first_name\nnew@example.org,Nina\nann@example.org,Ann\nbad-address,X\n"
    preview = client.post(
        "/console/import/preview",
        data={"csrf_token": token},
        files={"file": ("list.csv", csv, "text/csv")},
    )
    assert preview.status_code == 200
    assert re.search(r'id="count-add">1<', preview.text)
    assert re.search(r'id="count-refused">1<', preview.text)
    assert "bad-address" in preview.text
    assert directory.search(app.db, "new").rows == []
    upload = re.search(r'name="token" value="([^"]+)"', preview.text)
    assert upload is not None
    done = client.post(
        "/console/import/commit", data={"csrf_token": token, "token": upload.group(1)}
    )
    assert re.search(r'id="added">1<', done.text)
    assert [row.email for row in directory.search(app.db, "new").rows] == ["new@example.org"]
    again = client.post(
        "/console/import/commit", data={"csrf_token": token, "token": upload.group(1)}
    )
    assert again.status_code == 400
    assert "subscribers.import" in [action for _, action, _ in _audit(app)]
    no_header = client.post(
        "/console/import/preview",
        data={"csrf_token": token},
        files={"file": ("x.csv", b"name\nx\n", "text/csv")},
    )
    assert no_header.status_code == 400
    assert "email" in no_header.text
