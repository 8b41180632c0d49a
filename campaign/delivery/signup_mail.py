"""The email a signup asks for, sent by the engine off the request path, so a signup's answer
never tells (by its timing or status) whether an address was known or the relay was up:
confirmations queued in the database, and the welcome of a signup without double opt-in."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from campaign.clock import Clock
from campaign.content.compose import Recipient
from campaign.delivery.dispatch import Dispatcher
from campaign.domain.statuses import SubscriberStatus
from campaign.errors import (
    CampaignError,
    DatabaseError,
    PermanentFailure,
    TransportUnavailable,
    UnsendableAddress,
)
from campaign.people.signups import Signups
from campaign.storage import store

log = logging.getLogger("campaign.signup_mail")

#: how often an idle sender looks for confirmations queued by another instance (seconds).
POLL_SECONDS = 2.0
#: how long a claimed confirmation is this sender's before another may take it over.
CLAIM_LEASE = timedelta(minutes=5)
BATCH = 50
#: tries before a confirmation is given up; the retry delay doubles from RETRY_BASE.
MAX_ATTEMPTS = 6
RETRY_BASE = timedelta(seconds=30)
#: statuses that a confirmation link may (re)activate.
CONFIRMABLE = (SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED)


class SignupMail:
    """Sends queued confirmations and wakes the welcome of new subscribers, in a thread of its
    own (`start`) or when called (`drain`, for tests and `run_scheduler.py --once`)."""

    def __init__(
        self,
        signups: Signups,
        dispatcher: Dispatcher,
        clock: Clock,
        owner: str,
        on_welcome: Callable[[list[float]], None] | None = None,
    ) -> None:
        self.signups = signups
        #: told the seconds from enrollment to 250 of each welcome sent (for /metrics).
        self.on_welcome = on_welcome
        self.dispatcher = dispatcher
        self.clock = clock
        self.owner = owner
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._welcomes: list[int] = []
        self._thread: threading.Thread | None = None

    def wake(self, enrollment_id: int | None = None) -> None:
        """Have the thread look now (a signup queued a confirmation or enrolled someone)."""
        if enrollment_id is not None:
            with self._lock:
                self._welcomes.append(enrollment_id)
        self._wake.set()

    def drain(self, now: datetime) -> int:
        """Send every confirmation due at `now` and the welcomes asked for; how many sent."""
        sent = self.send_confirmations(now)
        self.send_welcomes(now)
        return sent

    def send_welcomes(self, now: datetime) -> None:
        with self._lock:
            enrollments, self._welcomes = self._welcomes, []
        for enrollment in enrollments:
            result = self.dispatcher.run_pass(now, None, only_enrollment=enrollment)
            if self.on_welcome is not None:
                self.on_welcome(result.welcome_seconds)
            if result.error:
                log.warning(
                    "welcome for enrollment %s waits for the next pass: %s",
                    enrollment,
                    result.error,
                )

    def send_confirmations(self, now: datetime) -> int:
        """Claim due confirmations (several senders share them: each goes once) and send them
        over one connection; a failure is retried later, with backoff."""
        sent = 0
        while True:
            with self.signups.db.transaction() as session:
                claims = store.claim_confirmations(session, self.owner, now, CLAIM_LEASE, BATCH)
            if not claims:
                return sent
            sent += self._send(claims, now)
            if len(claims) < BATCH:
                return sent

    def _send(self, claims: list[store.ConfirmationClaim], now: datetime) -> int:
        contents = self.dispatcher.contents()  # one snapshot of the plans for the batch
        sent = 0
        try:
            with self.signups.transport.open() as connection:
                for claim in claims:
                    # The confirmation of the plan the signup named (its subject promises that
                    # plan's ebook); the default plan's when it has none, or is gone.
                    content = contents.of(claim.plan_id) if claim.plan_id else None
                    if content is None or content.plan.confirmation is None:
                        content = contents.default
                    step, composer = content.plan.confirmation, content.composer
                    if claim.status not in CONFIRMABLE or step is None:
                        why = "no confirmation email in the plan" if step is None else claim.status
                        self._give_up(claim, f"not sent: {why}", now)
                        continue
                    # No first name: it is unconfirmed text that anyone may have typed in.
                    recipient = Recipient(claim.subscriber_id, claim.email, "")
                    try:
                        composed = composer.compose_confirmation(
                            recipient, claim.id, message_id=composer.new_message_id(), now=now
                        )
                        connection.send(composed.envelope, composed.data)
                    except (PermanentFailure, UnsendableAddress) as exc:
                        self._give_up(claim, exc.message, now)
                        continue
                    except TransportUnavailable:
                        raise
                    except (CampaignError, ValueError) as exc:  # temporary, unknown, render
                        self._retry(claim, getattr(exc, "message", str(exc)), now)
                        continue
                    with self.signups.db.transaction() as session:
                        store.confirmation_sent(session, claim.id, now)
                    sent += 1
        except TransportUnavailable as exc:
            log.warning("confirmation emails wait for the mail server: %s", exc.message)
            for claim in claims:  # those already sent are not held any more: a no-op
                self._retry(claim, exc.message, now, count=False)
        return sent

    def _retry(
        self, claim: store.ConfirmationClaim, error: str, now: datetime, *, count: bool = True
    ) -> None:
        attempts = claim.attempts + (1 if count else 0)
        if attempts >= MAX_ATTEMPTS:
            self._give_up(claim, error, now)
            return
        retry_at = now + RETRY_BASE * 2 ** min(attempts, 8)
        with self.signups.db.transaction() as session:
            store.confirmation_retry(session, claim.id, self.owner, error, retry_at)

    def _give_up(self, claim: store.ConfirmationClaim, error: str, now: datetime) -> None:
        log.info("confirmation %s not sent: %s", claim.id, error)
        with self.signups.db.transaction() as session:
            store.confirmation_failed(session, claim.id, self.owner, error, now)

    def _due(self, now: datetime) -> bool:
        with self._lock:
            if self._welcomes:
                return True
        with self.signups.db.read() as session:
            return store.due_confirmations(session, now) > 0

    def run(self) -> None:
        """Until `stop`: on each wake-up, or every POLL_SECONDS (a cheap query), send."""
        while not self._stop.is_set():
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                now = self.clock.now()
                if self._due(now):
                    self.drain(now)
            except DatabaseError as exc:
                log.warning("confirmation emails wait for the database: %s", exc.message)
            except Exception:  # the thread must outlive any one failure; the next poll retries
                log.exception("sending signup email failed")

    def start(self) -> None:
        """Run in a daemon thread beside the HTTP server."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="signup-mail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the message in flight and end the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
