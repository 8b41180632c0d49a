"""The public ASGI application wired for one engine, and the uvicorn server that serves it."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from campaign.engine import App
from campaign.interfaces.web.errors import EXCEPTION_HANDLERS
from campaign.interfaces.web.http_guard import HttpLimits, guarded_protocol, listen_socket
from campaign.interfaces.web.pages import Pages
from campaign.interfaces.web.routes import PublicEndpoints
from campaign.interfaces.web.webhooks import WebhookEndpoints
from campaign.people.provider_webhooks.events import WebhookProvider


def create_app(
    app: App,
    pages_dir: Path | str = "templates/web",
    *,
    webhook_providers: dict[str, WebhookProvider] | None = None,
) -> Starlette:
    """The ASGI application for one engine; provider webhooks for those configured in its
    settings, unless `webhook_providers` are given (tests)."""
    pages = Pages(app, pages_dir)
    routes = (
        PublicEndpoints(app, pages).routes() + WebhookEndpoints(app, webhook_providers).routes()
    )
    web = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    # Read by the error handlers (the pages) and by read_body (the body deadline).
    web.state.pages = pages
    web.state.body_timeout = app.settings.http_body_timeout
    return web


def make_server(app: App, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for `app` (access log off: one line per request is noise at scale),
    whose connections have header and body deadlines and a cap (web.http_guard)."""
    limits = HttpLimits.from_settings(app.settings)
    config = uvicorn.Config(
        create_app(app, app.settings.pages_dir),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=app.settings.forwarded_allow_ips,
        http=guarded_protocol(limits),
        backlog=limits.backlog,
    )
    return uvicorn.Server(config)


def listen(app: App, host: str, port: int) -> socket.socket:
    """The public listener's socket, bound now: a busy port raises ListenFailed at once."""
    return listen_socket(host, port, HttpLimits.from_settings(app.settings).backlog)


def serve_in_thread(app: App, host: str, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """Start serving beside the scheduler; uvicorn leaves signals to the main thread.

    The socket is bound here, in the caller's thread: a busy port raises ListenFailed
    instead of leaving the service running without its pages."""
    sock = listen(app, host, port)
    server = make_server(app, host, port)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
    )
    thread.start()
    return server, thread
