"""The public pages' templates, rendered with the names every page shows and the security
headers every page carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from campaign.domain.plan import Plan
from campaign.engine import App

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Links carry tokens: never leak them to another site through Referer.
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


class Pages:
    """The templates in `pages_dir`, each rendered into an HTML response."""

    def __init__(self, app: App, pages_dir: Path | str) -> None:
        self._templates = Environment(
            loader=FileSystemLoader(str(pages_dir)), autoescape=select_autoescape(["html"])
        )
        self._app = app

    def _common(self, plan: Plan | None = None) -> dict[str, Any]:
        """The names every page shows, from the plan (the default one unless the page is
        about another) as it is now (a reload may rename it)."""
        plan = plan or self._app.plan  # the plan read once per page
        settings = self._app.settings
        return {
            "plan_id": plan.id,
            "plan_name": plan.name,
            "sender_name": plan.sender_name or settings.sender_name,
            "sender_address": settings.sender_address,
            "ebook_title": plan.ebook.title if plan.ebook else "",
            "double_opt_in": settings.double_opt_in,
        }

    def render(
        self,
        name: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        *,
        for_plan: Plan | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """The page `name` with `values` (about `for_plan`, by default the default plan),
        answered with `status` and the security headers."""
        html = self._templates.get_template(name).render(**self._common(for_plan), **values)
        return HTMLResponse(
            html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
        )
