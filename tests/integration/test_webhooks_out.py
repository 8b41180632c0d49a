"""Outgoing webhooks against a real receiver (its own process, checking signatures with the
`standardwebhooks` package): order, retries on the injected clock, a receiver killed
mid-request, disabled and gone endpoints, and events written in the change's transaction."""

from __future__ import annotations

import quopri
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from campaign.domain import webhooks as spec
from campaign.domain.statuses import SubscriberStatus
from campaign.domain.subscriber_fields import FieldDef, FieldKind
from campaign.engine import App
from campaign.people import clicks, signups, subscriptions
from campaign.storage import store
from campaign.storage.models import WebhookEvent
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer, free_port
from tests.webhook_receiver import Receiver

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

Listen = Callable[..., Receiver]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Callable[[str], Receiver]]:
    """Receivers on a free loopback port, each logging to its own file; stopped after."""
    started: list[Receiver] = []

    def make(secret: str, port: int | None = None) -> Receiver:
        one = Receiver(port or free_port(), secret, tmp_path / f"received-{len(started)}.jsonl")
        started.append(one)
        return one

    yield make
    for one in started:
        one.stop()


def _endpoint(
    app: App, receiver: Callable[[str], Receiver], answers: str = "200", **kw: object
) -> tuple[int, Receiver]:
    port = free_port()
    added = app.webhooks.add(f"http://127.0.0.1:{port}/hooks", **kw)  # type: ignore[arg-type]
    return added.id, receiver(added.secret, port).start(answers)  # type: ignore[call-arg]


def _subscribe(app: App, email: str) -> None:
    subscriptions.subscribe(app.db, app.plan, email=email, first_name=None, timezone=None, now=NOW)


def _types(received: list[dict[str, object]]) -> list[str]:
    return [str(entry["body"]["type"]) for entry in received]  # type: ignore[index]


def test_signup_to_unsubscribe_posts_signed_events_in_order(
    engine: EngineFactory, smtp_server: SMTPServer, receiver: Callable[[str], Receiver]
) -> None:
    """Sign up, confirm, get the welcome, unsubscribe: the receiver gets subscriber.confirmed,
    delivery.sent and subscriber.unsubscribed, in that order, each validly signed."""
    app, clock = engine(NOW)
    endpoint, hooks = _endpoint(app, receiver)
    app.signups.signup(
        email="ann@example.org",
        first_name="Ann",
        timezone="UTC",
        visitor=signups.Visitor(),
        now=NOW,
    )
    app.signup_mail.drain(NOW)
    [confirmation] = smtp_server.to("ann@example.org")
    text = quopri.decodestring(confirmation.data).decode()
    token = re.search(r"/confirm/([A-Za-z0-9_.=-]+)", text).group(1)  # type: ignore[union-attr]
    app.signups.confirm(token, signups.Visitor(), NOW)
    tick(app, clock, NOW + timedelta(minutes=1))  # the welcome
    assert len(smtp_server.to("ann@example.org")) == 2
    app.unsubscribe("ann@example.org", now=NOW + timedelta(minutes=2))

    result = app.webhook_deliverer.deliver_due(NOW + timedelta(minutes=3))

    received = hooks.received()
    assert (result.delivered, _types(received)) == (
        3,
        ["subscriber.confirmed", "delivery.sent", "subscriber.unsubscribed"],
    )
    assert all(entry["valid"] for entry in received)
    assert len({entry["id"] for entry in received}) == 3
    sent = received[1]["body"]
    assert sent["data"]["subscriber"]["email"] == "ann@example.org"  # type: ignore[index]
    assert sent["data"]["delivery"]["step"] == "welcome"  # type: ignore[index]
    assert [a.status_code for a in app.webhooks.attempts(endpoint)] == [200, 200, 200]


