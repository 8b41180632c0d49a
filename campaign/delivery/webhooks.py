"""Outgoing webhooks: the deliverer (claims due messages, POSTs them signed, records each
attempt, retries on the Standard Webhooks schedule) and the endpoints' use cases.

The deliverer runs in a thread of its own beside the sending passes (`start`), or one round at
a time (`deliver_due`: `campaign webhooks deliver`, `run --once`, tests). It never holds a
transaction while talking HTTP, and never blocks a send.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from campaign.clock import Clock
from campaign.delivery.webhook_http import Answer, Poster, post
from campaign.domain import webhooks as spec
from campaign.errors import BadInput, DatabaseError
from campaign.people.operators import COMMAND_LINE, audited
from campaign.storage.db import Database
from campaign.storage.store import webhooks as outbox

log = logging.getLogger("campaign.webhooks")

#: how often an idle deliverer looks for due messages (seconds).
POLL_SECONDS = 2.0
#: messages claimed at once; each is this deliverer's for CLAIM_LEASE (longer than a batch of
#: attempts that all time out), then another deliverer may take it over.
BATCH = 10
CLAIM_LEASE = timedelta(minutes=5)
#: delivered messages (and their attempts) are kept this long for `webhooks attempts`, then
#: purged; failed ones are kept until retried or their endpoint is removed.
KEEP_DELIVERED = timedelta(days=30)
PURGE_EVERY = timedelta(hours=1)


class UnknownEndpoint(BadInput):
    """There is no webhook endpoint with that id."""

    def __init__(self, endpoint_id: int) -> None:
        self.endpoint_id = endpoint_id
        super().__init__(
            f"no webhook endpoint with id {endpoint_id} (see `campaign webhooks list`)"
        )


@dataclass
class Round:
    """What one delivery round did."""

    delivered: int = 0
    retried: int = 0
    failed: int = 0
    gone: int = 0
    lost: int = 0

    def summary(self) -> str:
        return (
            f"delivered={self.delivered} retried={self.retried} failed={self.failed}"
            f" gone={self.gone} lost={self.lost}"
        )


class WebhookDeliverer:
    """Delivers the outbox at least once, in order per subscriber per endpoint."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        owner: str,
        *,
        poster: Poster = post,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner
        self.poster = poster
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not a secret)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._purged_at: datetime | None = None

    def purge(self, now: datetime) -> int:
        """Delete what was delivered more than KEEP_DELIVERED ago; how many messages."""
        purged = 0
        while True:
            with self.db.transaction() as session:
                count = outbox.purge_delivered(session, now - KEEP_DELIVERED)
            purged += count
            if count == 0:
                return purged

    def _purge_now_and_then(self, now: datetime) -> None:
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
            self._purged_at = now
            purged = self.purge(now)
            if purged:
                log.info(
                    "webhooks: purged %d message(s) delivered before %s",
                    purged,
                    now - KEEP_DELIVERED,
                )

    def deliver_due(self, now: datetime | None = None, *, max_batches: int = 100) -> Round:
        """Deliver what is due at `now` (the clock's, read per batch, when not given): batch
        after batch, since each delivered message may free its subscriber's next one."""
        result = Round()
        for _ in range(max_batches):
            at = now or self.clock.now()
            with self.db.read() as session:
                if not outbox.any_due(session, at):
                    break
            with self.db.transaction() as session:
                claims = outbox.claim_messages(session, self.owner, at, at + CLAIM_LEASE, BATCH)
            if not claims:
                break
            for claim in claims:
                if self._stop.is_set() and self._thread is not None:
                    break  # the rest is taken over once the lease ends
                self._attempt(claim, now or self.clock.now(), result)
        if result != Round():
            log.info("webhooks %s", result.summary())
        return result

    def _attempt(self, claim: outbox.MessageClaim, now: datetime, result: Round) -> None:
        body = claim.payload.encode("utf-8")
        headers = spec.signed_headers(claim.secret, claim.webhook_id, now, body)
        started = time.perf_counter()
        answer = self.poster(claim.url, body, headers)
        seconds = time.perf_counter() - started
        with self.db.transaction() as session:
            kept = self._record(session, claim, now, answer, seconds, result)
        if not kept:
            result.lost += 1

    def _record(
        self,
        session: Session,
        claim: outbox.MessageClaim,
        now: datetime,
        answer: Answer,
        seconds: float,
        result: Round,
    ) -> bool:
        status = answer.status
        if status is not None and 200 <= status < 300:
            result.delivered += 1
            return outbox.message_delivered(session, claim, now, status, seconds)
        if status == 410:
            result.gone += 1
            log.warning("webhook endpoint %s answered 410 Gone: disabled", claim.endpoint_id)
            return outbox.endpoint_gone(session, claim, now, answer.error or "410", seconds)
        error = answer.error or f"HTTP {status}"
        retry_at = spec.next_attempt_at(claim.attempts + 1, now, self.rng)
        if retry_at is None:
            result.failed += 1
            log.warning(
                "webhook %s to endpoint %s given up: %s", claim.webhook_id, claim.endpoint_id, error
            )
        else:
            result.retried += 1
        return outbox.message_retry(session, claim, now, retry_at, status, error, seconds)

    def run(self) -> None:
        """Until `stop`: every POLL_SECONDS (or when woken), a delivery round."""
        while not self._stop.is_set():
            try:
                self._purge_now_and_then(self.clock.now())
                self.deliver_due()
            except DatabaseError as exc:
                log.warning("webhooks wait for the database: %s", exc.message)
            except Exception:  # the thread must outlive any one failure; the next poll retries
                log.exception("delivering webhooks failed")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        """Run in a daemon thread beside the sending passes."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the attempt in flight and end the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


@dataclass(frozen=True)
class NewEndpoint:
    """An endpoint just added, with its secret (shown this once)."""

    id: int
    url: str
    events: tuple[str, ...]
    secret: str


class WebhookEndpoints:
    """The endpoints' use cases, for the command line and the console."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def add(
        self, url: str, events: list[str] | None = None, *, actor: str = COMMAND_LINE
    ) -> NewEndpoint:
        """Add an endpoint (https, or http to loopback) taking `events` (None: every type);
        audited as `actor`'s change."""
        checked = spec.check_url(url)
        stored = spec.check_events(events)
        secret = spec.new_secret()
        names = spec.event_names(stored)
        detail = f"{checked} ({', '.join(names)})"
        with audited(self.db, actor, "webhook.add", detail, self.clock.now()) as session:
            endpoint_id = outbox.add_endpoint(session, checked, secret, stored, self.clock.now())
        return NewEndpoint(endpoint_id, checked, names, secret)

    def endpoints(self) -> list[outbox.EndpointRow]:
        """Every endpoint, with its messages pending, delivered and failed (never its secret)."""
        with self.db.read() as session:
            return outbox.endpoints(session)

    def disable(
        self,
        endpoint_id: int,
        reason: str = "disabled by an operator",
        *,
        actor: str = COMMAND_LINE,
    ) -> None:
        """Send it nothing more; its events are kept, and sent once it is enabled again."""
        detail = f"endpoint {endpoint_id}: {reason}"
        with audited(self.db, actor, "webhook.disable", detail, self.clock.now()) as session:
            if not outbox.set_endpoint_enabled(session, endpoint_id, False, reason):
                raise UnknownEndpoint(endpoint_id)

    def enable(self, endpoint_id: int, *, actor: str = COMMAND_LINE) -> None:
        detail = f"endpoint {endpoint_id}"
        with audited(self.db, actor, "webhook.enable", detail, self.clock.now()) as session:
            if not outbox.set_endpoint_enabled(session, endpoint_id, True, None):
                raise UnknownEndpoint(endpoint_id)

    def remove(self, endpoint_id: int, *, actor: str = COMMAND_LINE) -> None:
        """Delete the endpoint and everything waiting for it."""
        detail = f"endpoint {endpoint_id}"
        with audited(self.db, actor, "webhook.remove", detail, self.clock.now()) as session:
            if not outbox.remove_endpoint(session, endpoint_id):
                raise UnknownEndpoint(endpoint_id)

    def retry_failed(self, endpoint_id: int, *, actor: str = COMMAND_LINE) -> int:
        """Put the endpoint's given-up messages back on a fresh schedule; how many."""
        now = self.clock.now()
        with audited(
            self.db, actor, "webhook.retry_failed", f"endpoint {endpoint_id}", now
        ) as session:
            if not outbox.endpoint_exists(session, endpoint_id):
                raise UnknownEndpoint(endpoint_id)
            return outbox.requeue_failed(session, endpoint_id, now)

    def attempts(self, endpoint_id: int, limit: int = 50) -> list[outbox.AttemptRow]:
        """The endpoint's latest attempts, newest first."""
        with self.db.read() as session:
            if not outbox.endpoint_exists(session, endpoint_id):
                raise UnknownEndpoint(endpoint_id)
            return outbox.recent_attempts(session, endpoint_id, limit)
