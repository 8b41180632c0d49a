"""Operator commands: the database, subscribers, passes, HTTP, bounces, stats.

Each command imports what it uses: `campaign --help` loads none of it (see cli.common)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import click

from campaign.errors import CampaignError, ConfigError
from campaign.interfaces.cli.common import (
    NOW,
    TEXT,
    HostPortType,
    err,
    main,
    make_app,
    out,
)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    app = make_app(migrated=False)
    app.db.upgrade()
    out.print(f"database ready: {app.db.engine.url.render_as_string(hide_password=True)}")


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def db_backup(path: Path) -> None:
    """Copy the SQLite database to PATH while the service runs (SQLite's online backup)."""
    app = make_app()
    source = app.db.backup_sqlite(path)
    out.print(f"backed up {source} to {path.resolve()}", markup=False, soft_wrap=True)


def _name_values(pairs: Sequence[str], option: str) -> dict[str, str]:
    """`NAME=VALUE` options as a mapping; a usage error (exit 2) for one without a name or `=`."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise click.BadParameter(f"{pair!r}: write NAME=VALUE", param_hint=option)
        values[name.strip()] = value
    return values


@main.command()
@click.argument("email", type=TEXT)
@click.option("--name", type=TEXT, default=None, help="First name, used in greetings.")
@click.option(
    "--timezone", type=TEXT, default=None, help="IANA time zone, e.g. Europe/Berlin (default UTC)."
)
@click.option(
    "--resubscribe",
    is_flag=True,
    help="Someone who unsubscribed asked again: start the plan afresh from the welcome.",
)
@click.option(
    "--field",
    "fields",
    type=TEXT,
    multiple=True,
    metavar="NAME=VALUE",
    help="A custom field the plan declares (`fields:`), e.g. --field pain_area=neck; repeatable.",
)
@click.option(
    "--plan",
    "plan_id",
    type=TEXT,
    default=None,
    help="The id of the plan to join (default: DEFAULT_PLAN, or the only plan).",
)
@NOW
def subscribe(
    email: str,
    name: str | None,
    timezone: str | None,
    resubscribe: bool,
    fields: tuple[str, ...],
    plan_id: str | None,
    now: datetime | None,
) -> None:
    """Add an active subscriber and enrol them; the welcome email is due at once. Someone
    active already joins --plan beside their other plans."""
    from campaign.people import subscriptions

    given: dict[str, object] = dict(_name_values(fields, "--field"))
    app = make_app(now)
    result = subscriptions.subscribe(
        app.db,
        app.plan_named(plan_id),
        email=email,
        first_name=name,
        timezone=timezone,
        now=app.clock.now(),
        resubscribe=resubscribe,
        fields=given,
    )
    if result.created:
        out.print(f"subscribed {result.email}: the welcome email goes out on the next pass")
    elif result.restarted:
        out.print(f"resubscribed {result.email}: the plan starts again from the welcome email")
    elif result.joined:
        out.print(
            f"{result.email} joined plan {app.plan_named(plan_id).id}: its welcome email goes "
            "out on the next pass"
        )
    else:
        hint = (
            " (if they asked to come back, add --resubscribe)"
            if result.status == "unsubscribed"
            else ""
        )
        out.print(
            f"{result.email} is already known (status {result.status}); nothing changed{hint}"
        )


@main.command()
@click.argument("email", type=TEXT)
@click.option(
    "--set",
    "to_set",
    type=TEXT,
    multiple=True,
    metavar="NAME=VALUE",
    help="Store VALUE in the custom field NAME (checked as at signup); repeatable.",
)
@click.option(
    "--clear",
    "to_clear",
    type=TEXT,
    multiple=True,
    metavar="NAME",
    help="Forget the value of NAME, so templates see its default again; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the stored values as JSON.")
@NOW
def fields(
    email: str,
    to_set: tuple[str, ...],
    to_clear: tuple[str, ...],
    as_json: bool,
    now: datetime | None,
) -> None:
    """Show EMAIL's custom field values (a default where none is stored), or change them with
    --set and --clear in one transaction; changes are in the audit log, values are not."""
    from campaign.domain.subscriber_fields import with_defaults
    from campaign.people import operators, subscriptions

    changes: dict[str, object] = dict(_name_values(to_set, "--set"))
    for field_name in to_clear:
        if field_name.strip() in changes:
            raise click.BadParameter(f"{field_name!r} is also in --set", param_hint="--clear")
        changes[field_name.strip()] = None  # None clears (update_fields)
    app = make_app(now)
    declared = app.catalog.declared_fields
    if changes:
        stored = subscriptions.update_fields(
            app.db,
            app.plan,
            email=email,
            fields=changes,
            now=app.clock.now(),
            actor=operators.COMMAND_LINE,
            declared=declared,
        )
    else:
        stored = subscriptions.stored_fields(app.db, email)
    if as_json:
        click.echo(json.dumps(stored, ensure_ascii=False, sort_keys=True))
        return
    seen = with_defaults(declared, stored)  # what templates get
    for name in sorted(declared.keys() | stored.keys()):
        shown = json.dumps(seen.get(name, stored.get(name)), ensure_ascii=False)
        if name not in declared:
            note = "  (no plan declares it now)"
        elif name not in stored:
            note = "  (default)"
        elif seen[name] != stored[name]:
            kept = json.dumps(stored[name], ensure_ascii=False)
            note = f"  (default: the stored {kept} no longer fits the field)"
        else:
            note = ""
        click.echo(f"{name} = {shown}{note}")
    if not declared and not stored:
        click.echo("no plan declares custom fields (`fields:`), and none are stored")


@main.command()
@click.argument("email", type=TEXT)
@NOW
def unsubscribe(email: str, now: datetime | None) -> None:
    """Stop all email to EMAIL at once."""
    from campaign.people import subscriptions

    app = make_app(now)
    changed = subscriptions.unsubscribe(app.db, email=email, now=app.clock.now())
    out.print(f"unsubscribed {email}" if changed else f"{email} was already unsubscribed")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--encoding",
    default=None,
    help="The file's encoding, e.g. cp1252 (default: UTF-8, or UTF-16 by its BOM).",
)
@NOW
def import_csv(file: Path, encoding: str | None, now: datetime | None) -> None:
    """Add subscribers from a CSV with columns email,first_name,timezone, optionally plan (a
    plan id; empty: the default plan) and the plan's custom fields (header names in any case;
    separated by commas, tabs or semicolons)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from campaign.people import csv_import, subscriptions

    source = csv_import.open_csv(file, encoding)  # before anything is imported
    app = make_app(now)
    source = csv_import.with_custom_fields(source, app.catalog.declared_fields)
    for note in source.notes:
        click.echo(note, err=True)
    total = max(source.lines - 1, 0)
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err.console,
        transient=True,
    ) as progress:
        task = progress.add_task("import", total=total)
        report = subscriptions.import_rows(
            app.db,
            app.plan,
            csv_import.rows(source),
            now=app.clock.now(),
            on_row=lambda: progress.advance(task),
            plan_ids=list(app.catalog.plans),
            declared=app.catalog.declared_fields,
        )
    for line, problem in report.problems:
        click.echo(f"{file}:{line}: skipped: {problem}", err=True)
    out.print(
        f"added {report.added}, already known {report.already_known}, "
        + (f"joined a plan {report.joined}, " if report.joined else "")
        + f"skipped {len(report.problems)} bad row(s)"
    )


