"""The Today page: emails sent in the last 24 hours and due in the next 24 (a chart by hour,
drawn here as SVG), the schedulers' passes, paused sending, a refused plan edit, welcome
latency and bounce and complaint rates."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaign.insights import today as numbers
from campaign.interfaces.console.kit import NavItem, engine, kept, page, render

NAV = NavItem("Today", "/today", 10)
#: the chart's geometry (SVG user units).
BAR_WIDTH, GAP, CHART_HEIGHT, LEFT, BOTTOM = 16, 4, 160, 40, 24


def routes() -> list[Route]:
    return [Route("/today", page(today), methods=["GET"])]


def today(request: Request) -> Response:
    app = engine(request)
    app.reload_plan_if_changed()  # as a pass would: a refused edit shows here at once
    now = app.clock.now()
    # The numbers count the day's deliveries and enrollments (about a second at 1M subscribers
    # on PostgreSQL, docs/performance.md §13): counted in the background at most once a
    # minute, the page never waiting for more than the first count's patience. Health, the
    # passes and a refused plan edit are read at every request.
    day, counted_at = kept(request, "today", numbers.TodayNumbers).numbers(app.db, app.plan, now)
    health = app.health()
    top = max(day.busiest_hour, 1) if day else 1
    bars = [
        {
            "x": LEFT + i * (BAR_WIDTH + GAP),
            "height": round(CHART_HEIGHT * hour.count / top, 1),
            "count": hour.count,
            "past": hour.past,
            "label": hour.start.strftime("%H"),
            "when": hour.start.strftime("%Y-%m-%d %H:00"),
        }
        for i, hour in enumerate(day.hours if day else [])
    ]
    return render(
        request,
        "today.html",
        title="Today",
        day=day,
        age=int((now - counted_at).total_seconds()) if counted_at else None,
        schedulers=numbers.schedulers(app.db, now),
        health=health,
        plan_edit_refused=app.plan_edit_refused,
        bars=bars,
        top=top,
        chart={
            "width": LEFT + 48 * (BAR_WIDTH + GAP) + 10,
            "height": CHART_HEIGHT + BOTTOM + 10,
            "base": CHART_HEIGHT + 10,
            "now_x": LEFT + 24 * (BAR_WIDTH + GAP) - GAP / 2,
            "bar": BAR_WIDTH,
        },
    )
