"""What importing a CSV would do, row by row, without storing anything: the console's Import
page shows it before the operator commits (then `subscriptions.import_rows` stores it)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from campaign.domain.addresses import email_hash
from campaign.domain.plan import Plan
from campaign.domain.subscriber_fields import FieldDef
from campaign.errors import BadInput, Suppressed
from campaign.people import csv_import, operators, subscriptions
from campaign.people.operators import COMMAND_LINE
from campaign.people.person_fields import (
    checked_fields,
    checked_timezone,
    first_name_of,
    normalise_address,
)
from campaign.storage import store
from campaign.storage.db import Database

#: Rows looked up in one read.
CHUNK = 500
#: Rows listed one by one; beyond these only counted (a list of a million rows is no report).
MAX_LISTED = 1000

#: What would happen to a row.
ADD, KNOWN, REPEATED, REFUSED = "add", "already known", "repeated in the file", "refused"
VERDICTS = (ADD, KNOWN, REPEATED, REFUSED)


@dataclass(frozen=True)
class RowVerdict:
    """One row: its line, what it holds (as it would be stored), and what would happen."""

    line: int
    email: str
    first_name: str
    timezone: str
    verdict: str
    problem: str = ""


@dataclass
class ImportPreview:
    """The counts by verdict, and the first MAX_LISTED rows one by one (problems first)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VERDICTS, 0))
    rows: list[RowVerdict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def preview_rows(
    db: Database,
    rows: Iterable[tuple[int, Mapping[str, str | None] | BadInput]],
    declared: Mapping[str, FieldDef] | None = None,
) -> ImportPreview:
    """What `import_rows` would do with each row, judged by the same rules (custom field
    values against `declared`, the plan's), storing nothing."""
    preview = ImportPreview()
    seen: set[str] = set()
    chunk: list[RowVerdict] = []
    refused: list[RowVerdict] = []
    others: list[RowVerdict] = []

    def note(row: RowVerdict) -> None:
        preview.counts[row.verdict] += 1
        listed = refused if row.verdict == REFUSED else others
        if len(listed) < MAX_LISTED:
            listed.append(row)

    def flush() -> None:
        with db.read() as session:
            known = store.existing_emails(session, (row.email for row in chunk))
            suppressed = store.suppressed_among(session, [email_hash(row.email) for row in chunk])
            for row in chunk:
                if row.email.lower() in known:
                    note(RowVerdict(row.line, row.email, row.first_name, row.timezone, KNOWN))
                elif email_hash(row.email) in suppressed:
                    problem = Suppressed(row.email).message
                    note(
                        RowVerdict(
                            row.line, row.email, row.first_name, row.timezone, REFUSED, problem
                        )
                    )
                else:
                    note(row)
        chunk.clear()

    for line, values in rows:
        if isinstance(values, BadInput):
            note(RowVerdict(line, "", "", "", REFUSED, values.message))
            continue
        try:
            email = normalise_address(values.get("email") or "")
            name = first_name_of(values.get("first_name"))
            zone = checked_timezone(values.get("timezone"))
            checked_fields(declared or {}, values, unknown="ignore")
        except BadInput as exc:
            raw = (values.get("email") or "")[:320]
            note(RowVerdict(line, raw, "", "", REFUSED, exc.message))
            continue
        if email.lower() in seen:
            note(RowVerdict(line, email, name, zone, REPEATED))
            continue
        seen.add(email.lower())
        chunk.append(RowVerdict(line, email, name, zone, ADD))
        if len(chunk) >= CHUNK:
            flush()
    if chunk:
        flush()
    # Problems first, then by line: what needs fixing is what the operator looks for.
    refused.sort(key=lambda row: row.line)
    others.sort(key=lambda row: row.line)
    preview.rows = (refused + others)[:MAX_LISTED]
    return preview


def commit_import(
    db: Database,
    plan: Plan,
    path: Path,
    *,
    now: datetime,
    actor: str = COMMAND_LINE,
    plan_ids: Collection[str] = (),
    declared: Mapping[str, FieldDef] | None = None,
) -> subscriptions.ImportReport:
    """Import the CSV at `path` as `campaign import` does (in chunks, each its own transaction;
    a `plan` column names one of `plan_ids`), then write the audit entry: who imported how
    many from which file."""
    fields = plan.declared_fields if declared is None else declared
    source = csv_import.open_csv(path, custom_fields=fields)
    report = subscriptions.import_rows(
        db,
        plan,
        csv_import.rows(source),
        now=now,
        source="import",
        plan_ids=plan_ids,
        declared=fields,
    )
    detail = (
        f"{path.name}: {report.added} added, {report.already_known} already known, "
        f"{len(report.problems)} refused"
    )
    with operators.audited(db, actor, "subscribers.import", detail, now):
        pass
    return report
