"""The reply to the final dot (RFC 5321 4.5.3.2.6, RFC 1047): a server that stores the message
and answers late or never delivers at most two copies, never counts as a bounce, and a reply
that is only slower than SMTP_TIMEOUT is an ordinary send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from campaign.engine import App
from campaign.insights import reports
from campaign.people import subscriptions
from campaign.storage.models import Delivery, Enrollment, Subscriber
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
ANN = "ann@example.org"
#: a short final wait for the tests (the default is 600 s), and a server slower than it.
FAST = {"SMTP_FINAL_REPLY_TIMEOUT": "1", "SMTP_TIMEOUT": "5", "RETRY_BASE_SECONDS": "60"}
LATE = 2.0


def _subscribe(app: App, email: str = ANN) -> None:
    subscriptions.subscribe(
        app.db, app.plan, email=email, first_name="Ann", timezone="UTC", now=START
    )


def _welcome(app: App) -> tuple[str, int, int]:
    """Ann's welcome delivery: its status, attempts and unknown outcomes."""
    with app.db.transaction() as session:
        status, attempts, unknown = session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.unknown_outcomes)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
            .where(Delivery.step_key == "welcome", Subscriber.email == ANN)
        ).one()
    return status, attempts, unknown


def _subscriber_status(app: App) -> str:
    with app.db.transaction() as session:
        return str(session.scalar(select(Subscriber.status).where(Subscriber.email == ANN)))


def _message_ids(server: SMTPServer) -> list[str]:
    return [str(r.message["Message-ID"]) for r in server.to(ANN)]


def test_no_final_reply_is_tried_once_more_after_a_delay_with_the_same_message_id(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The server stores the welcome and never answers its final dot: recorded as an unknown
    outcome (not a bounce), not sent again within the retry delay, then once more with the
    same Message-ID: two copies at most, and stats say so."""
    app, clock = engine(START, **FAST)
    _subscribe(app)
    smtp_server.handler.after_storing.append(LATE)
    first = tick(app, clock, START)
    assert (first.sent, first.unknown, first.bounced, first.failed) == (0, 1, 0, 0)
    assert _welcome(app) == ("retry", 1, 1)
    assert tick(app, clock, START + timedelta(seconds=20)).sent == 0  # only after a delay
    second = tick(app, clock, START + timedelta(hours=1))
    assert second.sent == 1
    ids = _message_ids(smtp_server)
    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert _welcome(app) == ("sent", 2, 1)
    assert _subscriber_status(app) == "active"
    [welcome] = [s for s in reports.stats(app.db, app.plan)["steps"] if s["key"] == "welcome"]
    assert (welcome["sent"], welcome["unknown"]) == (1, 1)


def test_a_connection_lost_after_the_final_dot_is_an_unknown_outcome(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """The server stores the message and closes the connection before its reply: an unknown
    outcome like a timeout (not a temporary failure retried up to MAX_ATTEMPTS times)."""
    app, clock = engine(START, **FAST)
    _subscribe(app)
    smtp_server.handler.after_storing.append("drop")
    result = tick(app, clock, START)
    assert (result.sent, result.unknown, result.retried) == (0, 1, 0)
    assert _welcome(app) == ("retry", 1, 1)
    assert tick(app, clock, START + timedelta(hours=1)).sent == 1
    assert len(_message_ids(smtp_server)) == 2


def test_a_second_unknown_outcome_is_final_and_the_plan_goes_on(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Twice no final reply: the step is settled as unknown after two copies, never sent a
    third time, the subscriber is not suppressed (even with SOFT_BOUNCE_LIMIT=1), and the next
    day's lesson still comes."""
    app, clock = engine(START, SOFT_BOUNCE_LIMIT="1", **FAST)
    _subscribe(app)
    smtp_server.handler.after_storing.extend([LATE, LATE])
    tick(app, clock, START)
    assert tick(app, clock, START + timedelta(hours=1)).unknown == 1
    assert _welcome(app) == ("unknown", 2, 2)
    for hours in (2, 3, 6):
        tick(app, clock, START + timedelta(hours=hours))
    assert len(_message_ids(smtp_server)) == 2
    assert _subscriber_status(app) == "active"
    tick(app, clock, START + timedelta(days=1, hours=1))
    steps = [str(r.message["X-Campaign-Step"]).split("/")[1] for r in smtp_server.to(ANN)]
    assert steps == ["welcome", "welcome", "day01"]


def test_with_no_unknown_retries_a_missing_final_reply_means_one_copy(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """UNKNOWN_OUTCOME_RETRIES=0: at most once. The step is settled as unknown at once."""
    app, clock = engine(START, UNKNOWN_OUTCOME_RETRIES="0", **FAST)
    _subscribe(app)
    smtp_server.handler.after_storing.append(LATE)
    assert tick(app, clock, START).unknown == 1
    assert _welcome(app) == ("unknown", 1, 1)
    for hours in (1, 6, 12):
        tick(app, clock, START + timedelta(hours=hours))
    assert len(_message_ids(smtp_server)) == 1


def test_a_final_reply_slower_than_smtp_timeout_is_an_ordinary_send(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """SMTP_TIMEOUT (1 s) covers every other stage; the final reply after 1.5 s is within
    SMTP_FINAL_REPLY_TIMEOUT (5 s): exactly one copy, recorded sent on the first attempt."""
    app, clock = engine(
        START, SMTP_TIMEOUT="1", SMTP_FINAL_REPLY_TIMEOUT="5", RETRY_BASE_SECONDS="60"
    )
    _subscribe(app)
    _subscribe(app, "bob@example.org")
    smtp_server.handler.after_storing.append(1.5)
    result = tick(app, clock, START)
    assert (result.sent, result.unknown) == (2, 0)
    assert len(smtp_server.received) == 2
    assert _welcome(app) == ("sent", 1, 0)
