"""The `campaign` command line: parses input, calls use cases, prints results, maps errors."""

from __future__ import annotations

import csv
import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from campaign import bounces, plan_diff, reports, signups, simulation, subscriptions
from campaign.bootstrap import App, build, check_plan, make_service
from campaign.clock import Clock, FixedClock, SystemClock, parse_instant
from campaign.compose import Recipient
from campaign.errors import BadInput, CampaignError, PlanError, UnknownStep
from campaign.plan import load_plan
from campaign.report_page import render_report
from campaign.settings import Settings, load_environment
from campaign.studio import serve_studio
from campaign.web import make_server

F = TypeVar("F", bound=Callable[..., Any])
err = Console(stderr=True)
out = Console()


class InstantType(click.ParamType):  # type: ignore[type-arg]  # click 8.2+ is generic
    name = "ISO8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_instant(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


NOW = click.option(
    "--now",
    type=InstantType(),
    default=None,
    help="Act as if it were this instant (ISO-8601 with offset, e.g. 2026-12-01T07:00:00+00:00).",
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates its plugins at INFO; operators need only its warnings.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def load_settings() -> Settings:
    return Settings.from_env(load_environment())


def make_app(now: datetime | None = None, *, migrated: bool = True) -> App:
    settings = load_settings()
    configure_logging(settings.log_level)
    clock: Clock = FixedClock(now) if now else SystemClock()
    app = build(settings, clock=clock)
    if migrated:
        app.require_schema()
    return app


def reports_errors(command: F) -> F:
    """CampaignError becomes one line on stderr and its exit code (2 input, 1 runtime)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PlanError as exc:
            # One problem per line, compiler style, so editors can jump to file:line.
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            click.echo(f"error: the plan has {len(exc.problems)} problem(s)", err=True)
            sys.exit(exc.exit_code)
        except CampaignError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="campaign-engine")
def main() -> None:
    """The campaign engine: a 30-day email plan sent at each subscriber's local morning."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@reports_errors
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    app = make_app(migrated=False)
    app.db.upgrade()
    out.print(f"database ready: {app.db.engine.url.render_as_string(hide_password=True)}")


@main.command()
@click.argument("email")
@click.option("--name", default=None, help="First name, used in greetings.")
@click.option("--timezone", default=None, help="IANA time zone, e.g. Europe/Berlin (default UTC).")
@NOW
@reports_errors
def subscribe(email: str, name: str | None, timezone: str | None, now: datetime | None) -> None:
    """Add an active subscriber and enrol them; the welcome email is due at once."""
    app = make_app(now)
    result = subscriptions.subscribe(
        app.db, app.plan, email=email, first_name=name, timezone=timezone, now=app.clock.now()
    )
    if result.created:
        out.print(f"subscribed {result.email}: the welcome email goes out on the next pass")
    else:
        out.print(f"{result.email} is already known (status {result.status}); nothing changed")


@main.command()
@click.argument("email")
@NOW
@reports_errors
def unsubscribe(email: str, now: datetime | None) -> None:
    """Stop all email to EMAIL at once."""
    app = make_app(now)
    changed = subscriptions.unsubscribe(app.db, email=email, now=app.clock.now())
    out.print(f"unsubscribed {email}" if changed else f"{email} was already unsubscribed")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str | None]]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"email"} - set(reader.fieldnames or [])
        if missing:
            raise BadInput(f"{path}:1: the header must name an 'email' column")
        for row in reader:
            yield reader.line_num, row


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@NOW
@reports_errors
def import_csv(file: Path, now: datetime | None) -> None:
    """Add subscribers from a CSV with columns email,first_name,timezone."""
    app = make_app(now)
    with file.open(encoding="utf-8-sig") as handle:
        total = max(sum(1 for _ in handle) - 1, 0)
    with Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("import", total=total)
        report = subscriptions.import_rows(
            app.db,
            app.plan,
            _csv_rows(file),
            now=app.clock.now(),
            on_row=lambda: progress.advance(task),
        )
    for line, problem in report.problems:
        click.echo(f"{file}:{line}: skipped: {problem}", err=True)
    out.print(
        f"added {report.added}, already known {report.already_known}, "
        f"skipped {len(report.problems)} bad row(s)"
    )


@main.command()
@NOW
@reports_errors
def tick(now: datetime | None) -> None:
    """Run one sending pass: send everything due now."""
    app = make_app(now)
    with app.sending():
        result = make_service(app).run_once()
    out.print(
        f"sent {result.sent}, failed {result.failed + result.bounced} "
        f"(bounced {result.bounced}), retried {result.retried}, skipped {result.skipped}"
    )
    if result.error:
        click.echo(f"error: {result.error}", err=True)
        sys.exit(1)


@main.group()
def plan() -> None:
    """The plan file."""


