"""The public signup flow on top of `subscriptions`: signup with consent and double opt-in,
the confirmation link, and the one-click unsubscribe link. A visitor gets the same answer
whether or not their address was known. The JSON API adds a signup whose consent the calling
system collected (`subscribe_with_consent`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from campaign.domain import tokens
from campaign.domain.addresses import email_hash
from campaign.domain.statuses import STOPPED, ConsentKind, SubscriberStatus, SuppressionReason
from campaign.domain.subscriber_fields import FieldValue, encode
from campaign.domain.transport import Transport
from campaign.errors import BadInput, InvalidToken, Suppressed
from campaign.people import subscriptions
from campaign.people.person_fields import checked_timezone, first_name_of, normalise_address
from campaign.people.subscriptions import Visitor
from campaign.storage import store
from campaign.storage.db import Database, retry_once_on_conflict

#: Suppression reasons that a new signup does not lift (a forgotten person may come back).
LASTING = (SuppressionReason.BOUNCED, SuppressionReason.COMPLAINED, SuppressionReason.MANUAL)
#: Confirmation emails to one address, whatever the client: at most one per interval and a
#: few a day. Counted in the database, so the limit holds across instances and restarts.
CONFIRMATION_INTERVAL = timedelta(minutes=10)
CONFIRMATIONS_PER_DAY = 3


class SignupOutcome(StrEnum):
    """What a signup did (a label of the campaign_signups metric)."""

    CONFIRMATION_QUEUED = "confirmation-queued"
    #: the address had a confirmation lately, or its few for the day
    CONFIRMATION_LIMITED = "confirmation-limited"
    #: no double opt-in: active, and the welcome is due
    ENROLLED = "enrolled"
    ALREADY_ACTIVE = "already-active"
    #: bounced or complained: nothing happens until an operator clears the address
    IGNORED = "ignored"


@dataclass(frozen=True)
class SignupResult:
    """What happened, for logs and metrics only: the visitor sees the same page either way."""

    outcome: SignupOutcome
    enrollment_id: int | None = None
    confirmation_id: int | None = None
    #: the address was new: this signup stored it.
    created: bool = False


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
        actor: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
        plan_id: str | None = None,
    ) -> SignupResult:
        """Record a signup for `plan_id` (None: the default plan; the caller checked it is a
        running plan). Raise InvalidAddress for a bad address; otherwise the caller shows the
        same answer whatever happened, so nobody can learn who is subscribed. With an `actor`
        (an API key), the audit log notes the signup in the same transaction. `fields` (custom
        field values, checked by the caller against the plan) are stored for someone new only,
        as the first name is: a signup never changes a known person.

        Someone active (they confirmed once) who names a plan they are not in joins it at
        once, with no new confirmation: their welcome of that plan is due now.
        """
        plan = plan_id or self.plan_id
        address = normalise_address(email)
        name = first_name_of(first_name)
        custom = encode(fields or {})
        try:
            zone = checked_timezone(timezone)
        except BadInput:
            zone = "UTC"  # a browser's odd zone name must not cost a signup
        with self.db.transaction() as session:
            known = store.find_subscriber(session, address)
            if store.suppression_reason(session, email_hash(address)) in LASTING:
                # bounced or complained: until an operator clears it
                return SignupResult(SignupOutcome.IGNORED)
            created = known is None
            if known is None:
                status = SubscriberStatus.PENDING
                subscriber_id = store.add_subscriber(
                    session,
                    email=address,
                    first_name=name,
                    timezone=zone,
                    status=status if self.double_opt_in else SubscriberStatus.ACTIVE,
                    source=visitor.source_page[:200] or "web",
                    now=now,
                    fields=custom,
                )
            else:
                subscriber_id, status = known.id, known.status
            subscriptions.record_consent(session, subscriber_id, ConsentKind.SIGNUP, visitor, now)
            if status == SubscriberStatus.ACTIVE:
                result = _join_another(session, subscriber_id, plan, now)
            elif status in STOPPED:
                result = SignupResult(SignupOutcome.IGNORED)
            elif not self.double_opt_in:
                enrollment = self._activate(session, subscriber_id, address, now, plan)
                result = SignupResult(SignupOutcome.ENROLLED, enrollment, created=created)
            else:
                queued = self._queue_confirmation(session, subscriber_id, now, plan)
                result = replace(queued, created=created)
            _audit(session, actor, subscriber_id, result, now)
            return result

    @retry_once_on_conflict
    def subscribe_with_consent(
        self,
        *,
        email: str,
        first_name: str | None,
        timezone: str | None,
        consent: Visitor,
        consented_at: datetime,
        source: str,
        now: datetime,
        actor: str | None = None,
        fields: Mapping[str, FieldValue] | None = None,
        plan_id: str | None = None,
    ) -> SignupResult:
        """A signup whose consent another system collected and states (when, from which IP, on
        which page): recorded as the person's own, and treated as a confirmed signup. Someone
        new, pending or unsubscribed becomes active and starts the plan from the welcome (due
        now); someone active stays as they are. A bounced or complained address is left alone
        (IGNORED; Suppressed for one not stored): only an operator clears it.

        BadInput for a bad address, first name or time zone. `fields` as for `signup`; `plan_id`
        as for `signup`. With an `actor` (an API key), the audit log notes the signup in the
        same transaction.
        """
        plan = plan_id or self.plan_id
        address = normalise_address(email)
        name = first_name_of(first_name)
        zone = checked_timezone(timezone)
        custom = encode(fields or {})
        with self.db.transaction() as session:
            known = store.find_subscriber(session, address)
            reason = store.suppression_reason(session, email_hash(address))
            if reason in LASTING:
                if known is None:
                    raise Suppressed(address, str(reason))
                return SignupResult(SignupOutcome.IGNORED)
            if known is None:
                subscriber_id = store.add_subscriber(
                    session,
                    email=address,
                    first_name=name,
                    timezone=zone,
                    status=SubscriberStatus.PENDING,
                    source=source[:200],
                    now=now,
                    fields=custom,
                )
                status = SubscriberStatus.PENDING
            else:
                subscriber_id, status = known.id, known.status
            subscriptions.record_consent(
                session, subscriber_id, ConsentKind.SIGNUP, consent, consented_at
            )
            if status == SubscriberStatus.ACTIVE:
                result = _join_another(session, subscriber_id, plan, now)
            elif status in STOPPED:
                result = SignupResult(SignupOutcome.IGNORED)
            else:
                enrollment = self._activate(session, subscriber_id, address, now, plan)
                result = SignupResult(SignupOutcome.ENROLLED, enrollment, created=known is None)
            _audit(session, actor, subscriber_id, result, now)
            return result

    def _queue_confirmation(
        self, session: Session, subscriber_id: int, now: datetime, plan_id: str
    ) -> SignupResult:
        """Queue the confirmation email for the engine to send, unless this address had one
        lately: a signup never waits for the mail server, and nobody can bomb an inbox."""
        store.lock_subscriber(session, subscriber_id)  # concurrent signups count one by one
        lately = store.confirmations_since(session, subscriber_id, now - CONFIRMATION_INTERVAL)
        today = store.confirmations_since(session, subscriber_id, now - timedelta(days=1))
        if lately or today >= CONFIRMATIONS_PER_DAY:
            return SignupResult(SignupOutcome.CONFIRMATION_LIMITED)
        named = None if plan_id == self.plan_id else plan_id
        confirmation = store.queue_confirmation(session, subscriber_id, now, named)
        return SignupResult(SignupOutcome.CONFIRMATION_QUEUED, confirmation_id=confirmation)

    def _activate(
        self,
        session: Session,
        subscriber_id: int,
        address: str,
        now: datetime,
        plan_id: str | None = None,
    ) -> int | None:
        """The person's own signup (confirmed, or without double opt-in) makes them active
        and lifts their own erasure's suppression; never a bounce's or a complaint's. The
        enrollment whose welcome is due now; None when suppressed, or the plan already runs."""
        if store.suppression_reason(session, email_hash(address)) in LASTING:
            return None
        store.unsuppress(session, email_hash(address))
        return subscriptions.activate(session, subscriber_id, plan_id or self.plan_id, now)

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
            raise InvalidToken("This link is no longer valid.")

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
                raise InvalidToken("This link is no longer valid.")
            subscriptions.record_consent(session, known.id, ConsentKind.CONFIRM, visitor, now)
            if known.status == SubscriberStatus.ACTIVE:
                return None  # a second click: nothing restarts
            if known.status in STOPPED:
                return None
            store.use_confirmation(session, confirmation_id, now)
            return self._activate(session, known.id, known.email, now, link.plan_id)

    def check_unsubscribe(self, token: str, now: datetime) -> int:
        """The subscriber an unsubscribe link names; InvalidToken if forged."""
        return self.unsubscribe_link(token, now)[0]

    def unsubscribe_link(self, token: str, now: datetime) -> tuple[int, str | None]:
        """The subscriber an unsubscribe link names, and the plan it leaves (None: the link
        leaves everything); InvalidToken if forged."""
        claims = tokens.verify(self.secret_key, token, "unsubscribe", now)
        return claims.subject_id, claims.data or None

    def unsubscribe(self, token: str, now: datetime, *, everything: bool = False) -> bool:
        """Leave what the token names at once: its plan (a footer link of one of several
        plans), or with `everything` (or a link naming no plan) all email. False if nothing
        changed (they had left already)."""
        subscriber_id, plan_id = self.unsubscribe_link(token, now)
        if plan_id is not None and not everything:
            return subscriptions.leave_plan(self.db, subscriber_id, plan_id, now)
        return subscriptions.unsubscribe_subscriber(self.db, subscriber_id, now)

    def purge_pending(self, now: datetime, days: int) -> int:
        """Delete signups never confirmed within `days`; returns how many."""
        with self.db.transaction() as session:
            # Links older than this have expired; a day's rows are kept for the daily limit.
            expired = now - timedelta(days=self.confirm_token_days + 1)
            store.purge_confirmations(session, expired)
            return store.purge_pending(session, now - timedelta(days=days))


def _join_another(
    session: Session, subscriber_id: int, plan_id: str, now: datetime
) -> SignupResult:
    """An active subscriber (confirmed once already) signing up for a plan: enrolled in it
    now, no second confirmation; ALREADY_ACTIVE when that plan runs for them, or ran to its
    end (a graduate signing up again gets no second welcome)."""
    if not subscriptions.join_plan(session, subscriber_id, plan_id, now):
        return SignupResult(SignupOutcome.ALREADY_ACTIVE)
    return SignupResult(
        SignupOutcome.ENROLLED, store.active_enrollment_id(session, subscriber_id, plan_id)
    )


def _audit(
    session: Session, actor: str | None, subscriber_id: int, result: SignupResult, now: datetime
) -> None:
    """The audit entry of a signup made by `actor` (none for a visitor's own): the id and
    what happened, never the address."""
    if actor is not None:
        created = ", new" if result.created else ""
        detail = f"#{subscriber_id} ({result.outcome}{created})"
        store.record_audit(session, actor, "subscriber.create", detail, now)