@main.command()
@NOW
def tick(now: datetime | None) -> None:
    """Run one sending pass: send everything due now."""
    result = make_app(now).run_pass()
    unusual = "".join(
        f", {name} {count}"
        for name, count in (("outcome unknown", result.unknown), ("lost", result.lost))
        if count
    )
    out.print(
        f"sent {result.sent}, failed {result.failed + result.bounced} "
        f"(bounced {result.bounced}), retried {result.retried}, skipped {result.skipped}{unusual}"
    )
    if result.error:
        click.echo(f"error: {result.error}", err=True)
        sys.exit(1)


@main.command()
@click.option("--once", is_flag=True, help="Drain what is due and exit (cron, tests).")
@NOW
@click.option(
    "--http",
    type=HostPortType(),
    default=None,
    help="Also serve the signup and unsubscribe pages and /healthz (/metrics: ADMIN_LISTEN).",
)
def run(once: bool, now: datetime | None, http: tuple[str, int] | None) -> None:
    """Run the engine as a service: a sending pass every TICK_SECONDS until SIGTERM (the same
    as run_scheduler.py)."""
    from campaign.interfaces import service

    code = service.run(once=once, now=now, http=http)
    if code:
        sys.exit(code)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default HTTP_HOST, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default HTTP_PORT, 8000)."
)
def serve(host: str | None, port: int | None) -> None:
    """Serve the signup, confirmation and unsubscribe pages, /healthz (/metrics: ADMIN_LISTEN)."""
    from campaign.engine import require_plan_identity
    from campaign.interfaces.admin import start_side_services
    from campaign.interfaces.web import listen, make_server

    app = make_app()
    for warning in app.settings.start_warnings():  # once, as the service does
        logging.getLogger("campaign.web").warning("%s", warning)
    require_plan_identity(app)  # the pages send confirmations and welcomes themselves
    host = host or app.settings.http_host
    port = port or app.settings.http_port
    # Bound here: a busy port is one clear line and exit 1.
    sock = listen(app, host, port)
    out.print(
        f"serving http://{host}:{port}/subscribe (public links use {app.settings.public_base_url})"
    )
    side = start_side_services(app)  # the confirmation sender and the admin listener
    try:
        make_server(app, host, port).run(sockets=[sock])
    finally:
        side.close()


