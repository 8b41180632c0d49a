"""The JSON API through the operators' ASGI app, on both databases, with the confirmation and
welcome emails going to the real loopback SMTP server: create (double opt-in, or with a stated
consent), get, unsubscribe, forget, the delivery log by cursor, stats; keys, rate limits,
hostile bodies, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Mount, Route

from campaign.clock import FixedClock
from campaign.domain.addresses import email_hash
from campaign.domain.statuses import SuppressionReason
from campaign.engine import App
from campaign.interfaces.admin import create_admin_app
from campaign.interfaces.api.openapi import document
from campaign.people import api_keys, operators, subscriptions
from campaign.storage import store
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
CONSENT = {"at": "2026-12-01T09:58:00+01:00", "ip": "203.0.113.7", "source": "https://x.org/join"}
PASSWORD = "correct horse battery staple"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Client:
    """A blocking HTTP client of an ASGI app (httpx's ASGI transport, one loop a request)."""

    def __init__(self, asgi: Any, root_path: str = "") -> None:
        self.transport = httpx.ASGITransport(app=asgi, root_path=root_path)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=self.transport, base_url="http://127.0.0.1:9100"
            ) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)


class Api:
    """A client of one engine's operators' app, holding one key's token."""

    def __init__(self, app: App, clock: FixedClock, client: Client, token: str) -> None:
        self.app, self.clock, self.client, self.token = app, clock, client, token

    def call(self, method: str, path: str, token: str | None = "", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        token = self.token if token == "" else token
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return self.client.request(method, "/api/v1" + path, headers=headers, **kwargs)

    def new_token(self, name: str) -> str:
        return api_keys.create(self.app.db, name, self.clock.now()).token


@pytest.fixture
def api(engine: EngineFactory, smtp_server: SMTPServer) -> Api:
    """The API of an engine at START that mails the test SMTP server, with one key."""
    app, clock = engine(START, API_RATE_PER_MINUTE="1000")
    client = Client(create_admin_app(app))
    return Api(app, clock, client, api_keys.create(app.db, "crm", START).token)


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["type"].startswith("urn:campaign:problem:")
    return body


def _fields(response: Any) -> set[str]:
    return {error["field"] for error in _problem(response, 422)["errors"]}


def _mail_to(smtp_server: SMTPServer, email: str) -> list[str]:
    return [m.message["Subject"] for m in smtp_server.received if email in m.recipients]


def test_a_subscriber_with_stated_consent_is_active_at_once_and_gets_the_welcome(
    api: Api, smtp_server: SMTPServer
) -> None:
    """201 with the stated consent kept, the welcome mailed in the request; a repeat is a 200
    with the same subscriber, no second enrollment and no second email."""
    body = {"email": "Ann@Example.org", "first_name": "Ann", "consent": CONSENT}
    created = api.call("POST", "/subscribers", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/api/v1/subscribers/Ann@example.org"
    ann = created.json()
    assert (ann["email"], ann["status"], ann["source"]) == ("Ann@example.org", "active", "api:crm")
    assert ann["consents"] == [
        {
            "kind": "signup",
            "at": "2026-12-01T08:58:00Z",
            "ip": "203.0.113.7",
            "user_agent": "",
            "source": "https://x.org/join",
        }
    ]
    assert [d["status"] for d in ann["deliveries"]] == ["sent"]
    assert len(_mail_to(smtp_server, "Ann@example.org")) == 1
    again = api.call("POST", "/subscribers", json={**body, "email": "ann@example.org"})
    assert again.status_code == 200
    assert len(again.json()["enrollments"]) == 1
    assert again.json()["deliveries"] == ann["deliveries"]
    assert len(_mail_to(smtp_server, "Ann@example.org")) == 1


def test_a_subscriber_without_consent_gets_the_confirmation_email(
    api: Api, smtp_server: SMTPServer
) -> None:
    """Double opt-in, as the public signup: pending, and the engine mails the confirmation;
    a repeat is a 200 with the pending subscriber."""
    created = api.call("POST", "/subscribers", json={"email": "bo@example.org"})
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending"
    assert api.app.signup_mail.drain(api.clock.now()) == 1
    assert len(_mail_to(smtp_server, "bo@example.org")) == 1
    again = api.call("POST", "/subscribers", json={"email": "bo@example.org"})
    assert (again.status_code, again.json()["status"]) == (200, "pending")


def test_get_unsubscribe_and_forget_act_as_the_cli_does(api: Api) -> None:
    """Unsubscribe stops the plan; forget erases (then 404) and suppresses by hash, and the
    person's own stated consent later brings them back, as their confirmed signup would."""
    api.call("POST", "/subscribers", json={"email": "cy@example.org", "consent": CONSENT})
    assert api.call("GET", "/subscribers/CY@example.org").json()["status"] == "active"
    left = api.call("POST", "/subscribers/cy@example.org/unsubscribe")
    assert (left.status_code, left.json()["status"]) == (200, "unsubscribed")
    assert left.json()["enrollments"][0]["status"] == "cancelled"
    gone = api.call("DELETE", "/subscribers/cy@example.org")
    assert gone.status_code == 204
    assert (
        "no subscriber" in _problem(api.call("GET", "/subscribers/cy@example.org"), 404)["detail"]
    )
    _problem(api.call("DELETE", "/subscribers/cy@example.org"), 404)
    _problem(api.call("POST", "/subscribers/nobody@example.org/unsubscribe"), 404)
    back = api.call("POST", "/subscribers", json={"email": "cy@example.org", "consent": CONSENT})
    assert (back.status_code, back.json()["status"]) == (201, "active")


def test_a_bounced_address_is_refused_and_a_returning_one_restarts(api: Api) -> None:
    """A bounced address not stored is a 409, with or without consent; an unsubscribed
    person who consents again starts the plan afresh, in a second enrollment."""
    with api.app.db.transaction() as session:
        store.suppress(session, email_hash("gone@example.org"), SuppressionReason.BOUNCED, START)
    refused = _problem(
        api.call("POST", "/subscribers", json={"email": "gone@example.org", "consent": CONSENT}),
        409,
    )
    assert "bounced" in refused["detail"]
    by_opt_in = api.call("POST", "/subscribers", json={"email": "gone@example.org"})
    assert "bounced" in _problem(by_opt_in, 409)["detail"]
    subscriptions.subscribe(
        api.app.db, api.app.plan, email="di@example.org", first_name="", timezone="", now=START
    )
    subscriptions.unsubscribe(api.app.db, email="di@example.org", now=START)
    back = api.call("POST", "/subscribers", json={"email": "di@example.org", "consent": CONSENT})
    assert (back.status_code, back.json()["status"]) == (200, "active")
    assert [e["status"] for e in back.json()["enrollments"]] == ["cancelled", "active"]


def test_the_delivery_log_pages_by_cursor_meet_every_delivery_exactly_once(api: Api) -> None:
    """Pages of 3 walk 8 deliveries in id order, once each; the last page's cursor then
    finds exactly what was sent after it."""
    for n in range(8):
        subscriptions.subscribe(
            api.app.db,
            api.app.plan,
            email=f"p{n}@example.org",
            first_name="",
            timezone="",
            now=START,
        )
    tick(api.app, api.clock, START)
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"since": cursor} if cursor else {})}
        page = api.call("GET", "/deliveries", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor, pages = page["next"], pages + 1
        if not page["has_more"]:
            break
    assert pages == 3
    assert seen == sorted(set(seen))
    assert len(seen) == 8
    assert {item["status"] for item in page["items"]} == {"sent"}
    assert api.call("GET", "/deliveries", params={"since": cursor}).json() == {
        "items": [],
        "next": cursor,
        "has_more": False,
    }
    api.call("POST", "/subscribers", json={"email": "late@example.org", "consent": CONSENT})
    later = api.call("GET", "/deliveries", params={"since": cursor}).json()
    assert [item["email"] for item in later["items"]] == ["late@example.org"]
    assert _fields(api.call("GET", "/deliveries", params={"since": "1 OR 1=1"})) == {"since"}
    assert _fields(api.call("GET", "/deliveries", params={"limit": "0"})) == {"limit"}
    assert _fields(api.call("GET", "/deliveries", params={"offset": "3"})) == {"offset"}


def test_stats_are_what_the_cli_prints(api: Api) -> None:
    """GET /stats answers `campaign stats --json`'s numbers."""
    api.call("POST", "/subscribers", json={"email": "st@example.org", "consent": CONSENT})
    stats = api.call("GET", "/stats")
    assert stats.status_code == 200
    assert stats.json() == api.app.stats()
    assert stats.json()["subscribers"]["active"] == 1


def test_keys_missing_forged_other_or_revoked_are_refused(api: Api) -> None:
    """401 with WWW-Authenticate: Bearer for no token, a bad scheme, a forged secret, another
    key's secret under this key's id, a made-up key; a revoked key is refused from the next
    request on while another key still works."""
    other = api.new_token("site")
    _, public_id, _ = other.split("_", 2)
    forged = f"cpk_{public_id}_{'A' * 43}"
    crossed = f"cpk_{public_id}_{api.token.split('_', 2)[2]}"  # the other key's secret
    for token, headers in [
        (None, {}),
        (None, {"authorization": f"Basic {other}"}),
        (forged, {}),
        (crossed, {}),
        (other + "x", {}),
        ("cpk_000000000000_" + "B" * 43, {}),
        ("' OR 1=1 --", {}),
    ]:
        refused = api.call("GET", "/stats", token=token, headers=headers)
        _problem(refused, 401)
        assert refused.headers["www-authenticate"].startswith("Bearer")
    assert api.call("GET", "/stats", token=other).status_code == 200
    api_keys.revoke(api.app.db, "site", api.clock.now())
    _problem(api.call("GET", "/stats", token=other), 401)
    assert api.call("GET", "/stats").status_code == 200
    listed = {key.name: key for key in api_keys.list_keys(api.app.db)}
    assert listed["crm"].last_used_at == START
    assert listed["site"].revoked


@SQLITE_ONLY
def test_each_key_has_its_own_rate_limit(engine: EngineFactory, smtp_server: SMTPServer) -> None:
    """Over API_RATE_PER_MINUTE a key gets 429 with Retry-After; another key does not."""
    app, clock = engine(START, API_RATE_PER_MINUTE="3")
    first = api_keys.create(app.db, "one", START).token
    second = api_keys.create(app.db, "two", START).token
    api = Api(app, clock, Client(create_admin_app(app)), first)
    assert [api.call("GET", "/stats").status_code for _ in range(3)] == [200] * 3
    limited = api.call("GET", "/stats")
    _problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    assert api.call("GET", "/stats", token=second).status_code == 200


def test_hostile_bodies_get_a_4xx_naming_the_field_and_change_nothing(api: Api) -> None:
    """Header injection, oversize fields and bodies, wrong types and content types, unknown
    fields, bad JSON, a consent from the future: each refused, field named; SQL-ish text is
    only text."""
    post = api.call
    ok = {"email": "hx@example.org"}
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({**ok, "first_name": "Ann\r\nBcc: all@example.org"}, {"first_name"}),
        ({**ok, "first_name": "A" * 101}, {"first_name"}),
        ({"email": "x" * 300 + "@example.org"}, {"email"}),
        ({"email": "ann@example.org\r\nBcc: all@example.org"}, {"email"}),
        ({"email": "not-an-address"}, {"email"}),
        ({"email": 42}, {"email"}),
        ({**ok, "timezone": "Mars/Olympus"}, {"timezone"}),
        ({**ok, "admin": True}, {"admin"}),
        ({**ok, "consent": {**CONSENT, "at": "2027-01-01T00:00:00Z"}}, {"consent.at"}),
        ({**ok, "consent": {**CONSENT, "at": "2026-12-01T09:00:00"}}, {"consent.at"}),
        ({**ok, "consent": {**CONSENT, "ip": "evil"}}, {"consent.ip"}),
        (
            {**ok, "consent": {"at": CONSENT["at"], "extra": 1}},
            {"consent.ip", "consent.source", "consent.extra"},
        ),
        ({}, {"email"}),
    ]
    for body, fields in cases:
        assert _fields(post("POST", "/subscribers", json=body)) == fields, body
    assert _fields(post("POST", "/subscribers", json=["a"])) == {"body"}
    _problem(
        post(
            "POST",
            "/subscribers",
            content=b'{"email": "a@example.org",',
            headers={"content-type": "application/json"},
        ),
        400,
    )
    duplicate = b'{"email": "a@example.org", "email": "b@example.org"}'
    assert (
        "twice"
        in _problem(
            post(
                "POST",
                "/subscribers",
                content=duplicate,
                headers={"content-type": "application/json"},
            ),
            400,
        )["detail"]
    )
    _problem(post("POST", "/subscribers", data={"email": "a@example.org"}), 415)
    huge = {**ok, "first_name": "A" * 20_000}
    _problem(post("POST", "/subscribers", json=huge), 413)
    assert sum(api.app.stats()["subscribers"].values()) == 0
    sqlish = {"email": "o'neil@example.org", "first_name": "Robert'); DROP TABLE subscribers;--"}
    stored = post("POST", "/subscribers", json={**sqlish, "consent": CONSENT})
    assert stored.status_code == 201
    fetched = post("GET", "/subscribers/" + quote("o'neil@example.org")).json()
    assert fetched["first_name"] == sqlish["first_name"]
    _problem(post("GET", "/subscribers/x%27%20OR%201=1--"), 404)
    _problem(post("GET", "/nowhere"), 404)
    _problem(post("PUT", "/subscribers"), 405)


