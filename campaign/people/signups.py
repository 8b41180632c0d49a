"""The public side of subscribing: signup with consent, double opt-in, one-click unsubscribe,
and a person's right to see and erase what is stored about them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from campaign.domain import tokens
from campaign.domain.addresses import email_hash
from campaign.domain.transport import Transport
from campaign.errors import BadInput, UnknownSubscriber
from campaign.people.subscriptions import (
    checked_timezone,
    first_name_of,
    lookup_form,
    normalise_address,
)
from campaign.storage import store
from campaign.storage.db import Database, retry_once_on_conflict

#: Suppression reasons that a new signup does not lift (a forgotten person may come back).
STOPPED = ("bounced", "complained")
#: Confirmation emails to one address, whatever the client: at most one per interval and a
#: few a day. Counted in the database, so the limit holds across instances and restarts.
CONFIRMATION_INTERVAL = timedelta(minutes=10)
CONFIRMATIONS_PER_DAY = 3


@dataclass(frozen=True)
class Visitor:
    """Where a request came from: kept as the consent record."""

    ip: str = ""
    user_agent: str = ""
    source_page: str = ""


@dataclass(frozen=True)
class SignupResult:
    """What happened, for logs and metrics only: the visitor sees the same page either way."""

    #: "confirmation-queued", "confirmation-limited", "enrolled", "already-active", "ignored"
    outcome: str
    enrollment_id: int | None = None
    confirmation_id: int | None = None


@dataclass
class Signups:
    """Signup, confirmation and unsubscribe for one plan (its id: a reload never changes it)."""

    db: Database
    plan_id: str
    transport: Transport
    secret_key: str
    double_opt_in: bool = True
    confirm_token_days: int = 7

    @retry_once_on_conflict
    def signup(
        self,
        *,
        email: str,
        first_name: str | None,
        timezone: str | None,
        visitor: Visitor,
        now: datetime,
    ) -> SignupResult:
        """Record a signup. Raise InvalidAddress for a bad address; otherwise the caller shows the
        same answer whatever happened, so nobody can learn who is subscribed."""
        address = normalise_address(email)
        name = first_name_of(first_name)
        try:
            zone = checked_timezone(timezone)
        except BadInput:
            zone = "UTC"  # a browser's odd zone name must not cost a signup
        with self.db.transaction() as session:
            known = store.find_subscriber(session, address)
            if store.suppression_reason(session, email_hash(address)) in STOPPED:
                return SignupResult("ignored")  # bounced or complained: until an operator clears
            if known is None:
                subscriber_id = store.add_subscriber(
                    session,
                    email=address,
                    first_name=name,
                    timezone=zone,
                    status="pending" if self.double_opt_in else "active",
                    source=visitor.source_page[:200] or "web",
                    now=now,
                )
                status = "pending"
            else:
                subscriber_id, status = known.id, known.status
            store.record_consent(
                session,
                subscriber_id,
                kind="signup",
                at=now,
                ip=visitor.ip,
                user_agent=visitor.user_agent,
                source_page=visitor.source_page,
            )
            if status == "active":
                return SignupResult("already-active")
            if status in ("bounced", "complained"):
                return SignupResult("ignored")
            if not self.double_opt_in:
                enrollment = self._activate(session, subscriber_id, address, now)
                return SignupResult("enrolled", enrollment)
            return self._queue_confirmation(session, subscriber_id, now)

    def _queue_confirmation(self, session: Any, subscriber_id: int, now: datetime) -> SignupResult:
        """Queue the confirmation email for the engine to send, unless this address had one
        lately: a signup never waits for the mail server, and nobody can bomb an inbox."""
        store.lock_subscriber(session, subscriber_id)  # concurrent signups count one by one
        lately = store.confirmations_since(session, subscriber_id, now - CONFIRMATION_INTERVAL)
        today = store.confirmations_since(session, subscriber_id, now - timedelta(days=1))
        if lately or today >= CONFIRMATIONS_PER_DAY:
            return SignupResult("confirmation-limited")
        confirmation = store.queue_confirmation(session, subscriber_id, now)
        return SignupResult("confirmation-queued", confirmation_id=confirmation)

    def _activate(
        self, session: Any, subscriber_id: int, address: str, now: datetime
    ) -> int | None:
        """Make the subscriber active and start the plan from the welcome: a new enrollment
        for someone coming back (their old one stays in the log). None when the address is
        suppressed for a bounce or complaint, or the plan already runs for them."""
        if store.suppression_reason(session, email_hash(address)) in STOPPED:
            return None
        store.set_subscriber_status(session, subscriber_id, "active", now)
        store.unsuppress(session, email_hash(address))
        return store.enrol(session, subscriber_id, self.plan_id, now)

    def check_confirmation(self, token: str, now: datetime) -> int:
        """The confirmation a link names; InvalidToken if forged or expired."""
        claims = tokens.verify(
            self.secret_key,
            token,
            tokens.CONFIRM_SIGNUP,
            now,
            timedelta(days=self.confirm_token_days),
        )
        return claims.subject_id

    def check_confirmation_link(self, token: str, now: datetime) -> None:
        """InvalidToken unless the link could still confirm (for the page its GET shows)."""
        confirmation_id = self.check_confirmation(token, now)
        with self.db.read() as session:
            link = store.confirmation_link(session, confirmation_id)
        if link is None or link.inert:
            raise tokens.InvalidToken("This link is no longer valid.")

    def confirm(self, token: str, visitor: Visitor, now: datetime) -> int | None:
        """Activate and enrol the subscriber; the enrollment whose welcome is due now, if any.

        The link is good for the signup it was sent for: not after the person unsubscribed
        (or bounced, or was erased) since, nor once another of their links confirmed them.
        """
        confirmation_id = self.check_confirmation(token, now)
        with self.db.transaction() as session:
            link = store.confirmation_link(session, confirmation_id)
            known = store.subscriber_by_id(session, link.subscriber_id) if link else None
            if link is None or link.inert or known is None:
                raise tokens.InvalidToken("This link is no longer valid.")
            subscriber_id = link.subscriber_id
            store.record_consent(
                session,
                subscriber_id,
                kind="confirm",
                at=now,
                ip=visitor.ip,
                user_agent=visitor.user_agent,
                source_page=visitor.source_page,
            )
            if known.status == "active":
                return None  # a second click: nothing restarts
            if known.status in ("bounced", "complained"):
                return None
            store.use_confirmation(session, confirmation_id, now)
            return self._activate(session, subscriber_id, known.email, now)

    def check_unsubscribe(self, token: str, now: datetime) -> int:
        return tokens.verify(self.secret_key, token, "unsubscribe", now).subject_id

    def unsubscribe(self, token: str, now: datetime) -> bool:
        """Unsubscribe the token's subscriber at once; False if they had already left."""
        subscriber_id = self.check_unsubscribe(token, now)
        with self.db.transaction() as session:
            known = store.subscriber_by_id(session, subscriber_id)
            if known is None or known.status == "unsubscribed":
                return False
            store.set_subscriber_status(session, subscriber_id, "unsubscribed", now)
            store.cancel_enrollments(session, subscriber_id, now)
        return True

    def purge_pending(self, now: datetime, days: int) -> int:
        with self.db.transaction() as session:
            # Links older than this have expired; a day's rows are kept for the daily limit.
            expired = now - timedelta(days=self.confirm_token_days + 1)
            store.purge_confirmations(session, expired)
            return store.purge_pending(session, now - timedelta(days=days))


def export_person(db: Database, email: str) -> dict[str, Any]:
    """Everything stored about `email`, as JSON-ready values."""
    with db.read() as session:
        known = store.find_subscriber(session, lookup_form(email))
        if known is None:
            raise UnknownSubscriber(email)
        data = store.everything_about(session, known.id)
    exported: dict[str, Any] = _jsonable(data)
    return exported


def forget_person(db: Database, email: str, now: datetime) -> None:
    """Erase a person; keep only a hash of the address so it is never mailed by mistake."""
    with db.transaction() as session:
        known = store.find_subscriber(session, lookup_form(email))
        if known is None:
            raise UnknownSubscriber(email)
        store.suppress(session, email_hash(known.email), "forgotten", now)
        store.delete_subscriber(session, known.id)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
