"""Fixtures for the HTTP tests: the engine's web app served by uvicorn on loopback."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

import httpx
import pytest
from aiosmtpd.controller import Controller

from campaign.clock import FixedClock
from campaign.engine import App
from campaign.interfaces.web import make_server
from campaign.storage import store
from tests.acceptance.real_processes import CountingSink
from tests.conftest import EngineFactory
from tests.smtp_server import SMTPServer, free_port

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@dataclass
class Site:
    app: App
    clock: FixedClock
    url: str
    http: httpx.Client
    smtp: SMTPServer

    def signup(self, email: str, **fields: str) -> httpx.Response:
        return self.http.post("/subscribe", data={"email": email, **fields})

    def mail_to(self, email: str) -> list[EmailMessage]:
        """What `email` received, once the engine sent what signups queued (run here, at once,
        instead of by its thread: no waiting)."""
        self.app.signup_mail.drain(self.clock.now())
        return [r.message for r in self.smtp.to(email)]

    def link_in(self, message: EmailMessage, path: str) -> str:
        body = message.get_body(preferencelist=("plain",))
        assert body is not None
        found = re.search(rf"{re.escape(self.url)}/{path}/[A-Za-z0-9_.=-]+", body.get_content())
        assert found, f"no /{path}/ link in the email"
        return found.group(0)[len(self.url) :]

    def status_of(self, email: str) -> str | None:
        with self.app.db.transaction() as session:
            known = store.find_subscriber(session, email)
        return known.status if known else None


def _serve(app: App, port: int) -> Iterator[None]:
    server = make_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for a real server to bind its socket, not for a schedule
    assert server.started
    yield
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def sink() -> Iterator[tuple[CountingSink, int]]:
    """A counting SMTP sink on loopback (for tests that run the scheduler as a process)."""
    handler, port = CountingSink(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def site(engine: EngineFactory, smtp_server: SMTPServer) -> Iterator[Site]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, clock = engine(NOW, PUBLIC_BASE_URL=url, SIGNUP_RATE_PER_MINUTE="10")
    serving = _serve(app, port)
    next(serving)
    with httpx.Client(base_url=url, timeout=10) as client:
        yield Site(app, clock, url, client, smtp_server)
    next(serving, None)
