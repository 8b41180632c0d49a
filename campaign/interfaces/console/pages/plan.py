"""The Plan page: the month as a timeline, each step with its numbers (sent, bounced, failed,
skipped, clicks, unsubscribes within 48 h), each step's preview at 375 px and 800 px, and the
confirmation email, rendered as the studio (`campaign preview`) renders them."""

from __future__ import annotations

import threading

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from campaign.errors import UnknownStep
from campaign.insights import plan_page
from campaign.interfaces.console.kit import HEADERS, NavItem, engine, page, render

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
_CACHE_LOCK = threading.Lock()


def routes() -> list[Route]:
    return [
        Route("/plan", page(timeline), methods=["GET"]),
        Route("/plan/{key}", page(step), methods=["GET"]),
        Route("/plan/{key}/email.html", page(email), methods=["GET"]),
    ]


def _numbers(request: Request) -> plan_page.NumbersCache:
    """The console's kept plan numbers (one cache per console application)."""
    state = request.app.state
    with _CACHE_LOCK:  # two first requests at once make one cache
        cache = getattr(state, "plan_numbers", None)
        if cache is None:
            cache = state.plan_numbers = plan_page.NumbersCache()
    assert isinstance(cache, plan_page.NumbersCache)  # noqa: S101 (only this module sets it)
    return cache


def timeline(request: Request) -> Response:
    app = engine(request)
    now = app.clock.now()
    found = plan_page.timeline(app.db, app.content, now, _numbers(request))
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
    try:
        composed = plan_page.preview(app.content, key, app.clock.now())
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
    )


def email(request: Request) -> Response:
    app = engine(request)
    try:
        composed = plan_page.preview(app.content, request.path_params["key"], app.clock.now())
    except UnknownStep as exc:
        return render(request, "refused.html", status=404, problem=exc.message)
    return HTMLResponse(composed.rendered.html, headers=EMAIL_HEADERS)
