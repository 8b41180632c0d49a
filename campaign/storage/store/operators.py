"""The operators' console's queries: accounts, sessions (by the hash of their id), failed
sign-ins for the throttle, the audit log, and suppressions as the console lists them."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from campaign.storage.models import (
    AuditEntry,
    LoginFailure,
    Operator,
    OperatorSession,
    Suppression,
)


class OperatorRow(NamedTuple):
    id: int
    email: str
    password_hash: str
    created_at: datetime
    last_login_at: datetime | None


class SessionRow(NamedTuple):
    operator_id: int
    email: str
    created_at: datetime
    last_seen_at: datetime


class AuditRow(NamedTuple):
    id: int
    at: datetime
    actor: str
    action: str
    detail: str


class SuppressionRow(NamedTuple):
    email_hash: str
    email: str
    reason: str
    source: str
    note: str
    created_at: datetime


def _operator(row: Operator) -> OperatorRow:
    return OperatorRow(row.id, row.email, row.password_hash, row.created_at, row.last_login_at)


def find_operator(session: Session, email: str) -> OperatorRow | None:
    row = session.scalars(
        select(Operator).where(func.lower(Operator.email) == email.lower())
    ).one_or_none()
    return _operator(row) if row else None


def list_operators(session: Session) -> list[OperatorRow]:
    return [_operator(r) for r in session.scalars(select(Operator).order_by(Operator.email))]


def add_operator(session: Session, email: str, password_hash: str, now: datetime) -> int:
    row = Operator(email=email, password_hash=password_hash, created_at=now)
    session.add(row)
    session.flush()
    return row.id


def set_password_hash(session: Session, operator_id: int, password_hash: str) -> None:
    session.execute(
        update(Operator).where(Operator.id == operator_id).values(password_hash=password_hash)
    )


def remove_operator(session: Session, operator_id: int) -> None:
    session.execute(delete(OperatorSession).where(OperatorSession.operator_id == operator_id))
    session.execute(delete(Operator).where(Operator.id == operator_id))


def note_login(session: Session, operator_id: int, now: datetime) -> None:
    session.execute(update(Operator).where(Operator.id == operator_id).values(last_login_at=now))


def add_session(
    session: Session, id_hash: str, operator_id: int, client: str, now: datetime
) -> None:
    session.add(
        OperatorSession(
            id_hash=id_hash,
            operator_id=operator_id,
            client=client[:64],
            created_at=now,
            last_seen_at=now,
        )
    )


def find_session(session: Session, id_hash: str) -> SessionRow | None:
    row = session.execute(
        select(
            OperatorSession.operator_id,
            Operator.email,
            OperatorSession.created_at,
            OperatorSession.last_seen_at,
        )
        .join(Operator, Operator.id == OperatorSession.operator_id)
        .where(OperatorSession.id_hash == id_hash)
    ).first()
    return SessionRow(row[0], row[1], row[2], row[3]) if row else None


def touch_session(session: Session, id_hash: str, now: datetime) -> None:
    session.execute(
        update(OperatorSession).where(OperatorSession.id_hash == id_hash).values(last_seen_at=now)
    )


def end_session(session: Session, id_hash: str) -> None:
    session.execute(delete(OperatorSession).where(OperatorSession.id_hash == id_hash))


def end_stale_sessions(session: Session, idle_before: datetime, started_before: datetime) -> int:
    """Delete the sessions idle since before `idle_before` or started before `started_before`."""
    result = session.execute(
        delete(OperatorSession).where(
            or_(
                OperatorSession.last_seen_at < idle_before,
                OperatorSession.created_at < started_before,
            )
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


def record_login_failure(session: Session, email: str, client: str, now: datetime) -> None:
    session.add(LoginFailure(email=email.lower()[:320], client=client[:64], at=now))


def login_failures_since(
    session: Session, email: str, client: str, since: datetime
) -> tuple[int, int]:
    """Failed sign-ins since `since`: for this account (address typed), for this client."""
    by_email = session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.email == email.lower()[:320], LoginFailure.at >= since)
    )
    by_client = session.scalar(
        select(func.count())
        .select_from(LoginFailure)
        .where(LoginFailure.client == client[:64], LoginFailure.at >= since)
    )
    return int(by_email or 0), int(by_client or 0)


def forget_login_failures(session: Session, email: str, before: datetime) -> None:
    """Drop this account's failures (a good sign-in) and everyone's older than `before`."""
    session.execute(
        delete(LoginFailure).where(
            or_(LoginFailure.email == email.lower()[:320], LoginFailure.at < before)
        )
    )


def record_audit(session: Session, actor: str, action: str, detail: str, now: datetime) -> None:
    session.add(AuditEntry(at=now, actor=actor[:320], action=action[:64], detail=detail))


def audit_entries(session: Session, *, before_id: int | None, limit: int) -> list[AuditRow]:
    """The newest entries first, older than `before_id` when given (keyset pagination)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return [AuditRow(r.id, r.at, r.actor, r.action, r.detail) for r in session.scalars(query)]


def list_suppressions(
    session: Session, *, search: str, email_hash: str | None, offset: int, limit: int
) -> tuple[list[SuppressionRow], int]:
    """Suppressions, newest first, whose kept address contains `search` (any case), or whose
    hash is `email_hash` (a whole address typed); and how many match in all."""
    query = select(Suppression)
    if search:
        pattern = (
            "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        matches: list[ColumnElement[bool]] = [
            func.lower(Suppression.email).like(pattern, escape="\\")
        ]
        if email_hash is not None:
            matches.append(Suppression.email_hash == email_hash)
        query = query.where(or_(*matches))
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(
        query.order_by(Suppression.created_at.desc(), Suppression.email_hash)
        .offset(offset)
        .limit(limit)
    )
    return [
        SuppressionRow(r.email_hash, r.email, r.reason, r.source, r.note, r.created_at)
        for r in rows
    ], int(total or 0)


def find_suppression(session: Session, email_hash: str) -> SuppressionRow | None:
    r = session.get(Suppression, email_hash)
    if r is None:
        return None
    return SuppressionRow(r.email_hash, r.email, r.reason, r.source, r.note, r.created_at)


def add_suppression(
    session: Session,
    email_hash: str,
    *,
    email: str,
    reason: str,
    source: str,
    note: str,
    now: datetime,
) -> bool:
    """Suppress the address with its details; False (nothing changed) if it already was."""
    if session.get(Suppression, email_hash) is not None:
        return False
    session.add(
        Suppression(
            email_hash=email_hash,
            email=email,
            reason=reason,
            source=source[:32],
            note=note,
            created_at=now,
        )
    )
    return True
