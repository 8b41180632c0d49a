"""Operations on a person: subscribe (or resubscribe), unsubscribe, forget, export, lift a
suppression, look up, and add many from CSV rows. The signup flow (`signups`) builds on these."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, TypedDict

from sqlalchemy.orm import Session

from campaign.domain.addresses import email_hash
from campaign.domain.plan import Plan
from campaign.domain.statuses import ConsentKind, SubscriberStatus, SuppressionReason
from campaign.domain.subscriber_fields import FieldDef, FieldValue, decode, encode
from campaign.errors import BadInput, Suppressed, UnknownPlan, UnknownSubscriber
from campaign.people.person_fields import (
    checked_fields,
    checked_timezone,
    first_name_of,
    lookup_form,
    normalise_address,
)
from campaign.storage import store
from campaign.storage.db import ROW_REFUSED, Database, driver_problem, retry_once_on_conflict

IMPORT_CHUNK = 500


@dataclass(frozen=True)
class Visitor:
    """Where a request came from: kept as the consent record."""

    ip: str = ""
    user_agent: str = ""
    source_page: str = ""


@dataclass(frozen=True)
class SubscribeResult:
    email: str
    created: bool
    status: SubscriberStatus
    #: someone who had unsubscribed came back (`resubscribe`): the plan starts again.
    restarted: bool = False
    #: someone active joined this plan beside the ones they are in: its welcome is due now.
    joined: bool = False


def find(session: Session, email: str) -> store.SubscriberRecord:
    """The subscriber an operator names by `email`, looked up by its normal form (or as
    typed, if it is not valid); UnknownSubscriber if nobody has it."""
    known = store.find_subscriber(session, lookup_form(email))
    if known is None:
        raise UnknownSubscriber(email)
    return known


def record_consent(
    session: Session, subscriber_id: int, kind: ConsentKind, visitor: Visitor, now: datetime
) -> None:
    """Keep the proof that the person (or an operator for them) asked, and from where."""
    store.record_consent(
        session,
        subscriber_id,
        kind=kind,
        at=now,
        ip=visitor.ip,
        user_agent=visitor.user_agent,
        source_page=visitor.source_page,
    )


def activate(session: Session, subscriber_id: int, plan_id: str, now: datetime) -> int | None:
    """Make the subscriber active and start the plan from the welcome: a new enrollment for
    someone coming back (their old one stays in the log). None if the plan already runs."""
    store.set_subscriber_status(session, subscriber_id, SubscriberStatus.ACTIVE, now)
    return store.enrol(session, subscriber_id, plan_id, now)


def leave(session: Session, known: store.SubscriberRecord, now: datetime) -> bool:
    """Stop all email to `known` at once; False if they had already unsubscribed."""
    if known.status == SubscriberStatus.UNSUBSCRIBED:
        return False
    store.leave(session, known.id, SubscriberStatus.UNSUBSCRIBED, now)
    return True


def _add_active(
    session: Session,
    plan: Plan | str,
    email: str,
    name: str,
    zone: str,
    source: str,
    now: datetime,
    fields: str = "{}",
) -> None:
    subscriber_id = store.add_subscriber(
        session,
        email=email,
        first_name=name,
        timezone=zone,
        status=SubscriberStatus.ACTIVE,
        source=source,
        now=now,
        fields=fields,
    )
    store.enrol(session, subscriber_id, plan if isinstance(plan, str) else plan.id, now)


@retry_once_on_conflict
def subscribe(
    db: Database,
    plan: Plan,
    *,
    email: str,
    first_name: str | None,
    timezone: str | None,
    now: datetime,
    source: str = "cli",
    resubscribe: bool = False,
    fields: Mapping[str, object] | None = None,
) -> SubscribeResult:
    """Add an active subscriber and enrol them: the welcome email is due at once.

    Someone already known is left as they are: no second enrolment, no restarted plan (an
    active subscriber not yet in `plan` joins it, as a second enrollment). With
    `resubscribe` (the person asked again), someone who unsubscribed becomes active and starts
    the plan afresh from the welcome, in a new enrollment; a suppressed address never does.
    `fields` are custom field values, checked against the plan's `fields:` (an undeclared
    one is refused); they are stored for someone new.
    """
    address = normalise_address(email)
    name = first_name_of(first_name)
    zone = checked_timezone(timezone)
    custom = encode(checked_fields(plan.declared_fields, fields, unknown="reject"))
    with db.transaction() as session:
        known = store.find_subscriber(session, address)
        suppressed = store.is_suppressed(session, email_hash(address))
        if known is not None and resubscribe and known.status == SubscriberStatus.UNSUBSCRIBED:
            if suppressed:
                raise BadInput(f"{address} is suppressed; clear it first if they asked again")
            consent = Visitor(source_page=source)
            record_consent(session, known.id, ConsentKind.OPERATOR, consent, now)
            activate(session, known.id, plan.id, now)
            return SubscribeResult(
                known.email, created=False, status=SubscriberStatus.ACTIVE, restarted=True
            )
        if known is not None:
            joined = known.status == SubscriberStatus.ACTIVE and join_plan(
                session, known.id, plan.id, now
            )
            return SubscribeResult(known.email, created=False, status=known.status, joined=joined)
        if suppressed:
            raise Suppressed(address)
        _add_active(session, plan, address, name, zone, source, now, custom)
    return SubscribeResult(address, created=True, status=SubscriberStatus.ACTIVE)


def update_fields(
    db: Database,
    plan: Plan,
    *,
    email: str,
    fields: Mapping[str, object],
    now: datetime,
    actor: str | None = None,
    declared: Mapping[str, FieldDef] | None = None,
) -> dict[str, FieldValue]:
    """Set some of a person's custom field values (a None clears one back to its default),
    checked against `declared` (every plan's fields; by default the plan's `fields:`); the
    values now stored. With an `actor` (an API key),
    the audit log names the subscriber's id and the fields changed, never their values."""
    cleared = [name for name, value in fields.items() if value is None]
    given = {name: value for name, value in fields.items() if value is not None}
    declared = plan.declared_fields if declared is None else declared
    changed = checked_fields(declared, given, unknown="reject")
    checked_fields(declared, dict.fromkeys(cleared), unknown="reject")  # names only
    with db.transaction() as session:
        known = find(session, email)
        stored = decode(store.subscriber_fields_for_update(session, known.id))
        values = {k: v for k, v in stored.items() if k not in cleared}
        values.update(changed)
        store.set_subscriber_fields(session, known.id, encode(values), now)
        if actor is not None:
            names = ", ".join(sorted(fields)) or "none"
            store.record_audit(session, actor, "subscriber.fields", f"#{known.id} ({names})", now)
    return values


