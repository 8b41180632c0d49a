"""Marketer commands: check, diff, preview, simulate, test sends and the report.

Each command imports what it uses: `campaign --help` loads none of it (see cli.common)."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from campaign.errors import BadInput, CampaignError, PlanError
from campaign.interfaces.cli.common import (
    NOW,
    TEXT,
    InstantType,
    _step,
    load_settings,
    main,
    make_app,
    out,
    plan,
)

if TYPE_CHECKING:  # loaded by the commands that use them
    from campaign.domain.plan import Plan
    from campaign.insights.person_plans import Join


@plan.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def plan_check(path: Path | None) -> None:
    """Validate the plan (every plan of a folder) and render every step for sample
    subscribers."""
    from campaign.content.plan_check import check_catalog
    from campaign.people import plan_identity

    settings = load_settings()
    catalog = check_catalog(settings, path)
    orphans = plan_identity.orphans_in(settings.database_url, catalog)
    if orphans:
        checked = catalog.default
        problem = checked.problem("id", plan_identity.orphaned_message(catalog, orphans))
        if path is None or path.resolve() == Path(settings.plan_path).resolve():
            raise PlanError([problem])
        click.echo(f"warning: {problem}", err=True)  # another file: perhaps a future plan
    from campaign.domain.weekdays import EVERY_DAY, describe

    for warning in catalog.warnings:
        click.echo(f"warning: {warning}: its graduates complete there", err=True)
    for checked in catalog:
        days = "" if checked.send_days == EVERY_DAY else f", {describe(checked.send_days)}"
        then = f", then {checked.then}" if checked.then in catalog.plans else ""
        # One line per plan, never folded (a long path would break mid-name in a pipe).
        out.print(
            f"{checked.source}: ok: {len(checked.steps)} steps, days {checked.steps[0].day}"
            f"-{checked.last_day}, sent at {checked.send_time:%H:%M} local time{days}{then}",
            soft_wrap=True,
        )


@plan.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def plan_diff_command(old: Path, new: Path) -> None:
    """What replacing plan OLD with NEW changes, and how many in-flight subscribers it touches."""
    from rich.table import Table

    from campaign.content.plan_check import check_plan
    from campaign.domain import plan_diff
    from campaign.domain.plan import load_plan
    from campaign.insights import reports
    from campaign.people import plan_identity

    settings = load_settings()
    before = load_plan(old, settings.templates_dir, settings.assets_dir)
    after = check_plan(settings, new)
    changes = plan_diff.diff_plans(before, after)
    try:
        app = make_app()
        waiting: dict[int, int] | None = reports.active_by_last_day(app.db, before)
        orphans = plan_identity.orphans(app.db, after)
    except CampaignError:
        waiting, orphans = None, {}  # no database yet: show the changes without counts
    rows = [
        (c.kind, c.key, c.detail, "-" if waiting is None else str(plan_diff.affected(c, waiting)))
        for c in changes
    ]
    for old_id, count in sorted(orphans.items()):
        if old_id != before.id or before.id == after.id:
            # The database runs people under an id that neither file names as the old one.
            detail = (
                f"the database runs them under {old_id!r}, not {after.id!r}: "
                f"`campaign plan rename {old_id} {after.id}`"
            )
            rows.append(("plan", "id", detail, str(count)))
    if not rows:
        out.print("no changes")
        return
    table = Table("change", "step", "what it means", "subscribers affected")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@main.command()
@click.argument("step", required=False)
@click.option("--serve", is_flag=True, help="Open the preview studio: the whole month, live.")
@click.option(
    "--confirmation", is_flag=True, help="The double opt-in email (the plan's `confirmation:`)."
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8001, help="Port for --serve (default 8001)."
)
@click.option("--format", "fmt", type=click.Choice(["html", "text", "eml"]), default="html")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--name", type=TEXT, default="Ann", help="First name of the sample subscriber.")
@click.option(
    "--email", type=TEXT, default="ann@example.com", help="Address of the sample subscriber."
)
@click.option(
    "--variant",
    type=TEXT,
    default=None,
    help="The variant of the step's subject test to show (a, b, ... or its name).",
)
@NOW
def preview(
    step: str | None,
    serve: bool,
    confirmation: bool,
    port: int,
    fmt: str,
    out_file: Path | None,
    name: str,
    email: str,
    variant: str | None,
    now: datetime | None,
) -> None:
    """Render STEP (a key or a day number) for a sample subscriber, without sending.

    With --confirmation, render the double opt-in email instead, with a sample confirm link.
    With --variant, render the step with that subject (and preheader) of its subject test.

    With --serve, open the preview studio instead: every step of the month with its day,
    send time, subject and preheader; a click shows it as a phone and a desktop would, with
    its text part and headers. It reloads by itself when the plan or a template changes.
    """
    from campaign.clock import Clock, FixedClock, SystemClock
    from campaign.content.compose import Recipient

    if serve:
        from campaign.interfaces.studio import serve_studio
        from campaign.logs import configure_logging

        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        clock: Clock = FixedClock(now) if now else SystemClock()
        out.print(f"preview studio: http://127.0.0.1:{port}/  (Ctrl-C to stop)")
        serve_studio(settings, port, clock.now)
        return
    if bool(step) == confirmation:
        raise BadInput(
            "give a STEP (a key or a day number) or --confirmation (not both), or --serve"
        )
    app = make_app(now, migrated=False)
    if confirmation:
        recipient = Recipient(0, email, "")  # as sent: no first name (it is unconfirmed input)
        _require_confirmation(app)
        composed = app.composer.compose_confirmation(
            recipient, 0, message_id=app.composer.new_message_id(), now=app.clock.now()
        )
    else:
        chosen = _step(app, step or "")
        if variant is not None:
            if variant not in chosen.variant_names:
                names = ", ".join(chosen.variant_names) or "none: it tests no subject"
                raise BadInput(
                    f"step {chosen.key} has no variant {variant!r} (its variants: {names})"
                )
            chosen = chosen.with_variant(variant)
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


def _require_confirmation(app: Any) -> None:
    if app.plan.confirmation is None:
        raise BadInput(f"{app.plan.source} has no `confirmation:` email to show")


@main.command("send-test")
@click.argument("step", required=False)
@click.option("--all", "send_all", is_flag=True, help="Send every step of the plan, in order.")
@click.option(
    "--confirmation", is_flag=True, help="Send the double opt-in email (its link is a sample)."
)
@click.option("--to", "to", type=TEXT, required=True, help="Where to send the test email(s).")
@click.option("--name", type=TEXT, default="Ann", help="First name to render with.")
def send_test(step: str | None, send_all: bool, confirmation: bool, to: str, name: str) -> None:
    """Send STEP, --all steps or --confirmation to one inbox for review; nothing is recorded."""
    from campaign.content.compose import Recipient
    from campaign.people import person_fields

    if [bool(step), send_all, confirmation].count(True) != 1:
        raise BadInput("give one of STEP, --all or --confirmation")
    app = make_app(migrated=False)
    address = person_fields.normalise_address(to)
    if confirmation:
        _require_confirmation(app)
        with app.transport.open() as connection:
            composed = app.composer.compose_confirmation(
                Recipient(0, address, ""),  # as sent: no first name (it is unconfirmed input)
                0,
                message_id=app.composer.new_message_id(),
                now=app.clock.now(),
                subject_prefix="[TEST confirmation] ",
            )
            connection.send(composed.envelope, composed.data)
        out.print(f"sent confirmation to {address} via {app.transport.description}")
        return
    steps = list(app.plan.steps) if send_all else [_step(app, step or "")]
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
@click.option("--start", type=InstantType(), default=None, help="Signup instant (default: now).")
@click.option("--timezone", type=TEXT, default="UTC", help="The subscriber's IANA time zone.")
@click.option(
    "--days", type=click.IntRange(min=0), default=None, help="Only the first N days of the plan."
)
@click.option("--name", type=TEXT, default="Ann", help="The subscriber's first name, for subjects.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "ics"]), default="table")
@click.option(
    "--plan",
    "joins",
    multiple=True,
    type=TEXT,
    metavar="ID[@INSTANT]",
    help="A plan the person joins (at INSTANT, default --start); repeat for several plans: "
    "the daily cap and then: apply. Default: the default plan alone.",
)
def simulate(
    start: datetime | None,
    timezone: str,
    days: int | None,
    name: str,
    fmt: str,
    joins: tuple[str, ...],
) -> None:
    """Print, without sending, when a subscriber who signs up at --start gets each email."""
    from rich.table import Table

    from campaign.insights import simulation

    app = make_app(start, migrated=False)
    now = app.clock.now()
    try:
        if joins:
            catalog = app.catalog
            deliveries = simulation.simulate_person(
                app.contents,
                [_join(catalog.plans, text, now) for text in joins],
                timezone=timezone,
                max_per_day=app.settings.max_per_day if catalog.side_by_side else None,
                until=None if days is None else now + timedelta(days=days),
                first_name=name,
            )
        else:
            deliveries = simulation.simulate(
                app.composer, start=now, timezone=timezone, days=days, first_name=name
            )
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    if fmt == "json":
        rows = [
            {
                "day": d.day,
                "step": d.key,
                "at": d.at.isoformat(),
                "local": d.local.isoformat(),
                "subject": d.subject,
                "preheader": d.preheader,
                "moved_from": d.moved_from.isoformat() if d.moved_from else None,
            }
            | ({"plan": d.plan_id, "capped": d.capped, "chained": d.chained} if joins else {})
            for d in deliveries
        ]
        click.echo(json.dumps(rows, indent=2))
    elif fmt == "ics":
        click.echo(simulation.to_ics(app.plan.id, deliveries), nl=False)
    else:
        columns = ("plan", "day") if joins else ("day",)
        table = Table(*columns, "step", "local time", "UTC", "subject", title=f"signup {timezone}")
        for d in deliveries:
            plan_cell = (f"{d.plan_id} (then:)" if d.chained else d.plan_id,) if joins else ()
            table.add_row(
                *plan_cell,
                str(d.day),
                d.key,
                f"{d.local:%a %Y-%m-%d %H:%M %Z}{simulation.moved_note(d)}",
                f"{d.at:%Y-%m-%d %H:%M}",
                d.subject,
            )
        out.print(table)
        shown = dict.fromkeys(d.plan_id for d in deliveries if d.plan_id) or [app.plan.id]
        for plan_id in shown:
            rule = simulation.sending_rule(app.catalog.plans[plan_id])
            out.print(f"{plan_id}: {rule}" if joins else rule)
        if joins and app.catalog.side_by_side:
            out.print(
                f"At most {app.settings.max_per_day} lesson(s) a local day across plans "
                "(MAX_PER_DAY); welcomes go at once."
            )


def _join(plans: Mapping[str, Plan], text: str, start: datetime) -> Join:
    """`ID` or `ID@INSTANT`: a plan of the running catalog, joined then (default: --start)."""
    from campaign.clock import parse_instant
    from campaign.insights.person_plans import Join

    plan_id, at, instant = text.partition("@")
    if plan_id not in plans:
        known = ", ".join(plans)
        raise BadInput(f"--plan {text}: no plan has id {plan_id!r} (plans: {known})")
    try:
        return Join(plan_id, parse_instant(instant) if at else start)
    except ValueError as exc:
        raise BadInput(f"--plan {text}: {exc}") from exc


@main.command()
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    help="Where to write the page.",
)
def report(out_file: Path) -> None:
    """Write a self-contained HTML report: the month's funnel chart and the per-step table."""
    from campaign.insights import reports
    from campaign.insights.report_page import render_report

    app = make_app()
    page = render_report(reports.stats(app.db, app.plan), app.clock.now())
    out_file.write_text(page, encoding="utf-8")
    out.print(f"wrote {out_file}")


