"""The public endpoints: signup, double opt-in, one-click unsubscribe (RFC 8058), click
redirects, the ebook, the illustrations, each email's web version and /healthz. Each parses
its input, calls a use case and answers a page; errors are left to the table in
campaign.interfaces.web.errors."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

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

from campaign.content.illustrations import IMAGE_NAME
from campaign.delivery.web_version import NoWebVersion, web_version
from campaign.domain.confine import confined, content_roots
from campaign.domain.plan import Plan
from campaign.domain.subscriber_fields import FieldKind, FieldValueError
from campaign.engine import App
from campaign.errors import BadInput, InvalidAddress, UnknownPlan
from campaign.interfaces.web.pages import SECURITY_HEADERS, Pages
from campaign.interfaces.web.rate_limit import RateLimiter
from campaign.interfaces.web.request_input import (
    HONEYPOT,
    body_kind,
    clean_header,
    parse_fields,
    read_body,
)
from campaign.people import clicks
from campaign.people.person_fields import checked_fields
from campaign.people.subscriptions import Visitor

log = logging.getLogger("campaign.web")

#: An email's web version is one person's: kept out of caches and search engines, and its
#: pages may show the images of the site (and https ones) but run no script.
WEB_VERSION_HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' https:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
#: how long mail clients and proxies may keep an illustration: a week (redrawn ones get new bytes,
#: and FileResponse's ETag and Last-Modified let a client check cheaply after that).
IMAGE_CACHE = "public, max-age=604800"

#: a valid signup is answered after at least this long, whatever the address's state.
SIGNUP_ANSWER_FLOOR_SECONDS = 0.03


class PublicEndpoints:
    """The public pages of one engine."""

    def __init__(self, app: App, pages: Pages) -> None:
        self.app = app
        self.pages = pages
        self.limiter = RateLimiter(app.settings.signup_rate_per_minute, 60.0, app.clock)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home),
            Route("/subscribe", self.subscribe_form, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/confirm/{token}", self.confirm_page, methods=["GET"]),
            Route("/confirm/{token}", self.confirm, methods=["POST"]),
            Route("/unsubscribe/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", self.unsubscribe, methods=["POST"]),
            Route("/ebook/{name}", self.ebook),
            Route("/view/{token}/{step}", self.web_version, methods=["GET"]),
            Route("/images/{name}", self.image),
            Route("/c/{token}", self.click),
            Route("/healthz", self.healthz),
            # /metrics is served on ADMIN_LISTEN only: here it answers 404 like any unknown path.
        ]

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/subscribe", 303)

    async def subscribe_form(self, request: Request) -> Response:
        # /subscribe?plan=ID: the box of a page offering another plan (an unknown id: the
        # default plan's form; the POST refuses an id no plan has).
        named = self.app.contents.plan(request.query_params.get("plan", ""))
        return self.pages.render(
            "subscribe.html",
            for_plan=named,
            email="",
            first_name="",
            error="",
            source=request.headers.get("referer", ""),
            questions=questions(named or self.app.plan),  # the fields its plan asks
        )

    async def subscribe(self, request: Request) -> Response:
        app = self.app
        content_type = request.headers.get("content-type", "")
        wants_json = "json" in content_type.lower()
        client = request.client.host if request.client else "?"
        wait = self.limiter.retry_after(client)
        if wait:
            app.metrics.signups.labels(outcome="rate-limited").inc()
            headers = {"Retry-After": str(wait)}
            if wants_json:
                return JSONResponse({"error": "too many signups; try again later"}, 429, headers)
            return self.pages.render(
                "error.html",
                429,
                headers,
                heading="Please wait a moment",
                message="Too many signups from your address. Please try again in a minute.",
            )
        fields = parse_fields(await read_body(request), body_kind(content_type))
        if fields.get(HONEYPOT):
            # The honeypot: only bots fill a field people cannot see. Same answer, no record.
            app.metrics.signups.labels(outcome="honeypot").inc()
            return self._signed_up(wants_json)
        started = time.perf_counter()
        try:
            plan = app.plan_named(fields.get("plan"))
            # Inputs named after the plan's custom fields fill them; any other is ignored.
            custom = checked_fields(plan.declared_fields, fields, unknown="ignore")
            result = await run_in_threadpool(
                lambda: app.signups.signup(
                    email=fields.get("email", ""),
                    first_name=fields.get("first_name", ""),
                    timezone=fields.get("timezone"),
                    visitor=_visitor(request, fields.get("source", "")),
                    now=app.clock.now(),
                    fields=custom,
                    plan_id=plan.id,
                )
            )
        except BadInput as exc:  # said on the form, with what was typed kept
            return self._signup_refused(exc, fields, wants_json)
        app.metrics.signups.labels(outcome=result.outcome).inc()
        # No email in the request: its time (and the relay's health) would tell who is known.
        if result.confirmation_id is not None or result.enrollment_id is not None:
            app.signup_mail.wake(result.enrollment_id)
        # The database does a little more for a new address than for a known one: answer no
        # sooner than a floor, so that what is left of the difference is under it.
        await asyncio.sleep(max(SIGNUP_ANSWER_FLOOR_SECONDS - (time.perf_counter() - started), 0))
        return self._signed_up(wants_json)

    def _signup_refused(self, exc: BadInput, fields: dict[str, str], wants_json: bool) -> Response:
        answer: dict[str, str] = {}
        if isinstance(exc, InvalidAddress):
            self.app.metrics.signups.labels(outcome="invalid").inc()
            answer = {
                "error": f"Please enter a valid email address: {exc.problem}",
                "field": "email",
            }
        elif isinstance(exc, FieldValueError):
            answer = {"error": exc.message, "field": exc.field}
        elif isinstance(exc, UnknownPlan):
            answer = {
                "error": "This signup form names a plan that does not exist.",
                "field": "plan",
            }
        else:  # a first name too long, ...
            answer = {"error": exc.message}
        if wants_json:
            return JSONResponse(answer, 422)
        named = self.app.contents.plan(fields.get("plan", ""))
        asked = questions(named or self.app.plan)
        # Said under the field's own input; under the address for one the page does not ask.
        field = answer.get("field", "")
        return self.pages.render(
            "subscribe.html",
            422,
            for_plan=named,
            email=fields.get("email", ""),
            first_name=fields.get("first_name", ""),
            error=answer["error"],
            error_field=field if field in {q["name"] for q in asked} else "",
            source=fields.get("source", ""),
            questions=asked,
            answers={q["name"]: fields[q["name"]] for q in asked if q["name"] in fields},
        )

    def _signed_up(self, wants_json: bool) -> Response:
        if wants_json:
            return JSONResponse(
                {"status": "ok", "message": "Check your inbox within 5 minutes."}, status_code=200
            )
        return self.pages.render("check_inbox.html")

    async def confirm_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        await run_in_threadpool(
            self.app.signups.check_confirmation_link, token, self.app.clock.now()
        )
        return self.pages.render("confirm.html", token=token)

    async def confirm(self, request: Request) -> Response:
        app = self.app
        await read_body(request)
        enrollment = await run_in_threadpool(
            app.signups.confirm, request.path_params["token"], _visitor(request), app.clock.now()
        )
        app.metrics.confirmations.inc()
        await self._send_welcome_now(enrollment)
        return self.pages.render("confirmed.html")

    async def _send_welcome_now(self, enrollment_id: int | None) -> None:
        if enrollment_id is None:
            return
        now = self.app.clock.now()
        # Sent here, not at the next tick: the box promises the ebook in seconds.
        result = await run_in_threadpool(
            self.app.dispatcher.run_pass, now, None, only_enrollment=enrollment_id
        )
        if result.error:
            log.warning(
                "welcome for enrollment %s waits for the next pass: %s", enrollment_id, result.error
            )

    async def unsubscribe_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        _, plan_id = self.app.signups.unsubscribe_link(token, self.app.clock.now())
        # A footer link of one of several plans: the page offers to leave that plan, or all.
        plan = None if plan_id is None else self.app.contents.plan(plan_id)
        # A GET never unsubscribes: link scanners and previews fetch every link.
        return self.pages.render(
            "unsubscribe.html", for_plan=plan, token=token, leaves_plan=plan is not None
        )

    async def unsubscribe(self, request: Request) -> Response:
        app = self.app
        body = await read_body(request)
        one_click = b"List-Unsubscribe=One-Click" in body
        # RFC 8058's POST (a mail client's "unsubscribe" button) always leaves everything:
        # the person asked this sender to stop. The page's second button does too. Read
        # leniently: any body a client posts here still unsubscribes.
        everything = one_click or b"scope=all" in body
        token = request.path_params["token"]
        _, plan_id = app.signups.unsubscribe_link(token, app.clock.now())
        await run_in_threadpool(
            lambda: app.signups.unsubscribe(token, app.clock.now(), everything=everything)
        )
        app.metrics.unsubscribes.labels(method="one-click" if one_click else "page").inc()
        if one_click:
            return PlainTextResponse("unsubscribed\n", headers=SECURITY_HEADERS)
        plan = None if everything or plan_id is None else app.contents.plan(plan_id)
        return self.pages.render("unsubscribed.html", for_plan=plan, left_plan=plan is not None)

    async def click(self, request: Request) -> Response:
        target = await run_in_threadpool(
            clicks.follow,
            self.app.db,
            self.app.settings.secret_key.get_secret_value(),
            request.path_params["token"],
            self.app.clock.now(),
        )
        return RedirectResponse(target, 302, headers={"Referrer-Policy": "no-referrer"})

    async def ebook(self, request: Request) -> Response:
        # The plans read once: a reload meanwhile must not pair one plan's book with another's.
        name = request.path_params["name"]
        plan = next(
            (p for p in self.app.catalog if p.ebook is not None and p.ebook.file.name == name),
            None,
        )
        book = None if plan is None else plan.ebook
        if plan is None or book is None:
            return PlainTextResponse("not found", 404)
        # Checked again here: a symlink changed since the plan loaded must not publish a file.
        real = confined(book.file, plan.content_roots)
        if real is None or not real.is_file():
            return PlainTextResponse("not found", 404)
        return FileResponse(real, media_type="application/pdf", filename=book.file.name)

    async def web_version(self, request: Request) -> Response:
        """An email as its subscriber got it, from the signed link in its header: private,
        never cached or indexed, and without scripts. Any link that is not one: 404."""
        app = self.app
        try:
            rendered = await run_in_threadpool(
                web_version,
                app.db,
                app.contents,
                app.settings.secret_key.get_secret_value(),
                request.path_params["token"],
                request.path_params["step"],
                app.clock.now(),
            )
        except NoWebVersion:
            return self.pages.render(
                "error.html",
                404,
                WEB_VERSION_HEADERS,
                heading="This page does not exist",
                message="The link may be incomplete, or its subscription was erased.",
            )
        return HTMLResponse(rendered.html, headers={**SECURITY_HEADERS, **WEB_VERSION_HEADERS})

    async def image(self, request: Request) -> Response:
        """An exercise illustration the emails show: a PNG or SVG of the templates folder's
        images/, cached by readers' mail clients for a week."""
        name = request.path_params["name"]
        if not IMAGE_NAME.match(name):
            return PlainTextResponse("not found", 404)
        folder = self.app.settings.templates_dir / "images"
        # Resolved here, per request: a symlink in the folder must not publish another file.
        real = confined(folder / name, content_roots(folder))
        if real is None or not real.is_file():
            return PlainTextResponse("not found", 404)
        headers = {"Cache-Control": IMAGE_CACHE, "X-Content-Type-Options": "nosniff"}
        if name.endswith(".svg"):
            # An SVG opened on its own is a document: it may not run script or load anything.
            headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
            return FileResponse(real, media_type="image/svg+xml", headers=headers)
        return FileResponse(real, media_type="image/png", headers=headers)

    async def healthz(self, request: Request) -> Response:
        # Anyone may ask: the status and a reason code only. The detail (database host,
        # driver errors, the mail server) is for operators, on ADMIN_LISTEN.
        health = await run_in_threadpool(self.app.health)
        return JSONResponse(health.public(), health.http_status)


