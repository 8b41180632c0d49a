"""The Plan page: the month as a timeline, each step with its numbers (sent, bounced, failed,
skipped, clicks, unsubscribes within 48 h), each step's preview at 375 px and 800 px, and the
confirmation email, rendered as the studio (`campaign preview`) renders them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from campaign.errors import UnknownStep
from campaign.insights import plan_page
from campaign.interfaces.console.kit import HEADERS, NavItem, engine, kept, page, render

NAV = NavItem("Plan", "/plan", 20)
#: The email itself, shown in the page's iframes: no script, no form, nothing fetched but
#: images, and framed by the console only.
EMAIL_HEADERS = {
    **HEADERS,
    "Content-Security-Policy": (
        "sandbox; default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
        "frame-ancestors 'self'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}


def routes() -> list[Route]:
    return [
        Route("/plan", page(timeline), methods=["GET"]),
        Route("/plan/{key}", page(step), methods=["GET"]),
        Route("/plan/{key}/email.html", page(email), methods=["GET"]),
    ]


def timeline(request: Request) -> Response:
    app = engine(request)
    now = app.clock.now()
    found = plan_page.timeline(
        app.db, app.content, now, kept(request, "plan numbers", plan_page.NumbersCache)
    )
    return render(
        request,
        "plan.html",
        title="Plan",
        timeline=found,
        age=int((now - found.counted_at).total_seconds()) if found.counted_at else None,
    )


def step(request: Request) -> Response:
    app = engine(request)
    key = request.path_params["key"]
    variant = request.query_params.get("variant")
    try:
        composed = plan_page.preview(app.content, key, app.clock.now(), variant)
    except UnknownStep as exc:
        return render(request, "refused.html", status=404, problem=exc.message)
    headers = composed.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    found = app.plan.step_by_key(key)
    return render(
        request,
        "plan_step.html",
        title=f"Plan: {key}",
        key=key,
        day=found.day if found else None,
        composed=composed,
        headers=headers,
        variant=variant if found and variant in found.variant_names else None,
    )


def email(request: Request) -> Response:
    app = engine(request)
    try:
        composed = plan_page.preview(
            app.content,
            request.path_params["key"],
            app.clock.now(),
            request.query_params.get("variant"),
        )
    except UnknownStep as exc:
        return render(request, "refused.html", status=404, problem=exc.message)
    return HTMLResponse(composed.rendered.html, headers=EMAIL_HEADERS)
