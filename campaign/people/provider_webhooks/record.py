"""Applying providers' bounces and complaints: each event once (by its provider's id), only when
it is about an email we sent, by the same rules as `bounces ingest` and the SMTP path.

Matching: the event's Message-IDs and VERP return paths go through `report_trust`, as a report
by mail does; a payload that carries neither is taken at its authenticated provider's word when
the delivery log holds an email sent to the address it names. A hard bounce bounces and
suppresses the address, a complaint marks it complained and suppresses it; a soft bounce fails
the delivery it is about, and suppresses the address once SOFT_BOUNCE_LIMIT steps in a row have
failed, as `Outcomes.temporary` does when the mail server itself gives up.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session

from campaign.domain import verp
from campaign.domain.addresses import email_hash
from campaign.domain.statuses import SubscriberStatus
from campaign.domain.verp import ReturnPaths, canonical_address
from campaign.people import report_trust
from campaign.people.provider_webhooks.events import EventKind, ProviderEvent, WebhookRejected
from campaign.storage import store
from campaign.storage.db import Database

log = logging.getLogger("campaign.webhooks")

Verdict = Literal["applied", "duplicate", "not ours"]

# A provider's text is a stranger's: no control characters reach a log line or the database
# (PostgreSQL refuses NUL), nor undecodable bytes an address hash.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029\ud800-\udfff\ufffd]")
_DETAIL_CHARS = 500
_ADDRESS_CHARS = 320
#: as long as the provider_events column.
_EVENT_ID_CHARS = 255


@dataclass(frozen=True)
class EventOutcome:
    """What became of one event: `applied` (with what was done), `duplicate` (seen before, so
    nothing changed) or `not ours` (with the reason; nobody suppressed)."""

    provider: str
    event_id: str
    kind: EventKind
    verdict: Verdict
    what: str


@dataclass(frozen=True)
class _Match:
    address: str | None
    reason: str
    delivery_id: int | None = None


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub(" ", text)[:limit].strip()


def _address(event: ProviderEvent) -> str:
    """The recipient the event names, or "" when it names none a database can hold."""
    address = event.address.strip()
    if len(address) > _ADDRESS_CHARS or _CONTROL.search(address) or "@" not in address:
        return ""
    return address


def apply(
    db: Database,
    events: Iterable[ProviderEvent],
    now: datetime,
    *,
    return_paths: ReturnPaths,
    soft_bounce_limit: int,
) -> list[EventOutcome]:
    """Apply each event in a transaction of its own, in which it is also recorded as seen: a
    replayed or concurrent duplicate finds it recorded and changes nothing."""
    outcomes = []
    for event in events:
        outcome = _apply_one(db, event, now, return_paths, soft_bounce_limit)
        level = logging.INFO if outcome.verdict != "not ours" else logging.WARNING
        log.log(
            level,
            "%s %s event %s: %s: %s",
            outcome.provider,
            outcome.kind,
            outcome.event_id,
            outcome.verdict,
            outcome.what,
        )
        outcomes.append(outcome)
    return outcomes


def check_nonce(
    db: Database, provider: str, nonce: str, body: bytes, now: datetime, max_age: timedelta
) -> None:
    """Refuse (401) a signature's one-time token already seen with another body: a signature
    that covers only a timestamp and a token could otherwise carry any event while it is
    fresh. The same token with the same body is a provider's retry, and passes."""
    digest = hashlib.sha256(body).hexdigest()
    with db.transaction() as session:
        fresh = store.claim_nonce(session, provider, nonce, digest, now, now - 2 * max_age)
    if not fresh:
        raise WebhookRejected(401, "signature token already used with another body")