@main.command("export")
@click.argument("email", type=TEXT)
def export_command(email: str) -> None:
    """Print everything stored about EMAIL as JSON (consent, enrollments, deliveries)."""
    from campaign.people import subscriptions

    app = make_app()
    click.echo(json.dumps(subscriptions.export_person(app.db, email), indent=2))


@main.command()
@click.argument("email", type=TEXT)
@NOW
def forget(email: str, now: datetime | None) -> None:
    """Erase EMAIL and all about them; keep only a hash so it is never mailed again."""
    from campaign.people import subscriptions

    app = make_app(now)
    subscriptions.forget_person(app.db, email, app.clock.now())
    out.print(f"forgot {email}: erased, and suppressed by hash")


def _print_outcomes(outcomes: Sequence[tuple[str, str, str]]) -> None:
    for path, verdict, what in outcomes:
        # Report text is a stranger's: shown as written, never as Rich markup.
        line = f"{path}: {verdict}: {what}"
        if verdict == "unreadable":
            click.echo(line, err=True)
        else:
            out.print(line, markup=False, highlight=False, soft_wrap=True)


@main.group("bounces")
def bounces_group() -> None:
    """Bounce and complaint reports."""


@bounces_group.command("ingest")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@NOW
def bounces_ingest(paths: tuple[Path, ...], now: datetime | None) -> None:
    """Read DSN bounces and ARF complaints (files, folders, maildirs); suppress each address
    that a report shows we mailed (its VERP token or Message-ID); say per file what was done."""
    from campaign.engine import return_paths
    from campaign.people import bounces

    app = make_app(now)
    result = bounces.ingest(
        app.db, list(paths), app.clock.now(), return_paths=return_paths(app.settings)
    )
    _print_outcomes(result.outcomes)
    out.print(
        f"{len(result.bounced)} bounced, {len(result.complained)} complained, "
        f"{len(result.not_ours)} not ours, "
        f"{len(result.ignored)} file(s) with nothing to act on"
    )


