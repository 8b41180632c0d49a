"""The Suppressions page: the addresses never mailed, searched and paged, with each one's
reason, source and note; an address added by hand, one cleared (both audited)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaign.errors import BadInput
from campaign.interfaces.console.kit import NavItem, actor, engine, form, page, redirect, render
from campaign.people import suppression_list

NAV = NavItem("Suppressions", "/suppressions", 40)
#: what a redirect after a change says (by code: the query string is the browser's to edit).
DONE = {"added": "Suppressed.", "cleared": "Suppression cleared."}


def routes() -> list[Route]:
    return [
        Route("/suppressions", page(listing), methods=["GET"]),
        Route("/suppressions", page(add), methods=["POST"]),
        Route("/suppressions/clear", page(clear), methods=["POST"]),
    ]


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and 0 < len(text) < 7 else 1


def listing(request: Request, *, problem: str = "", status: int = 200) -> Response:
    query = request.query_params
    found = suppression_list.search(
        engine(request).db, query.get("q", ""), page=_page_number(query.get("page", ""))
    )
    return render(
        request,
        "suppressions.html",
        status=status,
        title="Suppressions",
        found=found,
        notice=DONE.get(query.get("done", ""), ""),
        problem=problem,
        typed=form(request),
    )


def add(request: Request) -> Response:
    fields = form(request)
    app = engine(request)
    try:
        address = suppression_list.add(
            app.db,
            actor=actor(request),
            email=fields.get("email", ""),
            note=fields.get("note", ""),
            now=app.clock.now(),
        )
    except BadInput as exc:
        return listing(request, problem=exc.message, status=400)
    return redirect(request, "/suppressions", q=address, done="added")


def clear(request: Request) -> Response:
    fields = form(request)
    app = engine(request)
    suppression_list.clear(
        app.db,
        actor=actor(request),
        key=fields.get("key", ""),
        address=fields.get("q", ""),
        now=app.clock.now(),
    )
    return redirect(request, "/suppressions", q=fields.get("q", ""), done="cleared")
