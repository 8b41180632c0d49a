"""The Subscribers page: search by a prefix of the address or the name, a page of results at a
time; one subscriber's record (status, consent, enrollments, every delivery with its Message-ID,
the server's reply and time, clicks); and the actions on them: unsubscribe, resend the welcome,
export, and forget (after a confirmation step). Every action is audited."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaign.errors import UnknownSubscriber
from campaign.interfaces.console.kit import (
    HEADERS,
    NavItem,
    actor,
    engine,
    form,
    page,
    redirect,
    render,
)
from campaign.people import directory

NAV = NavItem("Subscribers", "/subscribers", 30)
NOTICES = {
    "unsubscribed": "Unsubscribed: no more email goes to them.",
    "already-left": "They had already left: nothing changed.",
    "resent": "The welcome email was sent again.",
    "resend-failed": "The welcome could not be sent again: see the delivery log below.",
    "forgotten": "Forgotten: everything about them was erased; a hash of the address stays.",
}


def routes() -> list[Route]:
    return [
        Route("/subscribers", page(search), methods=["GET"]),
        Route("/subscribers/{id:int}", page(record), methods=["GET"]),
        Route("/subscribers/{id:int}/unsubscribe", page(unsubscribe), methods=["POST"]),
        Route("/subscribers/{id:int}/resend", page(resend), methods=["POST"]),
        Route("/subscribers/{id:int}/export", page(export), methods=["POST"]),
        Route("/subscribers/{id:int}/forget", page(forget), methods=["GET", "POST"]),
    ]


def search(request: Request) -> Response:
    query = request.query_params.get("q", "")
    cursor = request.query_params.get("cursor") or None
    found = directory.search(engine(request).db, query, cursor)
    return render(
        request,
        "subscribers.html",
        title="Subscribers",
        query=query,
        found=found,
        more=cursor is not None,
        notice=NOTICES.get(request.query_params.get("notice", ""), ""),
    )


def _id(request: Request) -> int:
    subscriber_id: int = request.path_params["id"]
    return subscriber_id


def record(request: Request) -> Response:
    app = engine(request)
    try:
        person = directory.person(app.db, _id(request))
    except UnknownSubscriber:
        return render(request, "refused.html", status=404, problem="No such subscriber (any more).")
    return render(
        request,
        "subscriber.html",
        title=person.subscriber["email"],
        person=person,
        welcome_key=app.plan.steps[0].key,
        notice=NOTICES.get(request.query_params.get("notice", ""), ""),
    )


def unsubscribe(request: Request) -> Response:
    app = engine(request)
    left = directory.unsubscribe(app.db, _id(request), app.clock.now(), actor=actor(request))
    notice = "unsubscribed" if left else "already-left"
    return redirect(request, f"/subscribers/{_id(request)}", notice=notice)


def resend(request: Request) -> Response:
    app = engine(request)
    resent = app.resend_welcome(_id(request), actor=actor(request))
    notice = "resent" if resent.status == "sent" else "resend-failed"
    return redirect(request, f"/subscribers/{_id(request)}", notice=notice)


def export(request: Request) -> Response:
    app = engine(request)
    rows = directory.export(app.db, _id(request), app.clock.now(), actor=actor(request))
    name = f"subscriber-{_id(request)}.json"
    return Response(
        json.dumps(rows, indent=2),
        media_type="application/json",
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
    )


def forget(request: Request) -> Response:
    """GET asks for confirmation (the address typed again); POST with it erases them."""
    app = engine(request)
    try:
        person = directory.person(app.db, _id(request))
    except UnknownSubscriber:
        return render(request, "refused.html", status=404, problem="No such subscriber (any more).")
    email = person.subscriber["email"]
    if request.method == "GET":
        return render(request, "forget.html", title=f"Forget {email}", person=person)
    typed = form(request).get("confirm", "").strip()
    if typed.lower() != email.lower():
        return render(
            request,
            "forget.html",
            status=400,
            title=f"Forget {email}",
            person=person,
            problem="confirm: type the subscriber's address exactly to forget them",
        )
    directory.forget(app.db, _id(request), app.clock.now(), actor=actor(request))
    return redirect(request, "/subscribers", notice="forgotten")