@plan.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@reports_errors
def plan_check(path: Path | None) -> None:
    """Validate the plan and render every step for sample subscribers."""
    settings = load_settings()
    checked = check_plan(settings, path)
    out.print(
        f"{checked.source}: ok: {len(checked.steps)} steps, days {checked.steps[0].day}"
        f"-{checked.last_day}, sent at {checked.send_time:%H:%M} local time"
    )


@plan.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@reports_errors
def plan_diff_command(old: Path, new: Path) -> None:
    """What replacing plan OLD with NEW changes, and how many in-flight subscribers it touches."""
    settings = load_settings()
    before = load_plan(old, settings.templates_dir)
    after = check_plan(settings, new)
    changes = plan_diff.diff_plans(before, after)
    try:
        app = make_app()
        waiting: dict[int, int] | None = reports.active_by_last_day(app.db, before)
    except CampaignError:
        waiting = None  # no database yet: show the changes without counts
    if not changes:
        out.print("no changes")
        return
    table = Table("change", "step", "what it means", "subscribers affected")
    for change in changes:
        count = "-" if waiting is None else str(plan_diff.affected(change, waiting))
        table.add_row(change.kind, change.key, change.detail, count)
    out.print(table)


def _step(app: App, key_or_day: str) -> Any:
    step = app.plan.step(key_or_day)
    if step is None:
        raise UnknownStep(key_or_day)
    return step


@main.command()
@click.argument("step", required=False)
@click.option("--serve", is_flag=True, help="Open the preview studio: the whole month, live.")
@click.option("--port", type=int, default=8001, help="Port for --serve (default 8001).")
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--name", default="Ann", help="First name of the sample subscriber.")
@click.option("--email", default="ann@example.com", help="Address of the sample subscriber.")
@NOW
@reports_errors
def preview(
    step: str | None,
    serve: bool,
    port: int,
    fmt: str,
    out_file: Path | None,
    name: str,
    email: str,
    now: datetime | None,
) -> None:
    """Render STEP (a key or a day number) for a sample subscriber, without sending.

    With --serve, open the preview studio instead: every step of the month with its day,
    send time, subject and preheader; a click shows it as a phone and a desktop would, with
    its text part and headers. It reloads by itself when the plan or a template changes.
    """
    if serve:
        settings = load_settings()
        configure_logging(settings.log_level)
        clock: Clock = FixedClock(now) if now else SystemClock()
        out.print(f"preview studio: http://127.0.0.1:{port}/  (Ctrl-C to stop)")
        serve_studio(settings, port, clock.now)
        return
    if not step:
        raise BadInput("give a STEP (a key or a day number), or --serve")
    app = make_app(now, migrated=False)
    chosen = _step(app, step)
    composed = app.composer.compose(
        chosen,
        Recipient(0, email, name),
        message_id=app.composer.new_message_id(),
        now=app.clock.now(),
    )
    content: bytes = {
        "html": composed.rendered.html.encode(),
        "text": composed.rendered.text.encode(),
        "eml": composed.data,
    }[fmt]
    if out_file:
        out_file.write_bytes(content)
        out.print(f"wrote {out_file} ({len(content)} bytes): {composed.rendered.subject}")
    else:
        sys.stdout.buffer.write(content)


@main.command("send-test")
@click.argument("step", required=False)
@click.option("--all", "send_all", is_flag=True, help="Send every step of the plan, in order.")
@click.option("--to", "to", required=True, help="Where to send the test email(s).")
@click.option("--name", default="Ann", help="First name to render with.")
@reports_errors
def send_test(step: str | None, send_all: bool, to: str, name: str) -> None:
    """Send STEP (or --all steps) to one inbox for review; nothing is recorded."""
    if bool(step) == send_all:
        raise BadInput("give a STEP or --all (not both)")
    app = make_app(migrated=False)
    steps = list(app.plan.steps) if send_all else [_step(app, step or "")]
    address = subscriptions.normalise_address(to)
    with app.transport.open() as connection:
        for chosen in steps:
            composed = app.composer.compose(
                chosen,
                Recipient(0, address, name),
                message_id=app.composer.new_message_id(),
                now=app.clock.now(),
                subject_prefix=f"[TEST day {chosen.day}] ",
            )
            connection.send(composed.envelope, composed.data)
            out.print(f"sent {chosen.key} to {address} via {app.transport.description}")


@main.command()
@click.option("--host", default=None, help="Address to listen on (default HTTP_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default HTTP_PORT, 8000).")
@reports_errors
def serve(host: str | None, port: int | None) -> None:
    """Serve the signup, confirmation and unsubscribe pages, /healthz and /metrics."""
    app = make_app()
    host = host or app.settings.http_host
    port = port or app.settings.http_port
    out.print(
        f"serving http://{host}:{port}/subscribe (public links use {app.settings.public_base_url})"
    )
    make_server(app, host, port).run()