@SQLITE_ONLY
def test_the_openapi_document_is_valid_and_lists_exactly_the_served_routes(api: Api) -> None:
    """openapi-spec-validator accepts /api/openapi.json, whose (path, method) pairs are the
    API mount's routes, no more, no fewer; behind a proxy's path prefix its server has it."""
    served = api.client.get("/api/openapi.json")
    assert served.status_code == 200
    spec = served.json()
    assert spec == document()
    validate(spec)
    documented = {
        (path, method.upper())
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    admin = create_admin_app(api.app)
    mount = next(r for r in admin.routes if isinstance(r, Mount) and r.path == "/api")
    routed = {
        (route.path, method)
        for route in mount.routes
        if isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert routed == documented
    behind_proxy = Client(create_admin_app(api.app), root_path="/ops")
    moved = behind_proxy.get("/ops/api/openapi.json").json()
    assert moved["servers"] == [{"url": "/ops/api"}]
    made = behind_proxy.request(
        "POST",
        "/ops/api/v1/subscribers",
        json={"email": "px@example.org", "consent": CONSENT},
        headers={"authorization": f"Bearer {api.token}"},
    )
    assert made.headers["location"] == "/ops/api/v1/subscribers/px@example.org"


def test_the_consent_time_is_checked_against_the_engines_clock(api: Api) -> None:
    """A stated consent a few minutes ahead (clock skew) is taken; hours ahead is refused."""
    soon = (START + timedelta(minutes=4)).isoformat()
    later = (START + timedelta(hours=2)).isoformat()
    body = {"email": "sk@example.org", "consent": {**CONSENT, "at": soon}}
    assert api.call("POST", "/subscribers", json=body).status_code == 201
    body = {"email": "sk2@example.org", "consent": {**CONSENT, "at": later}}
    assert _fields(api.call("POST", "/subscribers", json=body)) == {"consent.at"}


def _audit_page(api: Api) -> str:
    """The console's Audit page, as an operator who signs in sees it."""
    operators.add_operator(api.app.db, "ops@example.org", PASSWORD, api.clock.now())

    async def visit() -> str:
        async with httpx.AsyncClient(
            transport=api.client.transport, base_url="http://127.0.0.1:9100"
        ) as browser:
            form = (await browser.get("/console/login")).text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert token
            signed = await browser.post(
                "/console/login",
                data={"email": "ops@example.org", "password": PASSWORD, "csrf_token": token[1]},
            )
            assert signed.status_code == 303, signed.text
            return (await browser.get("/console/audit")).text

    return asyncio.run(visit())


def test_each_change_through_the_api_is_audited_with_its_key(api: Api) -> None:
    """Creating (with stated consent or double opt-in), unsubscribing and forgetting each
    write an audit entry naming the key and the subscriber's id, never the address; a call
    that changes nothing (an unknown address) writes none. The console's Audit page lists
    them."""
    ann = api.call("POST", "/subscribers", json={"email": "ann@example.org", "consent": CONSENT})
    bo = api.call("POST", "/subscribers", json={"email": "bo@example.org"})
    assert (ann.status_code, bo.status_code) == (201, 201)
    with api.app.db.read() as session:
        ids = [store.find_subscriber(session, f"{n}@example.org") for n in ("ann", "bo")]
    ann_id, bo_id = (known.id for known in ids if known is not None)
    assert api.call("POST", "/subscribers/ann@example.org/unsubscribe").status_code == 200
    assert api.call("DELETE", "/subscribers/bo@example.org").status_code == 204
    assert api.call("DELETE", "/subscribers/nobody@example.org").status_code == 404
    entries = operators.audit_log(api.app.db, limit=100).entries
    assert [(e.actor, e.action, e.detail) for e in reversed(entries)] == [
        ("api key crm", "subscriber.create", f"#{ann_id} (enrolled, new)"),
        ("api key crm", "subscriber.create", f"#{bo_id} (confirmation-queued, new)"),
        ("api key crm", "subscriber.unsubscribe", f"#{ann_id}"),
        ("api key crm", "subscriber.forget", f"#{bo_id}"),
    ]
    page = _audit_page(api)
    assert page.count("api key crm") == 4
    assert "subscriber.forget" in page
    assert "@example.org" not in page.replace("ops@example.org", "")