@bounces_group.command("poll")
@click.option(
    "--keep",
    is_flag=True,
    help="Leave every message on the server as it was (IMAP: unseen; POP3: not deleted).",
)
@click.option(
    "--delete",
    is_flag=True,
    help="IMAP: delete (expunge) the reports read, not only flag them seen. POP3 always does.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Read at most N messages this run (default: all waiting).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@NOW
def bounces_poll(
    keep: bool, delete: bool, limit: int | None, as_json: bool, now: datetime | None
) -> None:
    """Read DSN bounces and ARF complaints from BOUNCE_MAILBOX_URL (IMAP: unseen messages;
    POP3: all); act on each as `bounces ingest` does, then settle it: IMAP flags it seen
    (--delete: expunges reports), POP3 deletes reports. Others are never deleted."""
    from campaign.engine import return_paths
    from campaign.people import bounce_mailbox, mailbox

    if keep and delete:
        raise click.UsageError("--keep and --delete contradict each other: choose one")
    app = make_app(now)
    settings = app.settings
    address = settings.bounce_mailbox
    if address is None or settings.bounce_mailbox_password is None:
        raise ConfigError(
            "BOUNCE_MAILBOX_URL",
            "must be set to poll a mailbox (e.g. imaps://bounces%40example.org@mail.example.org"
            "/INBOX), with BOUNCE_MAILBOX_PASSWORD",
        )
    disposal = bounce_mailbox.Disposal(
        settle=not keep, delete_reports=not keep and (delete or address.protocol == "pop3")
    )
    box = mailbox.open_mailbox(
        address,
        settings.bounce_mailbox_password.get_secret_value(),
        ca_file=settings.bounce_mailbox_ca_file,
        timeout=settings.bounce_mailbox_timeout,
    )
    try:
        result = bounce_mailbox.poll(
            app.db,
            box,
            app.clock.now(),
            return_paths=return_paths(settings),
            disposal=disposal,
            limit=limit,
        )
    except BaseException:
        # Already failing: the first problem is the one to tell; what was stored stays stored.
        with contextlib.suppress(CampaignError):
            box.close()
        raise
    box.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "mailbox": str(address),
                    "bounced": len(result.bounced),
                    "complained": len(result.complained),
                    "not_ours": len(result.not_ours),
                    "not_reports": len(result.ignored),
                    "unreadable": len(result.unreadable),
                    "outcomes": [
                        {"message": label, "verdict": verdict, "what": what}
                        for label, verdict, what in result.outcomes
                    ],
                }
            )
        )
        return
    _print_outcomes(result.outcomes)
    out.print(
        f"{len(result.bounced)} bounced, {len(result.complained)} complained, "
        f"{len(result.not_ours)} not ours, "
        f"{len(result.ignored)} message(s) with nothing to act on, "
        f"{len(result.unreadable)} unreadable"
    )


@main.group("suppressions")
def suppressions_group() -> None:
    """Addresses that are never mailed (bounced, complained, forgotten)."""


@suppressions_group.command("clear")
@click.argument("email", type=TEXT)
@NOW
def suppressions_clear(email: str, now: datetime | None) -> None:
    """Lift the suppression of EMAIL: they may sign up (or be imported) again."""
    from campaign.people import operators, subscriptions

    app = make_app(now)
    cleared = subscriptions.clear_suppression(
        app.db, email=email, now=app.clock.now(), actor=operators.COMMAND_LINE
    )
    out.print(f"cleared {email}" if cleared else f"{email} was not suppressed")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--plan", "plan_id", type=TEXT, default=None, help="The plan's steps (default: DEFAULT_PLAN)."
)
def stats(as_json: bool, plan_id: str | None) -> None:
    """Subscribers by status; per step: sent, bounced, failed, skipped, unknown outcomes,
    unsubscribes, clicks; per subject test: each variant's numbers and whether they differ
    by more than chance."""
    from rich.markup import escape
    from rich.table import Table

    from campaign.insights import reports
    from campaign.insights.significance import percent

    numbers = make_app().stats(plan_id)
    if as_json:
        click.echo(json.dumps(numbers, indent=2))
        return
    out.print(
        "subscribers: "
        + ", ".join(f"{status} {count}" for status, count in numbers["subscribers"].items())
    )
    columns: list[reports.StepCount] = [
        "sent",
        "bounced",
        "failed",
        "skipped",
        "unknown",
        "unsubscribes_48h",
        "clicks",
        "pending",
    ]
    table = Table(
        "step", "day", *[c.replace("_", " ") for c in columns], title=f"plan {numbers['plan']}"
    )
    for row in numbers["steps"]:
        table.add_row(row["key"], str(row["day"]), *[str(row[c]) for c in columns])
    out.print(table)
    for test in numbers["subject_tests"]:
        state = "running" if test["running"] else "ended"
        tested = Table(
            "variant",
            "subject",
            "sent",
            "clicked",
            "click rate",
            "unsubscribes",
            "unsubscribe rate",
            title=f"subject test of {test['step']} (day {test['day']}, {state})",
        )
        for variant in test["variants"]:
            tested.add_row(
                variant["name"],
                escape(variant["subject"] or "(no longer in the plan)"),
                f"{variant['sent']:,}",
                f"{variant['clicked']:,}",
                percent(variant["click_rate"]),
                f"{variant['unsubscribes_48h']:,}",
                percent(variant["unsubscribe_rate"]),
            )
        out.print(tested)
        for comparison in test["comparisons"]:
            out.print(escape(comparison["statement"]), highlight=False)
    for problem in numbers["problems"]:
        # The reason may quote a subscriber's address: shown as text, never as markup.
        out.print(
            f"{problem['status']} x{problem['count']}: {escape(problem['reason'])}",
            highlight=False,
        )