def stored_fields(db: Database, email: str) -> dict[str, FieldValue]:
    """The custom field values stored for `email` (defaults are not stored); UnknownSubscriber
    if nobody has the address."""
    with db.read() as session:
        return decode(find(session, email).fields)


def join_plan(session: Session, subscriber_id: int, plan_id: str, now: datetime) -> bool:
    """Enrol an active subscriber in another plan (its welcome due now); False when they run
    it already or finished it (the welcome goes once)."""
    if store.in_or_through_plan(session, subscriber_id, plan_id):
        return False
    return store.enrol(session, subscriber_id, plan_id, now) is not None


def clear_suppression(db: Database, *, email: str, now: datetime, actor: str | None = None) -> bool:
    """An operator lifts a suppression (bounce, complaint, forget); False if there was none.
    With an `actor` (the command line), the audit log notes it in the same transaction, as
    the console's clear does."""
    email = lookup_form(email)
    with db.transaction() as session:
        key = email_hash(email)
        reason = store.suppression_reason(session, key)
        if reason is None:
            return False
        if actor is not None:
            store.record_audit(session, actor, "suppression.clear", f"{email} ({reason})", now)
        store.unsuppress(session, key)
        known = store.find_subscriber(session, email)
        if known is not None:
            store.reopen_suppressed(session, known.id, now)
    return True


