"""The operators' side of a serving process: /metrics, a detailed /healthz and the console
(/console) on ADMIN_LISTEN (default 127.0.0.1:9100, never the public listener, where counters
would tell who signs up), and the sender of signup email that runs beside the public pages."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from campaign.engine import App
from campaign.insights import reports
from campaign.insights.metrics import CONTENT_TYPE

log = logging.getLogger("campaign.admin")


def create_admin_app(app: App) -> Starlette:
    """The ASGI application for operators: metrics, the full health report, the console."""
    from campaign.interfaces.console import create_console_app

    async def healthz(request: Request) -> Response:
        # The public answer plus the detail: hosts, driver errors, the mail server's reply.
        health = await run_in_threadpool(app.health)
        body = {**health.public(), "detail": health.detail}
        return JSONResponse(body, health.http_status)

    async def metrics(request: Request) -> Response:
        snapshot = await run_in_threadpool(
            reports.operational_snapshot, app.db, app.plan, app.clock.now()
        )
        refusal = await run_in_threadpool(reports.write_refusal, app.db)
        app.metrics.update(**snapshot, refuses_writes=refusal is not None)
        return Response(app.metrics.render(), media_type=CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Mount("/console", app=create_console_app(app)),
        ]
    )


def make_admin_server(app: App, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server of the operators' application. Proxy headers are left to the console,
    which believes them only from FORWARDED_ALLOW_IPS (and needs the proxy's own address)."""
    config = uvicorn.Config(
        create_admin_app(app),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


@dataclass
class SideServices:
    """What runs beside the public pages: the signup email sender and the admin listener."""

    app: App
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def close(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
        self.app.signup_mail.stop()


def start_side_services(app: App) -> SideServices:
    """Start the signup email sender and, unless ADMIN_LISTEN=off, the admin listener."""
    app.signup_mail.start()
    side = SideServices(app)
    listen = app.settings.admin_address
    log.info(
        "/metrics is not on the public listener (it answers 404 there): %s",
        f"see http://{listen[0]}:{listen[1]}/metrics (ADMIN_LISTEN)"
        if listen
        else "ADMIN_LISTEN=off, so it is not served at all",
    )
    if listen is None:
        return side
    side.server = make_admin_server(app, listen[0], listen[1])
    side.thread = threading.Thread(target=_run, args=(side.server,), name="admin-http", daemon=True)
    side.thread.start()
    deadline = time.monotonic() + 10
    while not side.server.started and side.thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the socket is bound (or could not be)
    if not side.server.started:
        # The public pages matter more than the metrics: say so loudly, and serve them.
        log.error(
            "the operators' listener could not start on ADMIN_LISTEN=%s (in use?): /metrics "
            "is not served",
            app.settings.admin_listen,
        )
    return side


def _run(server: uvicorn.Server) -> None:
    try:
        server.run()
    except SystemExit:  # uvicorn's answer to a port it cannot bind: reported by the caller
        return