def test_subscriber_events_carry_the_stored_custom_fields(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """A receiver syncing a CRM gets the values the person gave, and `{}` for one who gave none."""
    app, _ = engine(NOW)
    _, hooks = _endpoint(app, receiver)
    knee = FieldDef("pain_area", FieldKind.CHOICE, "upper-back", "Area", choices=("neck", "knee"))
    for email in ("kim@example.org", "lou@example.org"):
        _subscribe(app, email)
    subscriptions.update_fields(
        app.db,
        app.plan,
        email="kim@example.org",
        fields={"pain_area": "knee"},
        now=NOW,
        declared={"pain_area": knee},
    )
    for email in ("kim@example.org", "lou@example.org"):
        app.unsubscribe(email, now=NOW + timedelta(minutes=1))
    app.webhook_deliverer.deliver_due(NOW + timedelta(minutes=2))
    people = [entry["body"]["data"]["subscriber"] for entry in hooks.received()]  # type: ignore[index]
    assert [(p["email"], p["status"], p["fields"]) for p in people] == [
        ("kim@example.org", "unsubscribed", {"pain_area": "knee"}),
        ("lou@example.org", "unsubscribed", {}),
    ]


def test_a_failing_endpoint_is_retried_on_schedule_and_later_events_wait(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """Two 500s then 200s: the first event is tried at the start, after ~5 s and after ~5 min
    (same webhook-id, a fresh signature each time); the subscriber's next event waits for it,
    another subscriber's does not."""
    app, _ = engine(NOW)
    endpoint, hooks = _endpoint(app, receiver, "500,500,200")
    _subscribe(app, "a@example.org")
    _subscribe(app, "b@example.org")
    app.unsubscribe("a@example.org", now=NOW)
    app.subscribe("a@example.org", resubscribe=True, now=NOW)  # a's second event
    deliver = app.webhook_deliverer.deliver_due

    assert deliver(NOW).retried == 1
    assert deliver(NOW + timedelta(seconds=4)).retried == 0  # not due yet (5 s, less 10%)
    assert deliver(NOW + timedelta(seconds=6)).retried == 1
    assert deliver(NOW + timedelta(seconds=6, minutes=4)).retried == 0
    app.unsubscribe("b@example.org", now=NOW + timedelta(minutes=5))
    assert deliver(NOW + timedelta(seconds=6, minutes=6)).delivered == 3

    received = hooks.received()
    assert [entry["answer"] for entry in received] == ["500", "500", "200", "200", "200"]
    first, retry, last = received[:3]
    assert first["id"] == retry["id"] == last["id"]
    assert first["timestamp"] < retry["timestamp"] < last["timestamp"]
    assert all(entry["valid"] for entry in received)
    of_a = [e for e in received[2:] if e["body"]["data"]["subscriber"]["email"] == "a@example.org"]  # type: ignore[index]
    assert _types(of_a) == ["subscriber.unsubscribed", "subscriber.confirmed"]
    attempts = app.webhooks.attempts(endpoint)
    assert [a.status_code for a in reversed(attempts)] == [500, 500, 200, 200, 200]
    assert attempts[-1].error == "HTTP 500 Internal Server Error"


def test_an_event_whose_receiver_died_mid_request_is_sent_again_with_the_same_id(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """The receiver reads the request and is killed before answering: the event stays pending
    and, once a receiver is back, is delivered with the same webhook-id."""
    app, _ = engine(NOW)
    _, dying = _endpoint(app, receiver, "hang")
    _subscribe(app, "a@example.org")
    app.unsubscribe("a@example.org", now=NOW)
    outcome: list[object] = []
    attempt = threading.Thread(
        target=lambda: outcome.append(app.webhook_deliverer.deliver_due(NOW))
    )
    attempt.start()
    [in_flight] = dying.wait_for(1)
    dying.kill()
    attempt.join(timeout=20)
    assert outcome[0].retried == 1  # type: ignore[attr-defined]

    back = receiver(dying.secret, dying.port).start("200")
    assert app.webhook_deliverer.deliver_due(NOW + timedelta(seconds=6)).delivered == 1
    [again] = back.received()
    assert again["id"] == in_flight["id"]
    assert again["valid"]


def test_a_disabled_endpoint_keeps_its_events_until_enabled(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """Events that happen while an endpoint is disabled are delivered once it is enabled."""
    app, _ = engine(NOW)
    endpoint, hooks = _endpoint(app, receiver)
    app.webhooks.disable(endpoint)
    _subscribe(app, "a@example.org")
    app.unsubscribe("a@example.org", now=NOW)
    assert app.webhook_deliverer.deliver_due(NOW).delivered == 0
    [row] = app.webhooks.endpoints()
    assert (row.enabled, row.pending, hooks.received()) == (False, 1, [])
    app.webhooks.enable(endpoint)
    assert app.webhook_deliverer.deliver_due(NOW).delivered == 1
    assert _types(hooks.received()) == ["subscriber.unsubscribed"]


def test_410_gone_disables_the_endpoint_and_keeps_the_event(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """A 410 answer disables the endpoint (saying why); the event waits for a re-enable."""
    app, _ = engine(NOW)
    endpoint, hooks = _endpoint(app, receiver, "410,200")
    _subscribe(app, "a@example.org")
    app.unsubscribe("a@example.org", now=NOW)
    assert app.webhook_deliverer.deliver_due(NOW).gone == 1
    [row] = app.webhooks.endpoints()
    assert (row.enabled, row.disabled_reason, row.pending) == (
        False,
        "the endpoint answered 410 Gone",
        1,
    )
    assert app.webhook_deliverer.deliver_due(NOW + timedelta(hours=1)).delivered == 0
    app.webhooks.enable(endpoint)
    assert app.webhook_deliverer.deliver_due(NOW + timedelta(hours=1)).delivered == 1
    assert [entry["answer"] for entry in hooks.received()] == ["410", "200"]


def test_an_endpoint_failing_for_a_day_has_its_event_given_up_visibly(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """After the whole schedule (8 attempts over about a day) the event is marked failed,
    the subscriber's next event goes, and `retry_failed` queues the failed one again."""
    app, _ = engine(NOW)
    endpoint, hooks = _endpoint(app, receiver, "500")
    _subscribe(app, "a@example.org")
    app.unsubscribe("a@example.org", now=NOW)
    at = NOW
    for delay in (timedelta(0), *spec.RETRY_DELAYS):
        at += delay * 1.2
        app.webhook_deliverer.deliver_due(at)
    assert at - NOW > timedelta(hours=24)
    [row] = app.webhooks.endpoints()
    assert (row.failed, row.pending, len(hooks.received())) == (1, 0, 8)
    assert app.webhooks.retry_failed(endpoint) == 1
    assert app.webhooks.endpoints()[0].pending == 1


def test_a_rolled_back_change_writes_no_event_and_no_endpoint_writes_none(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """An unsubscribe whose transaction rolls back leaves no event; with no endpoint a
    committed one writes none either; with one, it writes exactly one."""
    app, _ = engine(NOW)
    _subscribe(app, "a@example.org")
    _subscribe(app, "b@example.org")

    def unsubscribe(email: str, fail: bool) -> None:
        with app.db.transaction() as session:
            known = store.find_subscriber(session, email)
            assert known is not None
            store.leave(session, known.id, SubscriberStatus.UNSUBSCRIBED, NOW)
            if fail:
                raise RuntimeError("rolled back")

    def events() -> int:
        with app.db.read() as session:
            return int(session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)

    unsubscribe("a@example.org", fail=False)
    assert events() == 0  # no endpoint: nothing written
    _endpoint(app, receiver)
    with pytest.raises(RuntimeError):
        unsubscribe("b@example.org", fail=True)
    assert events() == 0
    unsubscribe("b@example.org", fail=False)
    assert events() == 1


def test_two_deliverers_post_each_event_once(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """Two engines deliver the same outbox at the same moment: every event arrives once."""
    first, _ = engine(NOW)
    second, _ = engine(NOW)
    _, hooks = _endpoint(first, receiver)
    emails = [f"p{n}@example.org" for n in range(20)]
    for email in emails:
        _subscribe(first, email)
        first.unsubscribe(email, now=NOW)
    go = threading.Barrier(2)

    def deliver(app: App) -> None:
        go.wait()
        app.webhook_deliverer.deliver_due(NOW)

    threads = [threading.Thread(target=deliver, args=(app,)) for app in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    received = hooks.received()
    assert len(received) == 20
    assert sorted(e["body"]["data"]["subscriber"]["email"] for e in received) == sorted(emails)  # type: ignore[index]


def test_forgetting_a_person_erases_their_events_even_undelivered(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """`forget` leaves no event carrying the address behind, and nothing is posted for them."""
    app, _ = engine(NOW)
    _, hooks = _endpoint(app, receiver)
    _subscribe(app, "a@example.org")
    _subscribe(app, "b@example.org")
    app.unsubscribe("a@example.org", now=NOW)
    app.unsubscribe("b@example.org", now=NOW)
    subscriptions.forget_person(app.db, "a@example.org", NOW)
    assert app.webhook_deliverer.deliver_due(NOW).delivered == 1
    assert [e["body"]["data"]["subscriber"]["email"] for e in hooks.received()] == [  # type: ignore[index]
        "b@example.org"
    ]


def test_the_engines_deliverer_thread_posts_events_as_they_happen(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """Started as `campaign run` starts it, the deliverer posts a new event without anyone
    calling it, and stops when told."""
    app, _ = engine(NOW)
    _, hooks = _endpoint(app, receiver)
    _subscribe(app, "a@example.org")
    app.webhook_deliverer.start()
    try:
        app.unsubscribe("a@example.org", now=NOW)
        app.webhook_deliverer.wake()
        assert _types(hooks.wait_for(1)) == ["subscriber.unsubscribed"]
    finally:
        app.webhook_deliverer.stop()


def test_a_hard_bounce_and_a_click_become_events_with_their_details(
    engine: EngineFactory, smtp_server: SMTPServer, receiver: Callable[[str], Receiver]
) -> None:
    """A 550 at RCPT posts delivery.failed (the server's reply) then subscriber.bounced; a
    tracked link followed twice posts one click with its URL; a filter keeps the rest out."""
    app, clock = engine(NOW, TRACK_CLICKS="true")
    _, hooks = _endpoint(app, receiver, events=["delivery.failed", "subscriber.bounced", "click"])
    smtp_server.handler.rcpt_replies["gone@example.org"] = "550 5.1.1 No such user"
    _subscribe(app, "gone@example.org")
    _subscribe(app, "reader@example.org")
    tick(app, clock, NOW)
    with app.db.read() as session:
        reader = store.find_subscriber(session, "reader@example.org")
        assert reader is not None
        [delivery] = store.everything_about(session, reader.id)["deliveries"]
    link = app.composer.click_url(delivery["id"], "https://example.org/ebook", NOW)
    for _ in range(2):
        clicks.follow(
            app.db, app.settings.secret_key.get_secret_value(), link.rsplit("/", 1)[1], NOW
        )

    assert app.webhook_deliverer.deliver_due(NOW).delivered == 3
    received = {entry["body"]["type"]: entry["body"]["data"] for entry in hooks.received()}  # type: ignore[index]
    of_gone = [t for t in received if t != "click"]
    assert of_gone == ["delivery.failed", "subscriber.bounced"]  # in order for that person
    failed, bounced, click = (received[t] for t in (*of_gone, "click"))
    assert failed["delivery"]["status"] == "bounced"
    assert "550 5.1.1 No such user" in failed["error"]
    assert bounced["subscriber"]["email"] == "gone@example.org"
    assert (click["url"], click["subscriber"]["email"]) == (
        "https://example.org/ebook",
        "reader@example.org",
    )


def test_a_pass_sends_while_the_deliverer_waits_on_a_hung_endpoint(
    engine: EngineFactory, smtp_server: SMTPServer, receiver: Callable[[str], Receiver]
) -> None:
    """The deliverer's thread is stuck in a request the endpoint never answers: a sending
    pass (which writes delivery.sent events for it) still sends at once."""
    app, clock = engine(NOW)
    _, hung = _endpoint(app, receiver, "hang")
    _subscribe(app, "first@example.org")
    app.unsubscribe("first@example.org", now=NOW)
    app.webhook_deliverer.start()
    try:
        hung.wait_for(1)  # the request is in flight, unanswered
        _subscribe(app, "second@example.org")
        result = tick(app, clock, NOW)
        assert result.sent == 1
        assert len(smtp_server.to("second@example.org")) == 1
    finally:
        hung.kill()
        app.webhook_deliverer.stop()
    [row] = app.webhooks.endpoints()
    assert row.pending == 2  # the unanswered one (to retry) and the welcome's delivery.sent


def test_delivered_events_are_purged_after_30_days_and_failed_ones_kept(
    engine: EngineFactory, receiver: Callable[[str], Receiver]
) -> None:
    """A month after delivery an event and its attempts are gone; a given-up one stays."""
    app, _ = engine(NOW)
    endpoint, _ = _endpoint(app, receiver, "200,500")
    for email in ("a@example.org", "b@example.org"):
        _subscribe(app, email)
        app.unsubscribe(email, now=NOW)
    at = NOW
    for delay in (timedelta(0), *spec.RETRY_DELAYS):  # a: delivered; b: 8 failures
        at += delay * 1.2
        app.webhook_deliverer.deliver_due(at)
    assert app.webhook_deliverer.purge(NOW + timedelta(days=29)) == 0
    assert app.webhook_deliverer.purge(NOW + timedelta(days=31)) == 1
    [row] = app.webhooks.endpoints()
    assert (row.delivered, row.failed) == (0, 1)
    assert {a.state for a in app.webhooks.attempts(endpoint)} == {"failed"}
    with app.db.read() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
