"""Tables: subscribers, their enrollments in a plan, and the delivery log (one row per step)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from campaign.domain.statuses import ConsentKind, DeliveryStatus, EnrollmentStatus, SubscriberStatus

SUBSCRIBER_STATUSES = tuple(SubscriberStatus)
ENROLLMENT_STATUSES = tuple(EnrollmentStatus)
DELIVERY_STATUSES = tuple(DeliveryStatus)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite stores no offset, so store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return utc_instant(value)


def utc_instant(value: Any) -> datetime | None:
    """A stored instant (naive UTC; text when SQLite is read by plain SQL) as an aware one."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    instant: datetime = value.replace(tzinfo=UTC)
    return instant


def _in(column: str, values: tuple[str, ...]) -> str:
    # str(): an enum member's repr is not its SQL literal.
    return f"{column} IN ({', '.join(repr(str(v)) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        # case-insensitive uniqueness: Ann@X.org and ann@x.org are one person.
        Index("uq_subscribers_email_lower", func.lower("email"), unique=True),
        # purging pending signups that were never confirmed.
        Index("ix_subscribers_status_created_at", "status", "created_at"),
        # The console's search, a prefix of the address or the name (store.console): under
        # the "C" collation one index serves both LIKE 'prefix%' and the ordering, whatever
        # the database's collation. SQLite scans (it needs none of this to be usable).
        Index("ix_subscribers_email_search", text('lower(email) COLLATE "C"')).ddl_if(
            dialect="postgresql"
        ),
        Index("ix_subscribers_name_search", text('lower(first_name) COLLATE "C"'), "id").ddl_if(
            dialect="postgresql"
        ),
        CheckConstraint(_in("status", SUBSCRIBER_STATUSES), name="status"),
        # Links name subscribers: SQLite must never hand an erased person's id to someone else.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str] = mapped_column(String(100), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    status: Mapped[str] = mapped_column(String(16), default=SubscriberStatus.PENDING)
    source: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: custom fields (the plan's `fields:`) as a JSON object in text: alike on both databases.
    fields: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        # A returning subscriber starts afresh in a new enrollment; the old ones stay, with
        # their deliveries, as history. At most one per subscriber and plan is active.
        Index(
            "uq_enrollments_active_subscriber_plan",
            "subscriber_id",
            "plan_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_enrollments_subscriber_id_plan_id", "subscriber_id", "plan_id"),
        # the due-query: active enrollments by due time.
        Index("ix_enrollments_due", "status", "next_due_at"),
        CheckConstraint(_in("status", ENROLLMENT_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    plan_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=EnrollmentStatus.ACTIVE)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the plan day of the last step settled (sent, failed or skipped); -1 before the welcome.
    #: The next step is the plan's first one after this day that was not settled yet.
    last_day: Mapped[int] = mapped_column(Integer, default=-1)
    #: when the next step is due; while claimed, the claimer's clock plus the lease (so that
    #: the due-query's index range skips it; the lease below is what decides).
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: who holds the enrollment's next step (a token unique per process and pass), and until
    #: when by the database's clock. Only the holder may record anything but a 250 for it.
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        # the console's Today page: emails sent in the last 24 hours, by hour.
        Index("ix_deliveries_sent_at", "sent_at"),
        # the guarantee: one row, and so at most one send, per step per enrollment.
        UniqueConstraint("enrollment_id", "step_key"),
        UniqueConstraint("message_id"),
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        # Click links name deliveries: never reuse an erased person's delivery id (SQLite).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    step_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id: Mapped[str] = mapped_column(String(255))
    #: tries whose outcome stayed unknown (no reply to the final dot): one is retried, never two.
    unknown_outcomes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the subject test's variant this delivery carries, chosen when the row is created and
    #: kept for its retries (None: the step tested no subject).
    variant: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: when the step was due at its first claim: its planned time, or the later day the daily
    #: cap held it to. A retry's lateness (catch_up: skip_after) counts from here too.
    #: None for deliveries created before this was kept (their retries count from the plan).
    first_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Consent(Base):
    """Proof of opt-in: who asked, when, from where (kept until the person is forgotten)."""

    __tablename__ = "consents"
    __table_args__ = (CheckConstraint(_in("kind", tuple(ConsentKind)), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(400), default="")
    source_page: Mapped[str] = mapped_column(String(400), default="")


class Suppression(Base):
    """Addresses never to mail again, kept only as a SHA-256 hash after `campaign forget`."""

    __tablename__ = "suppressions"
    #: the console lists them newest first.
    __table_args__ = (Index("ix_suppressions_created_at", "created_at"),)

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the address, when it may be kept (an operator's own entry; never a forgotten person's):
    #: what the console lists and searches. Empty: only the hash is known.
    email: Mapped[str] = mapped_column(String(320), default="", server_default="")
    #: who added it: "console", "cli", "bounces", "webhook", ... (empty: before 0011).
    source: Mapped[str] = mapped_column(String(32), default="", server_default="")
    note: Mapped[str] = mapped_column(Text, default="", server_default="")


class Heartbeat(Base):
    """One row per running scheduler: when its last pass finished (for /healthz)."""

    __tablename__ = "heartbeats"

    owner: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_pass_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_pass_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    #: why this scheduler's sending is paused (None while it sends normally).
    paused_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Click(Base):
    """A click on a tracked link (TRACK_CLICKS=true), counted per step in `campaign stats`."""

    __tablename__ = "clicks"
    #: a replayed click (a scanner, a reload) counts once per delivery (subscriber, step) and link.
    __table_args__ = (UniqueConstraint("delivery_id", "url_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    #: SHA-256 of the URL (hex): URLs may be longer than an index entry allows.
    url_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class SendBudget(Base):
    """A token bucket per sending limit, shared by every engine on this database."""

    __tablename__ = "send_budget"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Confirmation(Base):
    """A confirmation email a signup queued: sent off the request path by the engine, and the
    one thing its link names (so the link is good for that signup only)."""

    __tablename__ = "confirmations"
    __table_args__ = (
        # the sender's query: unsent rows, by when they may be tried.
        Index("ix_confirmations_due", "sent_at", "failed_at", "next_try_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: not before this instant (a retry after a temporary failure).
    next_try_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the sender holding it, until when (its clock): a crashed sender's claim is taken over.
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: when the server took it.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: when the sender gave up (a permanent refusal, too many tries): `last_error` says why.
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the link was used to confirm.
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the link stopped working: the person unsubscribed, confirmed by another link, or left.
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: the plan the signup named (None: the default plan).
    plan_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ProviderEventRecord(Base):
    """A bounce or complaint a mail provider posted (webhook), kept so that the same event
    posted twice (a retry, a replay) is applied once: its (provider, event id) is unique."""

    __tablename__ = "provider_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    #: the provider's own id for the event (and recipient): at most 255 characters kept.
    event_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))
    #: "applied" or "not ours".
    verdict: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class WebhookNonce(Base):
    """A one-time token of a signature that does not cover the body (Mailgun's), with the
    digest of the body it came with: the same token with another body is a forgery."""

    __tablename__ = "webhook_nonces"
    __table_args__ = (UniqueConstraint("provider", "nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    nonce: Mapped[str] = mapped_column(String(255))
    body_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ApiKey(Base):
    """A bearer token of the JSON API: only the SHA-256 of its secret is kept (the token is
    shown once, at creation); a revoked key stays listed, refused."""

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("public_id"), UniqueConstraint("name"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the id written in the token (`cpk_<public_id>_<secret>`) and in `api-keys list`.
    public_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(100))
    #: hex SHA-256 of the secret: a 256-bit random secret needs no slow hash.
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Operator(Base):
    """A person who signs in to the operators' console; the password only as an Argon2id hash."""

    __tablename__ = "operators"
    __table_args__ = (Index("uq_operators_email_lower", func.lower("email"), unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OperatorSession(Base):
    """A signed-in browser: kept by the SHA-256 of its cookie's value, never the value."""

    __tablename__ = "operator_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    operator_id: Mapped[int] = mapped_column(
        ForeignKey("operators.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    client: Mapped[str] = mapped_column(String(64), default="")


class LoginFailure(Base):
    """A failed sign-in, counted per account and per client address by the login throttle."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_email_at", "email", "at"),
        Index("ix_login_failures_client_at", "client", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the address typed, lower-cased (an account or not: guessing is counted either way).
    email: Mapped[str] = mapped_column(String(320))
    client: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """A change made by an operator (console or command line): who, what, when, detail."""

    __tablename__ = "audit_log"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    #: the operator's address as it was (kept after the account is removed).
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="")


class WebhookEndpoint(Base):
    """Where outgoing webhooks go: a URL, its signing secret and the event types it takes."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    #: `whsec_` and base64: the receiver's copy verifies the signatures (shown once, at `add`).
    secret: Mapped[str] = mapped_column(String(100))
    #: `*` (every type) or `,type,type,` (see campaign.domain.webhooks.check_events).
    events: Mapped[str] = mapped_column(Text, default="*")
    #: a disabled endpoint is sent nothing, but its events are still kept for it.
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: why it was disabled (an operator, or the endpoint answered 410 Gone).
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookEvent(Base):
    """One event for outgoing webhooks, written in the transaction of the change it tells."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("message_id"),
        # one delivery.sent per delivery however often the 250 is recorded.
        Index("ix_webhook_events_delivery_id", "delivery_id"),
        # `campaign forget` erases a person's events too.
        Index("ix_webhook_events_subscriber_id", "subscriber_id"),
        # ids order the events: never reuse one (SQLite).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the webhook-id header: the same on every attempt, so receivers can drop duplicates.
    message_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(32))
    #: whose event (no foreign key: the event outlives a forgotten subscriber's rows).
    subscriber_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delivery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the JSON body, fixed when the event happened.
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookMessage(Base):
    """One event on its way to one endpoint: pending until a 2xx (delivered) or until the
    retry schedule is spent (failed)."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        # the deliverer's query: pending messages by when they may be tried.
        Index("ix_webhook_messages_due", "state", "next_try_at"),
        # order per subscriber per endpoint: an earlier pending message holds later ones back.
        Index("ix_webhook_messages_order", "endpoint_id", "subscriber_id", "state"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: pending, delivered or failed.
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: the deliverer holding it, until when (its clock): a crashed deliverer's claim is taken over.
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class WebhookAttempt(Base):
    """One try to deliver a message: what the endpoint answered, or why nothing came back."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint_id_id", "endpoint_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_messages.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
