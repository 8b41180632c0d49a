"""The console's Webhooks page over HTTP, on both databases: an endpoint added (its secret
shown once), its attempts to a real receiver that fails then succeeds, disable / enable /
retry / remove (each audited, each behind its CSRF token), and hostile text escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign.delivery.webhook_http import Answer
from campaign.delivery.webhooks import WebhookDeliverer
from campaign.engine import App
from campaign.interfaces.admin import create_admin_app
from campaign.people import operators, subscriptions
from tests.conftest import EngineFactory
from tests.integration.test_console_pages import ConsoleClient, _token
from tests.smtp_server import free_port
from tests.webhook_receiver import Receiver

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
OPERATOR, PASSWORD = "op@example.org", "correct horse battery staple"


@pytest.fixture
def console(engine: EngineFactory) -> tuple[App, ConsoleClient]:
    app, _clock = engine(NOW)
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


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for one in started:
        one.stop()


def _add(client: ConsoleClient, url: str, *events: str) -> str:
    """Add an endpoint through the form; the secret the answer shows."""
    token = _token(client.get("/console/webhooks").text)
    answer = client.post(
        "/console/webhooks",
        data={"csrf_token": token, "url": url, **{f"event:{name}": "1" for name in events}},
    )
    assert answer.status_code == 200, answer.text
    found = re.search(r'<code class="secret" id="secret">(whsec_[^<]+)</code>', answer.text)
    assert found, "no secret on the answer to the form"
    assert "shown this once" in answer.text
    return found.group(1)


def _unsubscribe(app: App, email: str, at: datetime) -> None:
    subscriptions.subscribe(app.db, app.plan, email=email, first_name=None, timezone=None, now=at)
    app.unsubscribe(email, now=at)


def _audit(app: App) -> list[tuple[str, str]]:
    return [(e.actor, e.action) for e in operators.audit_log(app.db).entries]


def test_an_endpoint_is_added_with_its_secret_shown_once_and_a_bad_url_named(
    console: tuple[App, ConsoleClient],
) -> None:
    app, client = console
    token = _token(client.get("/console/webhooks").text)
    bad = client.post(
        "/console/webhooks", data={"csrf_token": token, "url": "http://example.org/x"}
    )
    assert bad.status_code == 400
    assert "URL:" in bad.text
    assert "must use https" in bad.text
    assert 'value="http://example.org/x"' in bad.text  # the form again, as typed
    assert app.webhooks.endpoints() == []

    hostile = f"http://127.0.0.1:{free_port()}/hooks?q=<b>x</b>&s=\"'"
    secret = _add(client, hostile, "subscriber.unsubscribed", "click")
    assert secret.startswith("whsec_")
    (added,) = app.webhooks.endpoints()
    assert added.events == ("subscriber.unsubscribed", "click")
    again = client.get("/console/webhooks").text
    assert secret not in again  # not on a reload, nor anywhere later
    assert secret not in client.get(f"/console/webhooks/{added.id}").text
    assert "?q=&lt;b&gt;x&lt;/b&gt;" in again
    assert "<b>x</b>" not in again
    assert "subscriber.unsubscribed, click" in again
    assert (OPERATOR, "webhook.add") in _audit(app)

    forged = client.post(
        "/console/webhooks", data={"csrf_token": "forged", "url": "https://example.org/h"}
    )
    assert forged.status_code == 403
    assert len(app.webhooks.endpoints()) == 1
    app.webhooks.disable(added.id)  # as `campaign webhooks disable` does: audited too
    assert ("command line", "webhook.disable") in _audit(app)
    assert "command line" in client.get("/console/audit").text


def test_attempts_to_a_receiver_that_fails_then_succeeds_are_shown(
    console: tuple[App, ConsoleClient], receivers: list[Receiver], tmp_path: Path
) -> None:
    app, client = console
    port = free_port()
    secret = _add(client, f"http://127.0.0.1:{port}/hooks")
    hooks = Receiver(port, secret, tmp_path / "received.jsonl").start("500,200")
    receivers.append(hooks)
    _unsubscribe(app, "ann@example.org", NOW)
    assert app.webhook_deliverer.deliver_due(NOW).retried >= 1
    assert app.webhook_deliverer.deliver_due(NOW + timedelta(hours=1)).delivered >= 1
    received = hooks.received()
    assert received[0]["answer"] == "500"
    assert received[1]["answer"] == "200"
    assert all(entry["valid"] for entry in received)
    (endpoint,) = app.webhooks.endpoints()
    page = client.get(f"/console/webhooks/{endpoint.id}").text
    assert received[0]["id"] in page
    assert "HTTP 500 Internal Server Error" in page
    assert page.count(received[0]["id"]) >= 2  # the failed try and the one that took
    listing = client.get("/console/webhooks").text
    assert f"{(NOW + timedelta(hours=1)).strftime('%Y-%m-%d %H:%M:%S')} · 200" in listing


def test_disable_enable_retry_and_remove_are_audited_and_need_the_token(
    console: tuple[App, ConsoleClient],
) -> None:
    """An endpoint nobody answers: its events fail, are given up, and retried from the page;
    a receiver's hostile error text shows as text."""
    app, client = console
    _add(client, f"http://127.0.0.1:{free_port()}/hooks")
    (endpoint,) = app.webhooks.endpoints()
    here = f"/console/webhooks/{endpoint.id}"
    _unsubscribe(app, "ann@example.org", NOW)
    hostile = WebhookDeliverer(
        app.db,
        app.clock,
        "test",
        poster=lambda url, body, headers: Answer(None, "<script>alert(1)</script>"),
    )
    for day in range(9):  # past the last retry: given up
        hostile.deliver_due(NOW + timedelta(days=day))
    page = client.get(here).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert" not in page
    assert "Retry 1 failed" in page

    token = _token(page)
    assert client.post(f"{here}/disable", data={"csrf_token": "x"}).status_code == 403
    assert app.webhooks.endpoints()[0].enabled
    done = client.post(
        f"{here}/disable", data={"csrf_token": token, "reason": "<i>maintenance</i>"}
    )
    assert "Endpoint disabled" in done.text
    assert "&lt;i&gt;maintenance&lt;/i&gt;" in done.text
    assert not app.webhooks.endpoints()[0].enabled
    client.post(f"{here}/enable", data={"csrf_token": token})
    assert app.webhooks.endpoints()[0].enabled
    retried = client.post(f"{here}/retry", data={"csrf_token": token})
    assert "queued again" in retried.text
    assert (app.webhooks.endpoints()[0].failed, app.webhooks.endpoints()[0].pending) == (0, 1)

    asked = client.get(f"{here}/remove")
    assert "Remove endpoint" in asked.text
    assert app.webhooks.endpoints()
    assert (
        client.post(f"{here}/remove", data={"csrf_token": "x", "confirm": "yes"}).status_code == 403
    )
    gone = client.post(f"{here}/remove", data={"csrf_token": token, "confirm": "yes"})
    assert "Endpoint removed" in gone.text
    assert app.webhooks.endpoints() == []
    assert client.get(here).status_code == 404
    actions = [action for who, action in _audit(app) if who == OPERATOR and "webhook" in action]
    assert actions[::-1] == [  # the log is newest first
        "webhook.add",
        "webhook.disable",
        "webhook.enable",
        "webhook.retry_failed",
        "webhook.remove",
    ]