@plan.command("rename")
@click.argument("old")
@click.argument("new")
def plan_rename(old: str, new: str) -> None:
    """Move the subscribers of plan id OLD (history included) to NEW, in one transaction.

    For a plan whose `id:` was edited: stop the service, rename, start it again.
    """
    from campaign.people import plan_identity

    app = make_app()
    moved = plan_identity.rename_plan(app.db, old, new)
    click.echo(f"moved {moved} enrollment(s) from plan {old!r} to {new!r}")  # no Rich markup
    if app.plan.id != new:
        click.echo(f"note: the plan file's id is {app.plan.id!r}, not {new!r}", err=True)


@plan.command("new")
@click.argument("name")
@click.option(
    "--plans-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where NAME.yaml goes (default: the folder of PLAN_PATH, or CAMPAIGN_HOME/plans).",
)
@click.option(
    "--templates-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where NAME/ templates go (default: TEMPLATES_DIR, or CAMPAIGN_HOME/templates/emails).",
)
def plan_new(name: str, plans_dir: Path | None, templates_dir: Path | None) -> None:
    """Scaffold plan NAME: NAME.yaml with three steps and a confirmation, and its templates.

    Refuses to overwrite a file (exit 2, naming it). Check it with `campaign plan check`.
    """
    from campaign.content.scaffold import check_name, scaffold
    from campaign.settings import PACKAGED_DEFAULTS

    check_name(name)
    settings = load_settings()
    home = Path(settings.campaign_home or ".").expanduser()
    packaged = [(PACKAGED_DEFAULTS / part).resolve() for part in ("plans", "templates")]

    def own(configured: Path, fallback: Path) -> Path:
        # Never write into the packaged defaults: a fresh home gets its own folders instead.
        inside = any(configured.resolve().is_relative_to(folder) for folder in packaged)
        return home / fallback if inside else configured

    plans = plans_dir or own(Path(settings.plan_path).parent, Path("plans"))
    templates = templates_dir or own(Path(settings.templates_dir), Path("templates/emails"))
    packaged_emails = PACKAGED_DEFAULTS / "templates" / "emails"
    if (
        templates_dir is None
        and not templates.exists()
        and templates != Path(settings.templates_dir)
    ):
        # Once CAMPAIGN_HOME/templates/emails exists, an unset TEMPLATES_DIR resolves to it
        # instead of the packaged templates: seed it with them, or the shipped plan would lose
        # its templates (and the service its start) the moment a marketer scaffolds a plan.
        shutil.copytree(packaged_emails, templates)
        click.echo(
            f"copied the packaged templates to {templates} (TEMPLATES_DIR resolves there now)"
        )
    made = scaffold(name, plans, templates, packaged_emails / "base.html")
    click.echo(f"wrote {made.plan}")
    for path in made.templates:
        click.echo(f"wrote {path}")
    note = (
        ""
        if templates.resolve() == Path(settings.templates_dir).resolve()
        else (f"TEMPLATES_DIR={templates} ")
    )
    click.echo(f"next: {note}campaign plan check {made.plan}")
    click.echo(f"to run it: PLAN_PATH={made.plan} {note}(in .env or the environment)")


@plan.command("vars")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: name, example, where.")
@NOW
def plan_vars(as_json: bool, now: datetime | None) -> None:
    """Every variable a template may use, with an example value for a sample subscriber.

    Read off the context the composer builds, so the list is the one templates really see.
    """
    from campaign.content.variables import template_variables

    app = make_app(now, migrated=False)
    found = template_variables(app.composer, app.clock.now())
    if as_json:
        click.echo(json.dumps([v.as_json() for v in found], indent=2, default=str))
        return
    width = max(len(v.name) for v in found) + 6
    for variable in found:
        shown = f"{{{{ {variable.name} }}}}"
        note = "" if variable.where == "every email" else f"  ({variable.where})"
        click.echo(f"{shown:<{width}}  {variable.example!r}{note}")