def unsubscribe(db: Database, *, email: str, now: datetime, actor: str | None = None) -> bool:
    """Stop all email to `email` at once; False if they had already left. With an `actor`
    (an API key), the audit log names the subscriber's id in the same transaction."""
    with db.transaction() as session:
        known = find(session, email)
        if actor is not None:
            store.record_audit(session, actor, "subscriber.unsubscribe", f"#{known.id}", now)
        return leave(session, known, now)


def unsubscribe_subscriber(db: Database, subscriber_id: int, now: datetime) -> bool:
    """Stop all email to the subscriber at once (an unsubscribe link names them by id);
    False if they had already left, or are no longer stored."""
    with db.transaction() as session:
        known = store.subscriber_by_id(session, subscriber_id)
        return known is not None and leave(session, known, now)


def leave_plan(db: Database, subscriber_id: int, plan_id: str, now: datetime) -> bool:
    """The subscriber leaves plan `plan_id` only (a footer link naming it): that enrollment
    is cancelled and nothing more of it is sent. Someone left with no other plan running has
    left the list: unsubscribed, as by the one-click link. False if nothing changed."""
    with db.transaction() as session:
        known = store.subscriber_by_id(session, subscriber_id)
        if known is None or known.status != SubscriberStatus.ACTIVE:
            return False
        left = store.leave_plan(session, subscriber_id, plan_id, now)
        if not store.active_plan_ids(session, subscriber_id):
            return leave(session, known, now) or left
        return left


def forget_person(db: Database, email: str, now: datetime, actor: str | None = None) -> None:
    """Erase a person; keep only a hash of the address so it is never mailed by mistake. With
    an `actor` (an API key), the audit log names the id (never the address) in the same
    transaction."""
    with db.transaction() as session:
        known = find(session, email)
        if actor is not None:
            store.record_audit(session, actor, "subscriber.forget", f"#{known.id}", now)
        store.suppress(session, email_hash(known.email), SuppressionReason.FORGOTTEN, now)
        store.delete_subscriber(session, known.id)


#: One stored row as JSON values: instants as ISO 8601 text, custom fields as an object.
JSONRow = dict[str, str | int | float | dict[str, FieldValue] | None]


class PersonExport(TypedDict):
    """Everything stored about a person, by table, as `campaign export` prints it."""

    subscriber: JSONRow
    consents: list[JSONRow]
    confirmations: list[JSONRow]
    enrollments: list[JSONRow]
    deliveries: list[JSONRow]


def export_person(db: Database, email: str) -> PersonExport:
    """Everything stored about `email`, as JSON-ready values."""
    with db.read() as session:
        rows = store.everything_about(session, find(session, email).id)
    subscriber = _json_row(rows["subscriber"])
    # Kept as JSON text; exported as the object it is.
    subscriber["fields"] = decode(rows["subscriber"].get("fields"))
    return {
        "subscriber": subscriber,
        "consents": [_json_row(row) for row in rows["consents"]],
        "confirmations": [_json_row(row) for row in rows["confirmations"]],
        "enrollments": [_json_row(row) for row in rows["enrollments"]],
        "deliveries": [_json_row(row) for row in rows["deliveries"]],
    }