def questions(plan: Plan) -> list[dict[str, Any]]:
    """The plan's custom fields marked `ask: true`, as the signup page shows them: each an
    input named as the field (a choice or yes/no as a list, a number with its bounds)."""
    shown = []
    for field in plan.fields:
        if not field.ask:
            continue
        options: list[tuple[str, str]] = []
        default = str(field.default)
        if field.kind == FieldKind.CHOICE:
            options = [(choice, choice) for choice in field.choices]
        elif field.kind == FieldKind.BOOLEAN:
            options = [("yes", "Yes"), ("no", "No")]
            default = "yes" if field.default else "no"
        inputs = {FieldKind.NUMBER: "number", FieldKind.DATE: "date"}
        shown.append(
            {
                "name": field.name,
                "label": field.label,
                "kind": str(field.kind),
                "input": inputs.get(field.kind, "text"),
                "options": options,
                "default": default,
                "min": field.min,
                "max": field.max,
                "max_length": field.max_length if field.kind == FieldKind.TEXT else None,
            }
        )
    return shown


def _visitor(request: Request, source: str = "") -> Visitor:
    return Visitor(
        ip=request.client.host if request.client else "",
        user_agent=clean_header(request.headers.get("user-agent", "")),
        source_page=clean_header(source or request.headers.get("referer", "")),
    )
