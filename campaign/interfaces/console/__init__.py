"""The operators' console: server-rendered pages under /console on the operators' listener
(ADMIN_LISTEN), behind a sign-in. No build step: Jinja2 templates (autoescaped), one CSS file.

How to add a page (the one convention):

1. Write `campaign/interfaces/console/pages/<name>.py`. It is found by its name (any module
   there not starting with `_`), so no list needs editing. It exposes
   `routes() -> list[Route]`, paths relative to the console ("/plan", "/plan/{key}"), and,
   to appear in the navigation bar, `NAV = NavItem("Plan", "/plan", order)` (Today 10, Plan 20,
   Subscribers 30, Suppressions 40, Import 50, Audit 60, Webhooks 70).
2. Each endpoint is `page(handler)`, where `handler(request) -> Response` is a plain
   function, run off the event loop: it may call use cases (campaign.people, .insights) on
   `engine(request)` (the Engine) directly. `page` has already refused a request without a
   live session (sent back to /login), read the form and checked its CSRF token on POST (403).
   The operator is `request.state.operator` (`.email`); the form is `form(request)` (text
   fields) and `uploaded(request)` (files); `origin` is `request.state.origin`.
3. Answer with `render(request, "<name>.html", title=..., **context)`: the template extends
   "base.html" (layout, nav) and puts every form's `{{ csrf() }}`; links and actions are
   written `{{ prefix }}/path`, redirects `redirect(request, "/path", **query)` (303): both
   carry the proxy's prefix. Templates receive plain values, never ORM rows.
4. Every change goes through a use case that takes `actor=actor(request)` and runs in
   `operators.audited(db, actor, action, detail, now)`: the audit entry is written in the
   change's own transaction (see campaign.people.suppression_list for an example).
5. Bad input: raise BadInput (its message is shown, 400) or re-render the form with `problem=`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from campaign.engine import App
from campaign.interfaces.console import auth, pages
from campaign.interfaces.console.kit import HEADERS, Console, NavItem, discover, page, redirect

__all__ = ["NavItem", "create_console_app"]

STATIC = Path(__file__).resolve().parent / "static"


def create_console_app(app: App) -> Starlette:
    """The console's ASGI application, to be mounted at /console on the operators' listener."""
    modules = discover(pages)
    console = Console(app)
    console.nav = sorted(
        (m.NAV for m in modules if isinstance(getattr(m, "NAV", None), NavItem)),
        key=lambda item: item.order,
    )
    routes = [
        Route("/", page(_home), methods=["GET"]),
        Route("/static/console.css", _css, methods=["GET"]),
        *auth.routes(),
    ]
    for module in modules:
        routes.extend(module.routes())
    web = Starlette(routes=routes)
    web.state.console = console
    return web


def _home(request: Request) -> Response:
    console: Console = request.app.state.console
    return redirect(request, console.nav[0].path if console.nav else "/audit")


async def _css(request: Request) -> Response:
    return FileResponse(
        STATIC / "console.css",
        media_type="text/css",
        headers={**HEADERS, "Cache-Control": "max-age=300"},
    )