def named_plan(value: str | None, plan_ids: Collection[str]) -> str | None:
    """The plan id a signup names (None: none named, the default plan's); UnknownPlan for an
    id no running plan has (hostile input: shown cut short, as a repr)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value not in plan_ids:
        raise UnknownPlan(value, plan_ids)
    return value


def _join_named(session: Session, email: str, plan_id: str, now: datetime) -> int:
    known = store.find_subscriber(session, email)
    if known is None or known.status != SubscriberStatus.ACTIVE:
        return 0
    return int(join_plan(session, known.id, plan_id, now))


def _json_row(row: store.RowValues) -> JSONRow:
    return {key: v.isoformat() if isinstance(v, datetime) else v for key, v in row.items()}


class RowProblem(NamedTuple):
    """A row that was not imported: its line in the file, and why."""

    line: int
    problem: str


@dataclass
class ImportReport:
    added: int = 0
    already_known: int = 0
    #: people already active who joined the plan their row named.
    joined: int = 0
    problems: list[RowProblem] = field(default_factory=list)


def import_rows(
    db: Database,
    plan: Plan,
    rows: Iterable[tuple[int, Mapping[str, str | None] | BadInput]],
    *,
    now: datetime,
    source: str = "import",
    on_row: Callable[[], None] = lambda: None,
    plan_ids: Collection[str] = (),
    declared: Mapping[str, FieldDef] | None = None,
) -> ImportReport:
    """Add and enrol each valid row (line number, columns); bad rows (or a row given as the
    BadInput that reading it raised) are reported and skipped, and never cost their neighbours.
    Columns named after the plan's custom fields (`declared`: every plan's, by default the
    plan's own) fill them (a bad value is a bad row).

    A row's `plan` column names its plan, one of `plan_ids` (empty: `plan`, the default); an
    active person already stored joins the plan their row names, if not in it yet.
    Idempotent: an address already stored, or repeated in the file, is added once.
    """
    report = ImportReport()
    seen: set[str] = set()
    chunk: list[tuple[int, str, str, str, str, str | None]] = []
    declared = plan.declared_fields if declared is None else declared

    def store_rows(batch: list[tuple[int, str, str, str, str, str | None]]) -> ImportReport:
        done = ImportReport()  # counted apart: a rolled-back batch counts nothing
        with db.transaction() as session:
            known = store.existing_emails(session, (row[1] for row in batch))
            for line, email, name, zone, custom, named in batch:
                if email.lower() in known:
                    done.already_known += 1
                    if named is not None:
                        done.joined += _join_named(session, email, named, now)
                    continue
                if store.is_suppressed(session, email_hash(email)):
                    done.problems.append(RowProblem(line, Suppressed(email).message))
                    continue
                _add_active(session, named or plan, email, name, zone, source, now, custom)
                done.added += 1
        return done

    def flush() -> None:
        try:
            parts = [store_rows(chunk)]
        except ROW_REFUSED:
            # One row the database refused (a value, or a signup of the same address that
            # committed meanwhile) rolled back the batch: store its rows one by one instead.
            parts = []
            for item in chunk:
                try:
                    parts.append(store_rows([item]))
                except ROW_REFUSED as exc:
                    report.problems.append(
                        RowProblem(item[0], f"not stored: {driver_problem(exc)}")
                    )
        for part in parts:
            report.added += part.added
            report.already_known += part.already_known
            report.joined += part.joined
            report.problems += part.problems
        chunk.clear()

    for line, row in rows:
        if isinstance(row, BadInput):
            report.problems.append(RowProblem(line, row.message))
            on_row()
            continue
        try:
            email = normalise_address(row.get("email") or "")
            name = first_name_of(row.get("first_name"))
            zone = checked_timezone(row.get("timezone"))
            custom = encode(checked_fields(declared, row, unknown="ignore"))
            named = named_plan(row.get("plan"), plan_ids or (plan.id,))
        except BadInput as exc:
            report.problems.append(RowProblem(line, exc.message))
        else:
            if email.lower() in seen:
                report.already_known += 1
            else:
                seen.add(email.lower())
                chunk.append((line, email, name, zone, custom, named))
                if len(chunk) >= IMPORT_CHUNK:
                    flush()
        on_row()
    if chunk:
        flush()
    report.problems.sort(key=lambda problem: problem.line)
    if report.added:
        # Plan the first passes over the new list with its real size: a planner that still
        # thinks the tables are empty makes every claim batch read all subscribers.
        with db.transaction() as session:
            store.refresh_statistics(session)
    return report
