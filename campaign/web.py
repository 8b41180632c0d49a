"""The public HTTP side: signup page, double opt-in, one-click unsubscribe (RFC 8058), the
ebook, /healthz and /metrics. Handlers parse input, call use cases, and render pages."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from campaign import clicks, reports
from campaign.bootstrap import PLAN_EDIT_REFUSED, App
from campaign.clock import Clock
from campaign.errors import DatabaseError, DatabaseRefusesWrites, InvalidAddress
from campaign.http_guard import HttpLimits, guarded_protocol, listen_socket
from campaign.metrics import CONTENT_TYPE
from campaign.signups import ConfirmationFailed, Visitor
from campaign.tokens import InvalidToken

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
#: what a client is told to wait when the database cannot take its request (seconds).
RETRY_AFTER_SECONDS = 30
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Links carry tokens: never leak them to another site through Referer.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class BodyTooLarge(Exception):
    """The request body is over MAX_BODY_BYTES."""


class BodyTimeout(Exception):
    """The request body did not arrive within HTTP_BODY_TIMEOUT."""


class RateLimiter:
    """At most `limit` events per `window` seconds for each key (a client address)."""

    def __init__(self, limit: int, window: float, clock: Clock) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> int:
        """0 if `key` may go ahead now (and count it), else seconds until it may."""
        now = self.clock.monotonic()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return max(int(events[0] + self.window - now) + 1, 1)
        events.append(now)
        if len(self._events) > 10_000:  # forget idle clients so memory stays flat
            self._events = {k: v for k, v in self._events.items() if v}
        return 0


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    body = b""
    try:
        # A client trickling its body must not hold a connection and a task for ever.
        async with asyncio.timeout(getattr(request.app.state, "body_timeout", None)):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge()
    except TimeoutError as exc:
        raise BodyTimeout() from exc
    return body


def create_app(app: App, pages_dir: Path | str = "templates/web") -> Starlette:
    """The ASGI application for one engine."""
    pages = Environment(
        loader=FileSystemLoader(str(pages_dir)), autoescape=select_autoescape(["html"])
    )
    settings = app.settings
    limiter = RateLimiter(settings.signup_rate_per_minute, 60.0, app.clock)
    common = {
        "plan_name": app.plan.name,
        "sender_name": app.plan.sender_name or settings.sender_name,
        "sender_address": settings.sender_address,
        "ebook_title": app.plan.ebook.title if app.plan.ebook else "",
        "double_opt_in": settings.double_opt_in,
    }

    def page(
        name: str, status: int = 200, headers: dict[str, str] | None = None, **values: Any
    ) -> HTMLResponse:
        html = pages.get_template(name).render(**common, **values)
        return HTMLResponse(
            html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
        )

    def invalid_link(exc: InvalidToken) -> HTMLResponse:
        return page(
            "error.html", 400, heading="This link does not work", message=exc.message,
            signup_link=True,
        )  # fmt: skip

    def visitor(request: Request, source: str = "") -> Visitor:
        return Visitor(
            ip=request.client.host if request.client else "",
            user_agent=request.headers.get("user-agent", ""),
            source_page=source or request.headers.get("referer", ""),
        )

    async def send_welcome_now(enrollment_id: int | None) -> None:
        if enrollment_id is None:
            return
        now = app.clock.now()
        # Sent here, not at the next tick: the box promises the ebook in seconds.
        result = await run_in_threadpool(
            app.dispatcher.run_pass, now, None, only_enrollment=enrollment_id
        )
        if result.error:
            log.warning(
                "welcome for enrollment %s waits for the next pass: %s", enrollment_id, result.error
            )

    async def subscribe_form(request: Request) -> Response:
        return page(
            "subscribe.html",
            email="",
            first_name="",
            error="",
            source=request.headers.get("referer", ""),
        )

    async def subscribe(request: Request) -> Response:
        wants_json = "application/json" in request.headers.get("content-type", "")
        client = request.client.host if request.client else "?"
        wait = limiter.retry_after(client)
        if wait:
            app.metrics.signups.labels(outcome="rate-limited").inc()
            headers = {"Retry-After": str(wait)}
            if wants_json:
                return JSONResponse({"error": "too many signups; try again later"}, 429, headers)
            return page(
                "error.html", 429, headers, heading="Please wait a moment",
                message="Too many signups from your address. Please try again in a minute.",
            )  # fmt: skip
        try:
            fields = _parse_fields(await read_body(request), wants_json)
        except BodyTooLarge:
            return PlainTextResponse("request body too large", 413)
        except ValueError:
            return JSONResponse({"error": "send a JSON object or a form"}, 400)
        email, name = fields.get("email", ""), fields.get("first_name", "")
        if fields.get("website"):
            # The honeypot: only bots fill a field people cannot see. Same answer, no record.
            app.metrics.signups.labels(outcome="honeypot").inc()
            return _signed_up(wants_json, page)
        try:
            result = await run_in_threadpool(
                lambda: app.signups.signup(
                    email=email, first_name=name, timezone=fields.get("timezone"),
                    visitor=visitor(request, fields.get("source", "")), now=app.clock.now(),
                )
            )  # fmt: skip
        except InvalidAddress as exc:
            app.metrics.signups.labels(outcome="invalid").inc()
            message = f"Please enter a valid email address: {exc.message.split(': ', 1)[-1]}"
            if wants_json:
                return JSONResponse({"error": message, "field": "email"}, 422)
            return page("subscribe.html", 422, email=email, first_name=name, error=message,
                        source=fields.get("source", ""))  # fmt: skip
        except ConfirmationFailed as exc:
            log.error("confirmation email failed: %s", exc.__cause__)
            if wants_json:
                return JSONResponse({"error": exc.message}, 503)
            return page("error.html", 503, heading="Please try again", message=exc.message)
        app.metrics.signups.labels(outcome=result.outcome).inc()
        await send_welcome_now(result.enrollment_id)
        return _signed_up(wants_json, page)

    async def confirm_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            app.signups.check_confirmation(token, app.clock.now())
        except InvalidToken as exc:
            return invalid_link(exc)
        return page("confirm.html", token=token)

    async def confirm(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            await read_body(request)
            enrollment = await run_in_threadpool(
                app.signups.confirm, token, visitor(request), app.clock.now()
            )
        except InvalidToken as exc:
            return invalid_link(exc)
        except BodyTooLarge:
            return PlainTextResponse("request body too large", 413)
        app.metrics.confirmations.inc()
        await send_welcome_now(enrollment)
        return page("confirmed.html")

    async def unsubscribe_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            app.signups.check_unsubscribe(token, app.clock.now())
        except InvalidToken as exc:
            return invalid_link(exc)
        # A GET never unsubscribes: link scanners and previews fetch every link.
        return page("unsubscribe.html", token=token)

    async def unsubscribe(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            body = await read_body(request)
            await run_in_threadpool(app.signups.unsubscribe, token, app.clock.now())
        except InvalidToken as exc:
            return invalid_link(exc)
        except BodyTooLarge:
            return PlainTextResponse("request body too large", 413)
        one_click = b"List-Unsubscribe=One-Click" in body
        app.metrics.unsubscribes.labels(method="one-click" if one_click else "page").inc()
        if one_click:
            return PlainTextResponse("unsubscribed\n", headers=SECURITY_HEADERS)
        return page("unsubscribed.html")

    async def click(request: Request) -> Response:
        try:
            target = await run_in_threadpool(
                clicks.follow, app.db, settings.secret_key.get_secret_value(),
                request.path_params["token"], app.clock.now(),
            )  # fmt: skip
        except InvalidToken as exc:
            return invalid_link(exc)
        return RedirectResponse(target, 302, headers={"Referrer-Policy": "no-referrer"})

    async def ebook(request: Request) -> Response:
        book = app.plan.ebook
        if book is None or request.path_params["name"] != book.file.name or not book.file.is_file():
            return PlainTextResponse("not found", 404)
        return FileResponse(book.file, media_type="application/pdf", filename=book.file.name)

    async def healthz(request: Request) -> Response:
        stale_after = max(3 * settings.tick_seconds, 120.0)
        try:
            health = await run_in_threadpool(reports.sending_health, app.db, app.clock.now())
        except Exception as exc:  # any failure to read the database means unhealthy
            return JSONResponse({"status": "error", "database": f"unreachable: {exc}"}, 503)
        age, paused, refusal = health
        paused = paused or app.paused_reason  # this process's scheduler, if it runs here
        if refusal is not None:
            # No pass can record anything, nor write a heartbeat that says so.
            paused = DatabaseRefusesWrites(refusal).message
        ok = age is not None and age <= stale_after and not paused
        refused_edit = app.plan_edit_refused  # the last good plan still sends: 200, degraded
        body = {
            "status": "ok" if ok and not refused_edit else "error" if refusal else "degraded",
            "database": f"refuses writes: {refusal}" if refusal else "ok",
            "sending": f"paused: {paused}" if paused else "ok",
            "plan": {"reason": PLAN_EDIT_REFUSED, "detail": refused_edit} if refused_edit else "ok",
            "last_pass_age_seconds": age,
            "stale_after_seconds": stale_after,
        }
        return JSONResponse(body, 200 if ok else 503)

    async def metrics(request: Request) -> Response:
        snapshot = await run_in_threadpool(
            reports.operational_snapshot, app.db, app.plan, app.clock.now()
        )
        refusal = await run_in_threadpool(reports.write_refusal, app.db)
        app.metrics.update(**snapshot, refuses_writes=refusal is not None)
        return Response(app.metrics.render(), media_type=CONTENT_TYPE)

    async def home(request: Request) -> Response:
        return RedirectResponse("/subscribe", 303)

    routes = [
        Route("/", home),
        Route("/subscribe", subscribe_form, methods=["GET"]),
        Route("/subscribe", subscribe, methods=["POST"]),
        Route("/confirm/{token}", confirm_page, methods=["GET"]),
        Route("/confirm/{token}", confirm, methods=["POST"]),
        Route("/unsubscribe/{token}", unsubscribe_page, methods=["GET"]),
        Route("/unsubscribe/{token}", unsubscribe, methods=["POST"]),
        Route("/ebook/{name}", ebook),
        Route("/c/{token}", click),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        # Gone, read-only after a failover, full, or locked: nothing was stored, so ask the
        # visitor (or the mailbox provider's one-click POST) to come back, never a 500.
        log.warning("%s %s: %s", request.method, request.url.path, getattr(exc, "message", exc))
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if "application/json" in request.headers.get("content-type", ""):
            return JSONResponse({"error": "temporarily unavailable; try again"}, 503, headers)
        return page(
            "error.html", 503, headers, heading="Please try again in a minute",
            message="We could not save that just now. Nothing was changed: please try again.",
        )  # fmt: skip

    async def body_timeout(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("request body too slow", 408, headers={"Connection": "close"})

    web = Starlette(
        routes=routes,
        exception_handlers={DatabaseError: database_unavailable, BodyTimeout: body_timeout},
    )
    web.state.body_timeout = settings.http_body_timeout
    return web


def _parse_fields(body: bytes, as_json: bool) -> dict[str, str]:
    """The submitted fields as strings; ValueError for a body that is neither JSON nor a form."""
    if as_json:
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int | float)}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def _signed_up(wants_json: bool, page: Callable[..., HTMLResponse]) -> Response:
    if wants_json:
        return JSONResponse(
            {"status": "ok", "message": "Check your inbox within 5 minutes."}, status_code=200
        )
    return page("check_inbox.html")


def make_server(app: App, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for `app` (access log off: one line per request is noise at scale),
    whose connections have header and body deadlines and a cap (campaign.http_guard)."""
    config = uvicorn.Config(
        create_app(app, app.settings.pages_dir),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=app.settings.forwarded_allow_ips,
        http=guarded_protocol(HttpLimits.from_settings(app.settings)),
        backlog=HttpLimits.from_settings(app.settings).backlog,
    )
    return uvicorn.Server(config)


def serve_in_thread(app: App, host: str, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """Start serving beside the scheduler; uvicorn leaves signals to the main thread.

    The socket is bound here, in the caller's thread: a busy port raises ListenFailed
    instead of leaving the service running without its pages."""
    sock = listen_socket(host, port, HttpLimits.from_settings(app.settings).backlog)
    server = make_server(app, host, port)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True
    )
    thread.start()
    return server, thread
