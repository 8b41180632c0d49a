"""The Plan page: the month as a timeline, each step with its numbers (sent, bounced, failed,
skipped, clicks, unsubscribes within 48 h), each step's preview at 375 px and 800 px, and the
confirmation email, rendered as the studio (`campaign preview`) renders them."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from campaign.content.snapshot import Content
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


def _chosen(request: Request) -> Content:
    """The plan `?plan=ID` names (a folder of several plans), else the default plan;
    UnknownStep (a 404) for an id no running plan has."""
    app, plan_id = engine(request), request.query_params.get("plan")
    content = app.contents.of(plan_id) if plan_id else app.content
    if content is None:
        raise UnknownStep(f"no plan has id {plan_id!r}")
    return content


def _plan_param(request: Request, content: Content) -> str:
    """`plan=ID` for the links of a plan other than the default one, else empty."""
    return "" if content is engine(request).content else urlencode({"plan": content.plan.id})


def timeline(request: Request) -> Response:
    app = engine(request)
    now = app.clock.now()
    try:
        content = _chosen(request)
    except UnknownStep as exc:
        return render(request, "refused.html", status=404, problem=exc.message)
    found = plan_page.timeline(
        app.db, content, now, kept(request, "plan numbers", plan_page.NumbersCache)
    )
    plans = [(c.plan.id, c.plan.name, urlencode({"plan": c.plan.id})) for c in app.contents]
    return render(
        request,
        "plan.html",
        title="Plan",
        timeline=found,
        age=int((now - found.counted_at).total_seconds()) if found.counted_at else None,
        plans=plans if len(plans) > 1 else [],
        plan_param=_plan_param(request, content),
    )


def step(request: Request) -> Response:
    app = engine(request)
    key = request.path_params["key"]
    variant = request.query_params.get("variant")
    try:
        content = _chosen(request)
        composed = plan_page.preview(content, key, app.clock.now(), variant)
    except UnknownStep as exc:
        return render(request, "refused.html", status=404, problem=exc.message)
    headers = composed.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    found = content.plan.step_by_key(key)
    return render(
        request,
        "plan_step.html",
        title=f"Plan: {key}",
        key=key,
        day=found.day if found else None,
        composed=composed,
        headers=headers,
        variant=variant if found and variant in found.variant_names else None,
        plan_param=_plan_param(request, content),
    )


def email(request: Request) -> Response:
    app = engine(request)
    try:
        composed = plan_page.preview(
            _chosen(request),
            request.path_params["key"],
            app.clock.now(),
            request.query_params.get("variant"),
        )
    except UnknownStep as exc:
        return render(request, "refused.html", status=404, problem=exc.message)
    return HTMLResponse(composed.rendered.html, headers=EMAIL_HEADERS)
