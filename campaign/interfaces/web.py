"""The public HTTP side: signup page, double opt-in, one-click unsubscribe (RFC 8058), the
ebook and /healthz (/metrics is on the operators' listener, campaign.admin). Handlers parse
input, call use cases, and render pages."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

from campaign.clock import Clock
from campaign.domain.confine import confined
from campaign.domain.tokens import InvalidToken
from campaign.engine import App
from campaign.errors import BadInput, DatabaseError, InvalidAddress
from campaign.interfaces.http_guard import HttpLimits, guarded_protocol, listen_socket
from campaign.interfaces.web_input import BadRequest, body_kind, clean_header, parse_fields
from campaign.people import clicks
from campaign.people.subscriptions import Visitor

log = logging.getLogger("campaign.web")

MAX_BODY_BYTES = 16 * 1024
#: a valid signup is answered after at least this long, whatever the address's state.
SIGNUP_ANSWER_FLOOR_SECONDS = 0.03
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
    """At most `limit` events per `window` seconds for each key (a client address).

    Memory and work stay bounded however many clients come: each key keeps at most `limit`
    instants, keys are kept in least-recently-seen order, idle ones are dropped from the front
    as their window ends, and beyond `capacity` keys the least recently seen is forgotten
    (it may then start afresh, as after a restart). O(1) amortised per request.
    """

    def __init__(self, limit: int, window: float, clock: Clock, capacity: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.capacity = capacity
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def retry_after(self, key: str) -> int:
        """0 if `key` may go ahead now (and count it), else seconds until it may."""
        now = self.clock.monotonic()
        self._forget_idle(now)
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque(maxlen=self.limit)
            if len(self._events) > self.capacity:
                self._events.popitem(last=False)
        else:
            self._events.move_to_end(key)
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return max(int(events[0] + self.window - now) + 1, 1)
        events.append(now)
        return 0

    def _forget_idle(self, now: float) -> None:
        # The front key is the least recently seen: once its newest event is out of the
        # window, nothing it did counts any more. Each key is dropped once: amortised O(1).
        while self._events:
            events = next(iter(self._events.values()))
            if events and events[-1] > now - self.window:
                return
            self._events.popitem(last=False)


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
            "error.html",
            400,
            heading="This link does not work",
            message=exc.message,
            signup_link=True,
        )

    def visitor(request: Request, source: str = "") -> Visitor:
        return Visitor(
            ip=request.client.host if request.client else "",
            user_agent=clean_header(request.headers.get("user-agent", "")),
            source_page=clean_header(source or request.headers.get("referer", "")),
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
        content_type = request.headers.get("content-type", "")
        wants_json = "json" in content_type.lower()
        client = request.client.host if request.client else "?"
        wait = limiter.retry_after(client)
        if wait:
            app.metrics.signups.labels(outcome="rate-limited").inc()
            headers = {"Retry-After": str(wait)}
            if wants_json:
                return JSONResponse({"error": "too many signups; try again later"}, 429, headers)
            return page(
                "error.html",
                429,
                headers,
                heading="Please wait a moment",
                message="Too many signups from your address. Please try again in a minute.",
            )
        try:
            fields = parse_fields(await read_body(request), body_kind(content_type))
        except BodyTooLarge:
            return PlainTextResponse("request body too large", 413)
        email, name = fields.get("email", ""), fields.get("first_name", "")
        if fields.get("website"):
            # The honeypot: only bots fill a field people cannot see. Same answer, no record.
            app.metrics.signups.labels(outcome="honeypot").inc()
            return _signed_up(wants_json, page)
        started = time.perf_counter()
        try:
            result = await run_in_threadpool(
                lambda: app.signups.signup(
                    email=email,
                    first_name=name,
                    timezone=fields.get("timezone"),
                    visitor=visitor(request, fields.get("source", "")),
                    now=app.clock.now(),
                )
            )
        except InvalidAddress as exc:
            app.metrics.signups.labels(outcome="invalid").inc()
            message = f"Please enter a valid email address: {exc.message.split(': ', 1)[-1]}"
            if wants_json:
                return JSONResponse({"error": message, "field": "email"}, 422)
            return page(
                "subscribe.html",
                422,
                email=email,
                first_name=name,
                error=message,
                source=fields.get("source", ""),
            )
        except BadInput as exc:  # a first name too long, ...: said on the form, kept as typed
            if wants_json:
                return JSONResponse({"error": exc.message}, 422)
            return page(
                "subscribe.html",
                422,
                email=email,
                first_name=name,
                error=exc.message,
                source=fields.get("source", ""),
            )
        app.metrics.signups.labels(outcome=result.outcome).inc()
        # No email in the request: its time (and the relay's health) would tell who is known.
        if result.confirmation_id is not None or result.enrollment_id is not None:
            app.signup_mail.wake(result.enrollment_id)
        # The database does a little more for a new address than for a known one: answer no
        # sooner than a floor, so that what is left of the difference is under it.
        await asyncio.sleep(max(SIGNUP_ANSWER_FLOOR_SECONDS - (time.perf_counter() - started), 0))
        return _signed_up(wants_json, page)

    async def confirm_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            await run_in_threadpool(app.signups.check_confirmation_link, token, app.clock.now())
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
                clicks.follow,
                app.db,
                settings.secret_key.get_secret_value(),
                request.path_params["token"],
                app.clock.now(),
            )
        except InvalidToken as exc:
            return invalid_link(exc)
        return RedirectResponse(target, 302, headers={"Referrer-Policy": "no-referrer"})

    async def ebook(request: Request) -> Response:
        book = app.plan.ebook
        if book is None or request.path_params["name"] != book.file.name:
            return PlainTextResponse("not found", 404)
        # Checked again here: a symlink changed since the plan loaded must not publish a file.
        real = confined(book.file, app.plan.content_roots)
        if real is None or not real.is_file():
            return PlainTextResponse("not found", 404)
        return FileResponse(real, media_type="application/pdf", filename=book.file.name)

    async def healthz(request: Request) -> Response:
        # Anyone may ask: the status and a reason code only. The detail (database host,
        # driver errors, the mail server) is for operators, on ADMIN_LISTEN.
        health = await run_in_threadpool(app.health)
        return JSONResponse(health.public(), health.http_status)

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
        # /metrics is served on ADMIN_LISTEN only: here it answers 404 like any unknown path.
    ]

    async def database_unavailable(request: Request, exc: Exception) -> Response:
        # Gone, read-only after a failover, full, or locked: nothing was stored, so ask the
        # visitor (or the mailbox provider's one-click POST) to come back, never a 500.
        log.warning("%s %s: %s", request.method, request.url.path, getattr(exc, "message", exc))
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if "application/json" in request.headers.get("content-type", ""):
            return JSONResponse({"error": "temporarily unavailable; try again"}, 503, headers)
        return page(
            "error.html",
            503,
            headers,
            heading="Please try again in a minute",
            message="We could not save that just now. Nothing was changed: please try again.",
        )

    async def bad_input(request: Request, exc: Exception) -> Response:
        # The visitor's own mistake (or an attacker's): say what it is, in words, not code.
        status = exc.status if isinstance(exc, BadRequest) else 422
        message = exc.message if isinstance(exc, BadInput) else "the request is not valid"
        if "json" in request.headers.get("content-type", "").lower():
            return JSONResponse({"error": message}, status)
        return page("error.html", status, heading="That did not work", message=message)

    async def body_timeout(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("request body too slow", 408, headers={"Connection": "close"})

    # Errors to HTTP statuses, in one table: bad input 4xx, a database that cannot take the
    # request 503 with Retry-After. Anything else is a bug: a bare 500, never its text.
    web = Starlette(
        routes=routes,
        exception_handlers={
            BadInput: bad_input,
            DatabaseError: database_unavailable,
            BodyTimeout: body_timeout,
        },
    )
    web.state.body_timeout = settings.http_body_timeout
    return web


def _signed_up(wants_json: bool, page: Callable[..., HTMLResponse]) -> Response:
    if wants_json:
        return JSONResponse(
            {"status": "ok", "message": "Check your inbox within 5 minutes."}, status_code=200
        )
    return page("check_inbox.html")


def make_server(app: App, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for `app` (access log off: one line per request is noise at scale),
    whose connections have header and body deadlines and a cap (campaign.http_guard)."""
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
