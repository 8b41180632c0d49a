"""The JSON API over real HTTP, as a deployment serves it: uvicorn on the operators' listener
(ADMIN_LISTEN) beside the public pages, a real SMTP server, both databases."""

from __future__ import annotations

import time

import httpx

from campaign.interfaces.admin import start_side_services
from campaign.people import api_keys
from tests.acceptance.conftest import NOW, _serve
from tests.conftest import EngineFactory
from tests.smtp_server import SMTPServer, free_port


def test_the_api_is_served_on_admin_listen_only_and_mails_as_the_pages_do(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """/api answers on ADMIN_LISTEN (404 on the public listener); a subscriber with consent
    gets the welcome at once, and the running signup mail sender sends a double opt-in's
    confirmation without a tick."""
    port, admin_port = free_port(), free_port()
    site, admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}/api"
    app, _ = engine(NOW, PUBLIC_BASE_URL=site, ADMIN_LISTEN=f"127.0.0.1:{admin_port}")
    token = api_keys.create(app.db, "site-backend", NOW).token
    auth = {"authorization": f"Bearer {token}"}
    consent = {"at": NOW.isoformat(), "ip": "198.51.100.4", "source": "https://x.org/join"}
    serving = _serve(app, port)
    next(serving)
    side = start_side_services(app)
    try:
        assert httpx.get(site + "/api/openapi.json").status_code == 404
        assert httpx.get(admin + "/openapi.json").json()["openapi"] == "3.1.0"
        made = httpx.post(
            admin + "/v1/subscribers",
            json={"email": "eve@example.org", "first_name": "Eve", "consent": consent},
            headers=auth,
        )
        assert made.status_code == 201, made.text
        assert [m.recipients for m in smtp_server.received] == [["eve@example.org"]]
        pending = httpx.post(
            admin + "/v1/subscribers", json={"email": "fu@example.org"}, headers=auth
        )
        assert pending.json()["status"] == "pending"
        deadline = time.monotonic() + 10
        while len(smtp_server.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the sender thread was woken by the request; not a schedule
    finally:
        side.close()
        next(serving, None)
    assert smtp_server.received[1].recipients == ["fu@example.org"]
    assert "confirm" in smtp_server.received[1].message["Subject"].lower()
