"""`campaign preview --serve`: the month at a glance for marketers, reloading on every edit.

Every request loads the plan and templates afresh, so what the page shows is what is on
disk; a broken edit shows its file:line problems instead of the emails.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from campaign.clock import FixedClock
from campaign.content.compose import Composed, Recipient
from campaign.content.plan_check import check_plan
from campaign.content.snapshot import Content
from campaign.domain.plan import CONFIRMATION_INDEX, Step
from campaign.engine import App, Engine
from campaign.errors import CampaignError, PlanError
from campaign.insights import simulation
from campaign.settings import Settings

SAMPLE = Recipient(0, "ann@example.com", "Ann")
UTC = ZoneInfo("UTC")
#: where the double opt-in email is shown: apart from /step/KEY, which any step key may take.
CONFIRMATION_PATH = "/confirmation"

_STYLE = """
  body { font: 16px/1.5 Arial, sans-serif; color: #1f2933; margin: 0; background: #f3f5f7; }
  header { background: #0f5257; color: #fff; padding: .8rem 1.5rem; }
  header h1 { margin: 0; font: bold 1.3rem Georgia, serif; }
  main { padding: 1rem 1.5rem; }
  ol.timeline { list-style: none; padding: 0; margin: 0; }
  ol.timeline li { background: #fff; margin: 0 0 .5rem; border-radius: 6px; }
  ol.timeline a { display: grid; grid-template-columns: 4.5rem 12rem 1fr; gap: .75rem;
                  padding: .6rem .9rem; color: inherit; text-decoration: none; }
  ol.timeline a:hover, ol.timeline a:focus { background: #e4f1ef; }
  .day { font-weight: bold; color: #0f5257; } .when { color: #4a5560; }
  .example { display: block; font-size: .9rem; } .rule { color: #4a5560; }
  .subject { font-weight: bold; display: block; } .pre { color: #4a5560; display: block; }
  .problems { background: #fff4f4; border-left: 6px solid #a4161a; padding: 1rem; }
  .problems pre { white-space: pre-wrap; font-size: .95rem; }
  .frames { display: flex; gap: 1.5rem; flex-wrap: wrap; align-items: flex-start; }
  iframe { background: #fff; border: 1px solid #c4ccd4; height: 900px; }
  pre.part { background: #fff; padding: 1rem; white-space: pre-wrap; max-width: 60rem; }
  ul.plans { list-style: none; padding: 0; display: flex; gap: 1rem; flex-wrap: wrap; }
  ul.plans a[aria-current] { font-weight: bold; color: #1f2933; }
"""

_RELOAD = """<script>
  new EventSource("/events").onmessage = () => location.reload();
</script>"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1></header><main>{body}</main>{_RELOAD}</body></html>"
    )


def _problems(exc: CampaignError) -> HTMLResponse:
    lines = [str(p) for p in exc.problems] if isinstance(exc, PlanError) else [exc.message]
    listing = html.escape("\n".join(lines))
    return _page(
        "Preview: the plan has problems",
        f'<section class="problems" role="alert"><h2>Fix these and save: the page reloads '
        f"by itself</h2><pre>{listing}</pre></section>",
    )


def create_studio(settings: Settings, now: Callable[[], datetime]) -> Starlette:
    """The preview app for the plan and templates that `settings` point at."""

    def load() -> App:
        check_plan(settings)  # raises PlanError with every file:line problem
        return Engine.from_settings(settings, clock=FixedClock(now()))

    def compose(app: App, content: Content, step: Step) -> Composed:
        if step.index == CONFIRMATION_INDEX:
            # as the sender builds it: no first name (it is unconfirmed input), a sample link.
            return content.composer.compose_confirmation(
                Recipient(0, SAMPLE.email, ""),
                0,
                message_id="<preview@example.com>",
                now=app.clock.now(),
            )
        return content.composer.compose(
            step, SAMPLE, message_id="<preview@example.com>", now=app.clock.now()
        )

    def find(content: Content, key: str | None) -> Step | None:
        """A step by key or day; None: the double opt-in email."""
        return content.plan.confirmation if key is None else content.plan.step(key)

    def chosen(app: App, plan_id: str | None) -> Content | None:
        """The plan `?plan=ID` names (a folder of several plans), else the default plan."""
        return app.content if not plan_id else app.contents.of(plan_id)

    async def fresh(render: Callable[[App], Response]) -> Response:
        """A page rendered from the plan as it is on disk now; its problems if it is broken."""

        def work() -> Response:
            app = load()
            try:
                return render(app)
            finally:
                app.close()

        try:
            return await run_in_threadpool(work)
        except CampaignError as exc:
            return _problems(exc)

    def timeline_page(app: App, plan_id: str | None) -> Response:
        content = chosen(app, plan_id)
        if content is None:
            return PlainTextResponse("no such plan", 404)
        items = []
        plan = content.plan
        first = [plan.confirmation] if plan.confirmation else []
        # For a signup now, in UTC: the dates send_days give, each moved step marked.
        dated = {item.step.key: item for item in simulation.dates(plan, app.clock.now(), UTC)}
        for step in [*first, *plan.steps]:
            rendered = compose(app, content, step).rendered
            when = html.escape(simulation.when_local(plan, step))
            if step.index != CONFIRMATION_INDEX and step.day != 0:
                item = dated[step.key]
                example = f"{simulation.short_date(item.local.date())}{simulation.moved_note(item)}"
                when += f'<span class="example">{html.escape(example)}</span>'
            items.append(
                f'<li><a href="{_link(_path(step), plan_id)}"><span class="day">{_day(step)}</span>'
                f'<span class="when">{when}</span><span><span class="subject">'
                f'{html.escape(rendered.subject)}</span><span class="pre">'
                f"{html.escape(rendered.preheader)}</span></span></a></li>"
            )
            for name in step.variant_names[1:]:  # the first is the step's own subject
                other = compose(app, content, step.with_variant(name)).rendered
                items.append(
                    f'<li class="variant"><a href="{_link(_path(step), plan_id, name)}">'
                    f'<span class="day">variant {name}</span><span class="when">{when}</span>'
                    f'<span><span class="subject">{html.escape(other.subject)}</span>'
                    f'<span class="pre">{html.escape(other.preheader)}</span></span></a></li>'
                )
        rule = html.escape(simulation.sending_rule(plan))
        return _page(
            f"Preview: {plan.name}",
            _plans_nav(app, plan.id)
            + f'<p class="rule">{rule} Dates are for someone signing up now, in UTC.</p>'
            f'<ol class="timeline">{"".join(items)}</ol>',
        )

    def step_page(
        app: App, key: str | None, plan_id: str | None, variant: str | None = None
    ) -> Response:
        content = chosen(app, plan_id)
        step = None if content is None else find(content, key)
        if content is None or step is None:
            return PlainTextResponse("no such step", 404)
        step = step.with_variant(variant)
        composed = compose(app, content, step)
        headers = composed.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
        source = _link(f"{_path(step)}/email.html", plan_id, step.variant)
        body = (
            f'<p><a href="{_link("/", plan_id)}">&larr; the month</a></p>'
            f"<h2>{_day(step)}: {html.escape(composed.rendered.subject)}</h2>"
            f'<div class="frames">'
            f'<figure><figcaption>Phone, 375 px</figcaption><iframe title="Phone view" '
            f'width="375" src="{source}"></iframe></figure>'
            f'<figure><figcaption>Desktop, 800 px</figcaption><iframe title="Desktop view" '
            f'width="800" src="{source}"></iframe></figure></div>'
            f'<h3>Plain-text part</h3><pre class="part">{html.escape(composed.rendered.text)}</pre>'
            f'<h3>Headers</h3><pre class="part">{html.escape(headers)}</pre>'
        )
        return _page(f"Preview: {step.key}", body)

    def email_page(
        app: App, key: str | None, plan_id: str | None, variant: str | None = None
    ) -> Response:
        content = chosen(app, plan_id)
        step = None if content is None else find(content, key)
        if content is None or step is None:
            return PlainTextResponse("no such step", 404)
        return HTMLResponse(compose(app, content, step.with_variant(variant)).rendered.html)

    async def timeline(request: Request) -> Response:
        plan_id = request.query_params.get("plan")
        return await fresh(lambda app: timeline_page(app, plan_id))

    async def step_detail(request: Request) -> Response:
        key, query = request.path_params["key"], request.query_params
        return await fresh(lambda app: step_page(app, key, query.get("plan"), query.get("variant")))

    async def step_email(request: Request) -> Response:
        key, query = request.path_params["key"], request.query_params
        return await fresh(
            lambda app: email_page(app, key, query.get("plan"), query.get("variant"))
        )

    async def confirmation_detail(request: Request) -> Response:
        plan_id = request.query_params.get("plan")
        return await fresh(lambda app: step_page(app, None, plan_id))

    async def confirmation_email(request: Request) -> Response:
        plan_id = request.query_params.get("plan")
        return await fresh(lambda app: email_page(app, None, plan_id))

    async def events(request: Request) -> Response:
        from watchfiles import awatch

        watched = [
            Path(settings.plan_path).resolve().parent,
            Path(settings.templates_dir).resolve(),
        ]

        async def changes() -> AsyncIterator[str]:
            yield ": watching\n\n"
            async for _ in awatch(*watched, debounce=200, step=50):
                yield "data: reload\n\n"

        return StreamingResponse(changes(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/", timeline),
            Route("/step/{key}", step_detail),
            Route("/step/{key}/email.html", step_email),
            Route(CONFIRMATION_PATH, confirmation_detail),
            Route(f"{CONFIRMATION_PATH}/email.html", confirmation_email),
            Route("/events", events),
        ]
    )


def _link(path: str, plan_id: str | None, variant: str | None = None) -> str:
    """`path` with the studio's `plan` and `variant` query, escaped for an attribute."""
    query = urlencode({k: v for k, v in (("plan", plan_id), ("variant", variant)) if v})
    return html.escape(f"{path}?{query}" if query else path)


def _plans_nav(app: App, current: str) -> str:
    """With several plans (a folder), a link to each plan's month, the shown one marked."""
    if len(app.contents) < 2:
        return ""
    links = "".join(
        f'<li><a href="{_link("/", content.plan.id)}"'
        + (' aria-current="page"' if content.plan.id == current else "")
        + f">{html.escape(content.plan.name)} ({html.escape(content.plan.id)})</a></li>"
        for content in app.contents
    )
    return f'<nav aria-label="Plans"><ul class="plans">{links}</ul></nav>'


def _path(step: Step) -> str:
    return CONFIRMATION_PATH if step.index == CONFIRMATION_INDEX else f"/step/{step.key}"


def _day(step: Step) -> str:
    """How the studio names when a step goes: `Day 3`, or `Confirmation` (double opt-in)."""
    return "Confirmation" if step.index == CONFIRMATION_INDEX else f"Day {step.day}"


def serve_studio(settings: Settings, port: int, now: Callable[[], datetime]) -> None:
    """Serve the preview on 127.0.0.1 only: it shows unsent emails, so it stays local."""
    import uvicorn

    config = uvicorn.Config(
        create_studio(settings, now),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run()
