"""Subscribers joining and leaving: add and enrol, unsubscribe, bulk import from CSV rows."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from email_validator import EmailNotValidError, validate_email

from campaign.domain import schedule
from campaign.domain.addresses import email_hash
from campaign.domain.plan import Plan
from campaign.errors import BadInput, InvalidAddress, UnknownSubscriber
from campaign.errors import Suppressed as Suppressed
from campaign.storage import store
from campaign.storage.db import ROW_REFUSED, Database, driver_problem, retry_once_on_conflict

IMPORT_CHUNK = 500


def normalise_address(email: str) -> str:
    """The address as stored, the form duplicates are found by (compared case-insensitively).

    Validated (syntax only, no DNS): a local part of at most 64 characters and an address of
    at most 254 (RFC 5321); no quoted local part, IP literal, dotless domain (user@localhost)
    or special-use domain (.test, .local). Unicode NFC; the domain as its lower-case U-label
    under IDNA 2008 and UTS 46 (x@xn--strae-oqa.de and x@Straße.DE are both x@straße.de,
    which is not x@strasse.de). A local part that is not ASCII needs SMTPUTF8 to be sent
    and is stored in lower case, so that every database's lower() compares it alike; an
    ASCII one keeps its case. Raise InvalidAddress naming the address and the problem.
    """
    candidate = email.strip()
    try:
        result = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=True,
            strict=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(candidate, str(exc)) from exc
    local = result.local_part
    if not local.isascii():
        local = unicodedata.normalize("NFC", local.lower())
    return f"{local}@{result.domain}"


def lookup_form(email: str) -> str:
    """How to look an operator's `email` up: normalised, or as typed if it is not valid
    (an address stored before the rules were this strict)."""
    try:
        return normalise_address(email)
    except InvalidAddress:
        return email.strip()


def checked_timezone(name: str | None) -> str:
    name = (name or "").strip() or schedule.DEFAULT_TIMEZONE
    try:
        schedule.zone(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    return name


def first_name_of(name: str | None) -> str:
    """A name as stored: control characters (NUL, which PostgreSQL cannot store, CR, LF)
    and runs of white space become one space."""
    name = name or ""
    if not name.isprintable():
        name = "".join([" " if unicodedata.category(char) == "Cc" else char for char in name])
    cleaned = " ".join(name.split())
    if len(cleaned) > 100:
        raise BadInput("first name is longer than 100 characters")
    if any(0xD800 <= ord(c) < 0xE000 for c in cleaned):
        # Lone surrogates (undecodable bytes) can be stored nowhere.
        raise BadInput("first name contains control characters or undecodable bytes")
    return cleaned


@dataclass(frozen=True)
class SubscribeResult:
    email: str
    created: bool
    status: str
    #: someone who had unsubscribed came back (`resubscribe`): the plan starts again.
    restarted: bool = False


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
                session,
                known.id,
                kind="operator",
                at=now,
                ip="",
                user_agent="",
                source_page=source,
            )
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
    email = lookup_form(email)
    with db.transaction() as session:
        key = email_hash(email)
        if not store.is_suppressed(session, key):
            return False
        store.unsuppress(session, key)
        known = store.find_subscriber(session, email)
        if known is not None:
            store.reopen_suppressed(session, known.id, now)
    return True


def unsubscribe(db: Database, *, email: str, now: datetime) -> bool:
    """Stop all email to `email` at once; False if they had already left."""
    with db.transaction() as session:
        known = store.find_subscriber(session, lookup_form(email))
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
    rows: Iterable[tuple[int, Mapping[str, str | None] | BadInput]],
    *,
    now: datetime,
    source: str = "import",
    on_row: Callable[[], None] = lambda: None,
) -> ImportReport:
    """Add and enrol each valid row (line number, columns); bad rows (or a row given as the
    BadInput that reading it raised) are reported and skipped, and never cost their neighbours.

    Idempotent: an address already stored, or repeated in the file, is added once.
    """
    report = ImportReport()
    seen: set[str] = set()
    chunk: list[tuple[int, str, str, str]] = []

    def store_rows(batch: list[tuple[int, str, str, str]]) -> ImportReport:
        done = ImportReport()  # counted apart: a rolled-back batch counts nothing
        with db.transaction() as session:
            known = store.existing_emails(session, (email for _, email, _, _ in batch))
            for line, email, name, zone in batch:
                if email.lower() in known:
                    done.already_known += 1
                    continue
                if store.is_suppressed(session, email_hash(email)):
                    done.problems.append((line, Suppressed(email).message))
                    continue
                subscriber_id = store.add_subscriber(
                    session,
                    email=email,
                    first_name=name,
                    timezone=zone,
                    status="active",
                    source=source,
                    now=now,
                )
                store.enrol(session, subscriber_id, plan.id, now)
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
                    report.problems.append((item[0], f"not stored: {driver_problem(exc)}"))
        for part in parts:
            report.added += part.added
            report.already_known += part.already_known
            report.problems += part.problems
        chunk.clear()

    for line, row in rows:
        if isinstance(row, BadInput):
            report.problems.append((line, row.message))
            on_row()
            continue
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
    report.problems.sort(key=lambda problem: problem[0])
    if report.added:
        # Plan the first passes over the new list with its real size: a planner that still
        # thinks the tables are empty makes every claim batch read all subscribers.
        with db.transaction() as session:
            store.refresh_statistics(session)
    return report
