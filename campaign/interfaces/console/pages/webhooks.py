"""The Webhooks page: outgoing webhooks' endpoints with their messages pending, failed and
delivered and their last attempt; one added (its signing secret shown once, on the answer to
the form, never again), disabled, enabled, removed (after a confirmation step), its failed
events retried; one endpoint's recent attempts. Every change is audited."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaign.delivery.webhooks import UnknownEndpoint
from campaign.domain.webhooks import EVENT_TYPES
from campaign.errors import BadInput
from campaign.interfaces.console.kit import NavItem, actor, engine, form, page, redirect, render

NAV = NavItem("Webhooks", "/webhooks", 70)
#: what a redirect after a change says (by code).
DONE = {
    "disabled": "Endpoint disabled: its events are kept until it is enabled again.",
    "enabled": "Endpoint enabled: the events kept meanwhile go out first.",
    "removed": "Endpoint removed, with the events that were waiting for it.",
    "retried": "Failed events queued again, starting now.",
}
#: a checkbox per event type is named this prefix + the type.
EVENT_FIELD = "event:"
ATTEMPTS_SHOWN = 50


def routes() -> list[Route]:
    return [
        Route("/webhooks", page(listing), methods=["GET"]),
        Route("/webhooks", page(add), methods=["POST"]),
        Route("/webhooks/{id:int}", page(endpoint), methods=["GET"]),
        Route("/webhooks/{id:int}/disable", page(disable), methods=["POST"]),
        Route("/webhooks/{id:int}/enable", page(enable), methods=["POST"]),
        Route("/webhooks/{id:int}/retry", page(retry), methods=["POST"]),
        Route("/webhooks/{id:int}/remove", page(remove), methods=["GET", "POST"]),
    ]


def _id(request: Request) -> int:
    endpoint_id: int = request.path_params["id"]
    return endpoint_id


def listing(request: Request, *, problem: str = "", status: int = 200, **shown: object) -> Response:
    webhooks = engine(request).webhooks
    rows = webhooks.endpoints()
    last = {row.id: next(iter(webhooks.attempts(row.id, 1)), None) for row in rows}
    typed = form(request)
    checked = [name for name in EVENT_TYPES if typed.get(EVENT_FIELD + name)]
    return render(
        request,
        "webhooks.html",
        status=status,
        title="Webhooks",
        endpoints=rows,
        last=last,
        event_types=EVENT_TYPES,
        event_field=EVENT_FIELD,
        checked=checked if problem else [],
        typed=typed if problem else {},
        notice=DONE.get(request.query_params.get("done", ""), ""),
        problem=problem,
        **shown,
    )


def add(request: Request) -> Response:
    """Add an endpoint; the answer shows its secret, this once (nothing keeps it to show later)."""
    fields = form(request)
    events = [name for name in EVENT_TYPES if fields.get(EVENT_FIELD + name)]
    try:
        added = engine(request).webhooks.add(
            fields.get("url", "").strip(), events or None, actor=actor(request)
        )
    except BadInput as exc:
        return listing(request, problem=exc.message, status=400)
    return listing(request, added=added)


def _find(request: Request) -> tuple[object, Response | None]:
    found = next((e for e in engine(request).webhooks.endpoints() if e.id == _id(request)), None)
    if found is None:
        return None, render(
            request, "refused.html", status=404, problem="No such endpoint (removed?)."
        )
    return found, None


def endpoint(request: Request) -> Response:
    found, missing = _find(request)
    if missing is not None:
        return missing
    attempts = engine(request).webhooks.attempts(_id(request), ATTEMPTS_SHOWN)
    return render(
        request,
        "webhook.html",
        title=f"Webhook endpoint {_id(request)}",
        endpoint=found,
        attempts=attempts,
        notice=DONE.get(request.query_params.get("done", ""), ""),
    )


def _gone(request: Request) -> Response:
    return render(request, "refused.html", status=404, problem="No such endpoint (removed?).")


def disable(request: Request) -> Response:
    reason = form(request).get("reason", "").strip()[:200] or "disabled by an operator"
    try:
        engine(request).webhooks.disable(_id(request), reason, actor=actor(request))
    except UnknownEndpoint:
        return _gone(request)
    return redirect(request, f"/webhooks/{_id(request)}", done="disabled")


def enable(request: Request) -> Response:
    try:
        engine(request).webhooks.enable(_id(request), actor=actor(request))
    except UnknownEndpoint:
        return _gone(request)
    return redirect(request, f"/webhooks/{_id(request)}", done="enabled")


def retry(request: Request) -> Response:
    try:
        engine(request).webhooks.retry_failed(_id(request), actor=actor(request))
    except UnknownEndpoint:
        return _gone(request)
    return redirect(request, f"/webhooks/{_id(request)}", done="retried")


def remove(request: Request) -> Response:
    """GET asks for confirmation; POST with `confirm=yes` deletes the endpoint."""
    found, missing = _find(request)
    if missing is not None:
        return missing
    if request.method == "GET" or form(request).get("confirm") != "yes":
        return render(
            request, "webhook_remove.html", title=f"Remove endpoint {_id(request)}", endpoint=found
        )
    try:
        engine(request).webhooks.remove(_id(request), actor=actor(request))
    except UnknownEndpoint:
        return _gone(request)
    return redirect(request, "/webhooks", done="removed")
