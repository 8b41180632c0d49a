"""Prometheus metrics: counters this process sees, plus gauges read from the database."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """One registry per app, so tests and several apps in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.signups = Counter(
            "campaign_signups",
            "Signup form submissions, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "campaign_webhook_events",
            "Bounces and complaints posted by mail providers (webhooks), by provider and outcome: "
            "applied, duplicate, not_ours; rejected counts refused posts (forged, malformed).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.confirmations = Counter(
            "campaign_confirmations", "Double opt-in confirmations.", registry=self.registry
        )
        self.unsubscribes = Counter(
            "campaign_unsubscribes",
            "Unsubscribes over HTTP, by method.",
            ["method"],
            registry=self.registry,
        )
        self.pass_seconds = Histogram(
            "campaign_pass_seconds",
            "Duration of sending passes run by this process.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
            registry=self.registry,
        )
        self.claims_lost = Counter(
            "campaign_claims_lost",
            "Claims this process lost to another engine after their lease ran out (it was "
            "paused, slow or cut off); it did not send them.",
            registry=self.registry,
        )
        self.unknown_outcomes = Counter(
            "campaign_unknown_outcomes",
            "Messages whose final reply never came (they may have arrived): retried once.",
            registry=self.registry,
        )
        self.pass_errors = Counter(
            "campaign_pass_errors",
            "Sending passes of this process that ended in an unexpected error (a bug); "
            "/healthz says which while the last pass failed.",
            registry=self.registry,
        )
        self.emails = Gauge(
            "campaign_emails",
            "Deliveries in the database, by plan step and status.",
            ["step", "status"],
            registry=self.registry,
        )
        self.subscribers = Gauge(
            "campaign_subscribers", "Subscribers by status.", ["status"], registry=self.registry
        )
        self.backlog = Gauge(
            "campaign_backlog_due", "Emails due now and not yet sent.", registry=self.registry
        )
        self.oldest_due_age = Gauge(
            "campaign_oldest_due_age_seconds",
            "Seconds the longest-waiting email due now has waited (0: nothing is due).",
            registry=self.registry,
        )
        self.suppressions = Gauge(
            "campaign_suppressions",
            "Addresses never mailed again, by reason (bounced, complained, ...): bounce and "
            'complaint rates are their growth over campaign_emails{status="sent"}\'s.',
            ["reason"],
            registry=self.registry,
        )
        self.welcome_seconds = Histogram(
            "campaign_welcome_latency_seconds",
            "From a subscriber's enrollment (confirmation, or signup without double opt-in) to "
            "the mail server's 250 for the welcome email, as sent by this process.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
            registry=self.registry,
        )
        self.last_pass_age = Gauge(
            "campaign_last_pass_age_seconds",
            "Seconds since any scheduler finished a pass.",
            registry=self.registry,
        )

        self.paused = Gauge(
            "campaign_sending_paused",
            "1 while sending is paused by an operator problem (the mail server's connection, "
            "TLS or auth; a database that refuses writes).",
            registry=self.registry,
        )

        self.plan_edit_refused = Gauge(
            "campaign_plan_edit_refused",
            "1 while the last saved edit of the plan or a template is refused (invalid, or a "
            "changed plan id): the last good plan keeps sending. /healthz says why.",
            registry=self.registry,
        )

    def update(
        self,
        *,
        emails: Mapping[tuple[str, str], int],
        subscribers: Mapping[str, int],
        backlog: int,
        last_pass_age: float | None,
        oldest_due_age: float | None = None,
        suppressions: Mapping[str, int] | None = None,
        paused: bool = False,
        refuses_writes: bool = False,
    ) -> None:
        for (step, status), count in emails.items():
            self.emails.labels(step=step, status=status).set(count)
        for status, count in subscribers.items():
            self.subscribers.labels(status=status).set(count)
        self.backlog.set(backlog)
        self.oldest_due_age.set(oldest_due_age or 0.0)
        for reason, count in (suppressions or {}).items():
            self.suppressions.labels(reason=reason).set(count)
        self.last_pass_age.set(last_pass_age if last_pass_age is not None else float("nan"))
        self.paused.set(1 if paused or refuses_writes else 0)

    def observe_welcomes(self, seconds: Iterable[float]) -> None:
        for latency in seconds:
            self.welcome_seconds.observe(latency)

    def render(self) -> bytes:
        return generate_latest(self.registry)
