"""The Audit page: every change made by an operator, newest first, who, what and when."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaign.interfaces.console.kit import NavItem, engine, page, render
from campaign.people import operators

NAV = NavItem("Audit", "/audit", 60)
PER_PAGE = 50


def routes() -> list[Route]:
    return [Route("/audit", page(audit), methods=["GET"])]


def audit(request: Request) -> Response:
    before = request.query_params.get("before", "")
    log = operators.audit_log(
        engine(request).db,
        before_id=int(before) if before.isdigit() else None,
        limit=PER_PAGE,
    )
    return render(request, "audit.html", title="Audit", log=log)