@main.command("export")
@click.argument("email")
@reports_errors
def export_command(email: str) -> None:
    """Print everything stored about EMAIL as JSON (consent, enrollments, deliveries)."""
    app = make_app()
    click.echo(json.dumps(signups.export_person(app.db, email), indent=2))


@main.command()
@click.argument("email")
@NOW
@reports_errors
def forget(email: str, now: datetime | None) -> None:
    """Erase EMAIL and all about them; keep only a hash so it is never mailed again."""
    app = make_app(now)
    signups.forget_person(app.db, email, app.clock.now())
    out.print(f"forgot {email}: erased, and suppressed by hash")


@main.command()
@click.option("--start", type=InstantType(), default=None, help="Signup instant (default: now).")
@click.option("--timezone", default="UTC", help="The subscriber's IANA time zone.")
@click.option("--days", type=int, default=None, help="Only the first N days of the plan.")
@click.option("--name", default="Ann", help="The subscriber's first name, for subjects.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "ics"]), default="table")
@reports_errors
def simulate(start: datetime | None, timezone: str, days: int | None, name: str, fmt: str) -> None:
    """Print, without sending, when a subscriber who signs up at --start gets each email."""
    app = make_app(start, migrated=False)
    try:
        deliveries = simulation.simulate(
            app.composer, start=app.clock.now(), timezone=timezone, days=days, first_name=name
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    if fmt == "json":
        rows = [
            {"day": d.day, "step": d.key, "at": d.at.isoformat(), "local": d.local.isoformat(),
             "subject": d.subject, "preheader": d.preheader}
            for d in deliveries
        ]  # fmt: skip
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "ics":
        click.echo(simulation.to_ics(app.plan.id, deliveries), nl=False)
    else:
        table = Table("day", "step", "local time", "UTC", "subject", title=f"signup {timezone}")
        for d in deliveries:
            table.add_row(str(d.day), d.key, f"{d.local:%a %Y-%m-%d %H:%M %Z}",
                          f"{d.at:%Y-%m-%d %H:%M}", d.subject)  # fmt: skip
        out.print(table)


@main.group("bounces")
def bounces_group() -> None:
    """Bounce and complaint reports."""


@bounces_group.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@NOW
@reports_errors
def bounces_ingest(paths: tuple[Path, ...], now: datetime | None) -> None:
    """Read DSN bounces and ARF complaints (files, folders, maildirs); suppress each address."""
    app = make_app(now)
    result = bounces.ingest(app.db, list(paths), app.clock.now())
    for line in result.bounced:
        out.print(f"bounced {line}", highlight=False)
    for line in result.complained:
        out.print(f"complained {line}", highlight=False)
    for path, problem in result.unreadable:
        click.echo(f"{path}: unreadable: {problem}", err=True)
    out.print(
        f"{len(result.bounced)} bounced, {len(result.complained)} complained, "
        f"{len(result.ignored)} file(s) with nothing to act on"
    )


@main.group("suppressions")
def suppressions_group() -> None:
    """Addresses that are never mailed (bounced, complained, forgotten)."""


@suppressions_group.command("clear")
@click.argument("email")
@NOW
@reports_errors
def suppressions_clear(email: str, now: datetime | None) -> None:
    """Lift the suppression of EMAIL: they may sign up (or be imported) again."""
    app = make_app(now)
    cleared = subscriptions.clear_suppression(app.db, email=email, now=app.clock.now())
    out.print(f"cleared {email}" if cleared else f"{email} was not suppressed")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@reports_errors
def stats(as_json: bool) -> None:
    """Subscribers by status; per step: sent, failed, pending."""
    app = make_app()
    numbers = reports.stats(app.db, app.plan)
    if as_json:
        click.echo(json.dumps(numbers, indent=2))
        return
    out.print(
        "subscribers: "
        + ", ".join(f"{status} {count}" for status, count in numbers["subscribers"].items())
    )
    columns = ["sent", "bounced", "failed", "skipped", "unsubscribes_48h", "clicks", "pending"]
    table = Table("step", "day", *[c.replace("_", " ") for c in columns],
                  title=f"plan {numbers['plan']}")  # fmt: skip
    for row in numbers["steps"]:
        table.add_row(row["key"], str(row["day"]), *[str(row[c]) for c in columns])
    out.print(table)


@main.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("report.html"), help="Where to write the page.")  # fmt: skip
@reports_errors
def report(out_file: Path) -> None:
    """Write a self-contained HTML report: the month's funnel chart and the per-step table."""
    app = make_app()
    page = render_report(reports.stats(app.db, app.plan), app.clock.now())
    out_file.write_text(page, encoding="utf-8")
    out.print(f"wrote {out_file}")
