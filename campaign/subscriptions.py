"""Subscribers joining and leaving: add and enrol, unsubscribe, bulk import from CSV rows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from campaign import schedule, store
from campaign.db import Database
from campaign.errors import BadInput, InvalidAddress, UnknownSubscriber
from campaign.plan import Plan

IMPORT_CHUNK = 500


class Suppressed(BadInput):
    """This address asked to be forgotten and is never mailed again."""

    def __init__(self, address: str) -> None:
        super().__init__(f"{address} was forgotten on request and is suppressed; not added")


def email_hash(email: str) -> str:
    """The suppression key of an address: SHA-256 of its lowercase form."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def normalise_address(email: str) -> str:
    """The address as stored: validated (syntax only, no DNS), domain lowercased.

    Raise InvalidAddress naming the address and the problem.
    """
    candidate = email.strip()
    try:
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(candidate, str(exc)) from exc
    return result.normalized


def checked_timezone(name: str | None) -> str:
    name = (name or "").strip() or schedule.DEFAULT_TIMEZONE
    try:
        schedule.zone(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    return name


def first_name_of(name: str | None) -> str:
    cleaned = " ".join((name or "").split())
    if len(cleaned) > 100:
        raise BadInput("first name is longer than 100 characters")
    return cleaned


@dataclass(frozen=True)
class SubscribeResult:
    email: str
    created: bool
    status: str
    #: someone who had unsubscribed came back (`resubscribe`): the plan starts again.
    restarted: bool = False


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
) -> SubscribeResult:
    """Add an active subscriber and enrol them: the welcome email is due at once.

    Someone already known is left as they are: no second enrolment, no restarted plan. With
    `resubscribe` (the person asked again), someone who unsubscribed becomes active and starts
    the plan afresh from the welcome, in a new enrollment; a suppressed address never does.
    """
    address = normalise_address(email)
    name = first_name_of(first_name)
    zone = checked_timezone(timezone)
    with db.transaction() as session:
        known = store.find_subscriber(session, address)
        suppressed = store.is_suppressed(session, email_hash(address))
        if known is not None and resubscribe and known.status == "unsubscribed":
            if suppressed:
                raise BadInput(f"{address} is suppressed; clear it first if they asked again")
            store.record_consent(
                session, known.id, kind="operator", at=now, ip="", user_agent="",
                source_page=source,
            )  # fmt: skip
            store.set_subscriber_status(session, known.id, "active", now)
            store.enrol(session, known.id, plan.id, now)
            return SubscribeResult(known.email, created=False, status="active", restarted=True)
        if known is not None:
            return SubscribeResult(known.email, created=False, status=known.status)
        if suppressed:
            raise Suppressed(address)
        subscriber_id = store.add_subscriber(
            session,
            email=address,
            first_name=name,
            timezone=zone,
            status="active",
            source=source,
            now=now,
        )
        store.enrol(session, subscriber_id, plan.id, now)
    return SubscribeResult(address, created=True, status="active")


def clear_suppression(db: Database, *, email: str, now: datetime) -> bool:
    """An operator lifts a suppression (bounce, complaint, forget); False if there was none."""
    with db.transaction() as session:
        key = email_hash(email)
        if not store.is_suppressed(session, key):
            return False
        store.unsuppress(session, key)
        known = store.find_subscriber(session, email.strip())
        if known is not None:
            store.reopen_suppressed(session, known.id, now)
    return True


def unsubscribe(db: Database, *, email: str, now: datetime) -> bool:
    """Stop all email to `email` at once; False if they had already left."""
    with db.transaction() as session:
        known = store.find_subscriber(session, email.strip())
        if known is None:
            raise UnknownSubscriber(email)
        if known.status == "unsubscribed":
            return False
        store.set_subscriber_status(session, known.id, "unsubscribed", now)
        store.cancel_enrollments(session, known.id, now)
    return True


@dataclass
class ImportReport:
    added: int = 0
    already_known: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)


def import_rows(
    db: Database,
    plan: Plan,
    rows: Iterable[tuple[int, Mapping[str, str | None]]],
    *,
    now: datetime,
    source: str = "import",
    on_row: Callable[[], None] = lambda: None,
) -> ImportReport:
    """Add and enrol each valid row (line number, columns); bad rows are reported and skipped.

    Idempotent: an address already stored, or repeated in the file, is added once.
    """
    report = ImportReport()
    seen: set[str] = set()
    chunk: list[tuple[int, str, str, str]] = []

    def flush() -> None:
        with db.transaction() as session:
            known = store.existing_emails(session, (email for _, email, _, _ in chunk))
            for line, email, name, zone in chunk:
                if email.lower() in known:
                    report.already_known += 1
                    continue
                if store.is_suppressed(session, email_hash(email)):
                    report.problems.append((line, Suppressed(email).message))
                    continue
                subscriber_id = store.add_subscriber(
                    session, email=email, first_name=name, timezone=zone,
                    status="active", source=source, now=now,
                )  # fmt: skip
                store.enrol(session, subscriber_id, plan.id, now)
                report.added += 1
        chunk.clear()

    for line, row in rows:
        try:
            email = normalise_address(row.get("email") or "")
            name = first_name_of(row.get("first_name"))
            zone = checked_timezone(row.get("timezone"))
        except BadInput as exc:
            report.problems.append((line, exc.message))
        else:
            if email.lower() in seen:
                report.already_known += 1
            else:
                seen.add(email.lower())
                chunk.append((line, email, name, zone))
                if len(chunk) >= IMPORT_CHUNK:
                    flush()
        on_row()
    if chunk:
        flush()
    if report.added:
        # Plan the first passes over the new list with its real size: a planner that still
        # thinks the tables are empty makes every claim batch read all subscribers.
        with db.transaction() as session:
            store.refresh_statistics(session)
    return report
