"""The status vocabularies stored in the database: subscribers, enrollments, deliveries,
suppressions and consent records. Each value equals the string stored, so these compare
equal to what a query returns and are written unchanged."""

from __future__ import annotations

from enum import StrEnum


class SubscriberStatus(StrEnum):
    """Where a person stands with the campaign."""

    #: signed up, not confirmed yet (double opt-in)
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    #: an email to them bounced for good: only an operator lifts it
    BOUNCED = "bounced"
    #: they reported an email as spam: only an operator lifts it
    COMPLAINED = "complained"


#: Statuses a report put a person in: no signup or confirmation link brings them back.
STOPPED = (SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


class EnrollmentStatus(StrEnum):
    """Where one run of the plan for one subscriber stands."""

    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    """What happened to one step's email for one enrollment."""

    #: claimed, or waiting for its first try
    QUEUED = "queued"
    #: deferred after a temporary failure (or after an outcome that was unknown once)
    RETRY = "retry"
    SENT = "sent"
    FAILED = "failed"
    BOUNCED = "bounced"
    SKIPPED = "skipped"
    #: handed to the server twice with no final reply either time: it may or may not have
    #: arrived, and it is never sent again
    UNKNOWN = "unknown"


#: A delivery in one of these states is still to be sent: claimed, or awaiting a retry.
PENDING_DELIVERY = (DeliveryStatus.QUEUED, DeliveryStatus.RETRY)
#: A delivery in one of these states is done: its step never goes to that enrollment again.
SETTLED_DELIVERY = tuple(status for status in DeliveryStatus if status not in PENDING_DELIVERY)


class SuppressionReason(StrEnum):
    """Why an address (kept only as a hash) is never mailed again."""

    BOUNCED = "bounced"
    COMPLAINED = "complained"
    #: erased on request (`campaign forget`): their own confirmed signup lifts it
    FORGOTTEN = "forgotten"
    #: added by an operator (the console): only an operator lifts it
    MANUAL = "manual"


class ConsentKind(StrEnum):
    """What a consent record proves."""

    #: the signup form was sent
    SIGNUP = "signup"
    #: the confirmation link was followed
    CONFIRM = "confirm"
    #: an operator added or resubscribed them
    OPERATOR = "operator"