def _apply_one(
    db: Database, event: ProviderEvent, now: datetime, paths: ReturnPaths, limit: int
) -> EventOutcome:
    event_id = _clean(event.event_id, _EVENT_ID_CHARS)
    detail = _clean(event.detail, _DETAIL_CHARS) or str(event.kind)
    address = _address(event)

    def outcome(verdict: Verdict, what: str) -> EventOutcome:
        return EventOutcome(event.provider, event_id, event.kind, verdict, what)

    with db.transaction() as session:
        match = _match(session, paths, event, address)
        verdict: Verdict = "applied" if match.address is not None else "not ours"
        if not store.record_provider_event(
            session, event.provider, event_id, str(event.kind), verdict, now
        ):
            return outcome("duplicate", "already received; nothing changed")
        if match.address is None:
            return outcome("not ours", f"{address or '(recipient not named)'}: {match.reason}")
        what = _change(session, event.kind, match, detail, now, limit)
    return outcome("applied", f"{what} ({detail}; matched by {match.reason})")


def _change(
    session: Session, kind: EventKind, match: _Match, detail: str, now: datetime, limit: int
) -> str:
    """The state change an event of ours makes, in the caller's transaction; what it did."""
    address = match.address
    assert address is not None  # noqa: S101 (only events of ours reach here)
    if kind in (EventKind.HARD_BOUNCE, EventKind.COMPLAINT):
        status = (
            SubscriberStatus.BOUNCED
            if kind == EventKind.HARD_BOUNCE
            else SubscriberStatus.COMPLAINED
        )
        known = store.find_subscriber(session, address)
        store.stop_mailing(session, known.id if known else None, status, email_hash(address), now)
        return f"{status} {address}"
    if match.delivery_id is None:
        return f"soft bounce of {address} noted (no step of the plan to fail)"
    subscriber_id = store.fail_sent_delivery(session, match.delivery_id, f"provider: {detail}", now)
    if subscriber_id is None:
        return f"soft bounce of {address} noted (its step was already settled)"
    failures = store.consecutive_failures(session, subscriber_id)
    if failures < limit:
        return f"step failed for {address} ({failures} in a row)"
    store.stop_mailing(session, subscriber_id, SubscriberStatus.BOUNCED, email_hash(address), now)
    return f"bounced {address}: {failures} steps in a row failed"


def _match(session: Session, paths: ReturnPaths, event: ProviderEvent, address: str) -> _Match:
    """Whether the event is about an email we sent to `address`, and which delivery."""
    evidence = report_trust.Evidence()
    for return_path in event.return_paths:
        evidence.add_return_paths(_clean(return_path, 1000))
    for message_id in event.message_ids:
        evidence.add_message_id(_clean(message_id, 1000))
    if evidence.tokens or evidence.message_ids:
        verdict = report_trust.check(session, paths, evidence, address)
        if verdict.address is None:
            return _Match(None, verdict.reason)
        return _Match(verdict.address, verdict.reason, _delivery(session, paths, evidence, verdict))
    if not address:
        return _Match(None, "it names no recipient and no email of ours")
    # No clue in the payload: the provider, authenticated, says it sent to `address`; believe it
    # only if we did send that address an email.
    mailed = store.mailed_address(session, (address, canonical_address(address)))
    if mailed is None:
        return _Match(None, "the delivery log holds no email sent to that address")
    return _Match(mailed.email, "the provider's word and the delivery log", mailed.delivery_id)


def _delivery(
    session: Session,
    paths: ReturnPaths,
    evidence: report_trust.Evidence,
    verdict: report_trust.Verdict,
) -> int | None:
    """The delivery (a step of the plan) the evidence names for the matched address; None when
    it names a confirmation email instead."""
    assert verdict.address is not None  # noqa: S101 (called for a match only)
    wanted = canonical_address(verdict.address)
    for message_id in evidence.message_ids:
        found = store.address_by_message_id(session, message_id)
        if found is not None and canonical_address(found.email) == wanted:
            return found.delivery_id
    for token in evidence.tokens:
        ref = verp.parse(token)
        if ref is not None and ref.kind == verp.DELIVERY and paths.verifies(ref, wanted):
            return ref.ident
    return None
