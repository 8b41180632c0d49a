"""The console's use cases on both databases: subscriber search, one subscriber's record and
the actions on it (unsubscribe, resend the welcome, export, forget), the plan's timeline and
previews, and an import's row-by-row preview before it is committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign.engine import App
from campaign.errors import BadInput, UnknownStep, UnknownSubscriber
from campaign.insights import plan_page
from campaign.people import clicks, csv_import, directory, import_preview, subscriptions
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
WELCOME = "Your free ebook is here: Concepts of Self Healing"


def _add(app: App, *people: tuple[str, str]) -> None:
    for email, name in people:
        app.subscribe(email, name=name, timezone="UTC", now=NOW)


def _emails(found: directory.Found) -> list[str]:
    return [row.email for row in found.rows]


def test_search_finds_a_prefix_of_the_address_or_the_name_in_any_case(
    engine: EngineFactory,
) -> None:
    """'ANN' finds ann@… and Anna's address; 'b' finds bob@…; '%' and '_' match themselves."""
    app, _ = engine(NOW)
    _add(
        app,
        ("ann@example.org", "Ann"),
        ("zed@example.org", "Anna"),
        ("bob@example.org", "Robert"),
        ("c_d@example.org", ""),
    )
    assert _emails(directory.search(app.db, "ANN")) == ["ann@example.org", "zed@example.org"]
    assert _emails(directory.search(app.db, "  b ")) == ["bob@example.org"]
    assert _emails(directory.search(app.db, "c_")) == ["c_d@example.org"]
    assert _emails(directory.search(app.db, "%")) == []
    assert len(directory.search(app.db, "").rows) == 4


def test_search_pages_through_every_match_once_by_cursor(engine: EngineFactory) -> None:
    """Seven matches three at a time: three pages, each address once, in address order."""
    app, _ = engine(NOW)
    _add(app, *[(f"reader{n}@example.org", "") for n in range(7)], ("zz@example.org", "Z"))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        found = directory.search(app.db, "reader", cursor, limit=3)
        seen += _emails(found)
        pages += 1
        cursor = found.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(f"reader{n}@example.org" for n in range(7))


def test_pages_run_from_the_address_matches_into_the_name_matches(
    engine: EngineFactory,
) -> None:
    """Addresses starting with 'al' come first, then people named Al… (each once, even one
    whose address and name both match), two a page."""
    app, _ = engine(NOW)
    _add(
        app,
        ("al2@example.org", "Zed"),
        ("al1@example.org", "Alma"),
        ("al3@example.org", ""),
        ("x@example.org", "Alvin"),
        ("b@example.org", "Alba"),
        ("c@example.org", "Alba"),
    )
    pages = []
    cursor = None
    while True:
        found = directory.search(app.db, "Al", cursor, limit=2)
        pages.append(_emails(found))
        cursor = found.next_cursor
        if cursor is None:
            break
    assert pages == [
        ["al1@example.org", "al2@example.org"],
        ["al3@example.org", "b@example.org"],
        ["c@example.org", "x@example.org"],
    ]


def test_a_bad_search_names_its_field(engine: EngineFactory) -> None:
    """A forged cursor, a huge query or limit are refused with the field named."""
    app, _ = engine(NOW)
    with pytest.raises(BadInput, match="cursor"):
        directory.search(app.db, "a", "!!not-a-cursor!!")
    with pytest.raises(BadInput, match=r"^q:"):
        directory.search(app.db, "a" * 400)
    with pytest.raises(BadInput, match="limit"):
        directory.search(app.db, "a", limit=1000)


def test_the_subscriber_page_shows_each_delivery_with_its_message_id_and_clicks(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """After the welcome went out and a link in it was clicked, the record shows the consent,
    the enrollment, the delivery (Message-ID as the server got it, sent time) and the click."""
    app, clock = engine(NOW, TRACK_CLICKS="true")
    _add(app, ("ann@example.org", "Ann"))
    tick(app, clock, NOW)
    ann = directory.search(app.db, "ann").rows[0]
    delivery = directory.person(app.db, ann.id).deliveries[0]
    token = app.composer.click_url(delivery["id"], "https://example.org/read", NOW)
    clicks.follow(app.db, app.settings.secret_key.get_secret_value(), token.rsplit("/", 1)[1], NOW)

    record = directory.person(app.db, ann.id)
    assert record.subscriber["email"] == "ann@example.org"
    assert record.subscriber["status"] == "active"
    assert [consent["kind"] for consent in record.consents] == []  # added by the API: no form
    assert [(e["plan_id"], e["status"]) for e in record.enrollments] == [(app.plan.id, "active")]
    (sent,) = record.deliveries
    (received,) = smtp_server.to("ann@example.org")
    assert sent["message_id"] == received.message["Message-ID"]
    assert (sent["status"], sent["sent_at"], sent["resend"]) == ("sent", NOW, False)
    assert [click["url"] for click in sent["clicks"]] == ["https://example.org/read"]


def test_resending_the_welcome_sends_it_once_more_and_never_a_second_lesson(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A resend is a new delivery with its own Message-ID; the plan's own steps still go
    once each, the lesson of day 1 comes on day 1, and stats count the welcome once."""
    app, clock = engine(NOW)
    _add(app, ("ann@example.org", "Ann"))
    tick(app, clock, NOW)
    ann = directory.search(app.db, "ann").rows[0].id

    resent = app.resend_welcome(ann, now=NOW + timedelta(hours=1))
    assert resent.status == "sent"
    tick(app, clock, NOW + timedelta(hours=2))  # nothing due: the resend moved nothing
    first, second = smtp_server.to("ann@example.org")
    assert str(first.message["Subject"]) == str(second.message["Subject"]) == WELCOME
    assert second.message["Message-ID"] == resent.message_id != first.message["Message-ID"]

    for day in range(1, 3):
        tick(app, clock, NOW + timedelta(days=day, hours=2))
    subjects = [str(r.message["Subject"]) for r in smtp_server.to("ann@example.org")]
    assert subjects[:2] == [WELCOME, WELCOME]
    assert len(subjects) == 4
    assert len(set(subjects[2:])) == 2  # days 1 and 2, once each
    keys = [d["step_key"] for d in directory.person(app.db, ann).deliveries]
    assert keys.count(app.plan.steps[0].key) == 1
    assert sum(key.startswith("+resend") for key in keys) == 1
    welcome_row = app.stats()["steps"][0]
    assert welcome_row["sent"] == 1


def test_a_resend_is_refused_before_the_welcome_went_or_after_they_left(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Nothing is sent while the welcome is still due, to someone who unsubscribed, or past
    the third resend."""
    app, clock = engine(NOW)
    _add(app, ("ann@example.org", "Ann"), ("bob@example.org", "Bob"))
    ann, bob = (row.id for row in directory.search(app.db, "").rows)
    with pytest.raises(BadInput, match="not been sent yet"):
        app.resend_welcome(ann, now=NOW)
    tick(app, clock, NOW)
    for _ in range(3):
        app.resend_welcome(ann, now=NOW)
    with pytest.raises(BadInput, match="3 times"):
        app.resend_welcome(ann, now=NOW)
    assert directory.unsubscribe(app.db, bob, NOW) is True
    with pytest.raises(BadInput, match="unsubscribed"):
        app.resend_welcome(bob, now=NOW)
    with pytest.raises(UnknownSubscriber):
        app.resend_welcome(999_999, now=NOW)
    assert len(smtp_server.to("ann@example.org")) == 4
    assert len(smtp_server.to("bob@example.org")) == 1


def test_a_refused_resend_is_recorded_as_failed_and_the_subscriber_stays(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A 550 to the resend is shown in the delivery log with the server's reply."""
    app, clock = engine(NOW)
    _add(app, ("ann@example.org", "Ann"))
    tick(app, clock, NOW)
    ann = directory.search(app.db, "ann").rows[0].id
    smtp_server.handler.data_replies.append("550 5.7.1 refused by policy")
    resent = app.resend_welcome(ann, now=NOW)
    assert resent.status == "failed"
    record = directory.person(app.db, ann)
    assert record.subscriber["status"] == "active"
    resend_row = next(d for d in record.deliveries if d["resend"])
    assert "550 5.7.1 refused by policy" in resend_row["last_error"]


def test_unsubscribe_export_and_forget_by_id(engine: EngineFactory) -> None:
    """The console's actions name a subscriber by id: unsubscribe stops them, export prints
    their rows, forget erases them (and a second forget finds nobody)."""
    app, _ = engine(NOW)
    _add(app, ("ann@example.org", "Ann"))
    ann = directory.search(app.db, "ann").rows[0].id
    assert directory.unsubscribe(app.db, ann, NOW) is True
    assert directory.unsubscribe(app.db, ann, NOW) is False
    exported = directory.export(app.db, ann, NOW)
    assert exported["subscriber"]["status"] == "unsubscribed"
    assert [e["status"] for e in exported["enrollments"]] == ["cancelled"]
    directory.forget(app.db, ann, NOW)
    assert directory.search(app.db, "ann").rows == []
    with pytest.raises(UnknownSubscriber):
        directory.person(app.db, ann)
    with pytest.raises(UnknownSubscriber):
        directory.forget(app.db, ann, NOW)


def test_the_timeline_counts_each_step_and_previews_it(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """Two welcomes sent, one reader leaving within 48 h: the welcome's row says so; each
    step and the confirmation email preview for the sample subscriber; a bad key is refused."""
    app, clock = engine(NOW)
    _add(app, ("ann@example.org", "Ann"), ("bob@example.org", "Bob"))
    tick(app, clock, NOW)
    app.unsubscribe("bob@example.org", now=NOW + timedelta(hours=3))
    cache = plan_page.NumbersCache(wait=True)
    timeline = plan_page.timeline(app.db, app.content, NOW + timedelta(hours=4), cache)
    welcome = timeline.steps[0]
    assert (welcome.day, welcome.subject) == (0, WELCOME)
    assert welcome.numbers["sent"] == 2
    assert welcome.numbers["unsubscribes_48h"] == 1
    assert len(timeline.steps) == len(app.plan.steps)
    assert timeline.has_confirmation

    lesson = plan_page.preview(app.content, app.plan.steps[1].key, NOW)
    assert "Ann" in lesson.rendered.html
    confirmation = plan_page.preview(app.content, "confirmation", NOW)
    assert "confirm" in confirmation.rendered.subject.lower()
    with pytest.raises(UnknownStep):
        plan_page.preview(app.content, "no-such-step", NOW)


def test_kept_numbers_are_shown_until_they_are_a_minute_old(engine: EngineFactory) -> None:
    """Within the minute the page shows the numbers as counted (and when); after it, the
    numbers are counted again."""
    app, _ = engine(NOW)
    cache = plan_page.NumbersCache(wait=True)
    before = plan_page.timeline(app.db, app.content, NOW, cache)
    _add(app, ("ann@example.org", "Ann"))
    app.unsubscribe("ann@example.org", now=NOW)
    soon = plan_page.timeline(app.db, app.content, NOW + timedelta(seconds=30), cache)
    assert soon.counted_at == before.counted_at == NOW
    later = plan_page.timeline(app.db, app.content, NOW + timedelta(seconds=61), cache)
    assert later.counted_at == NOW + timedelta(seconds=61)


def test_the_first_count_runs_in_the_background_when_it_takes_long(
    engine: EngineFactory,
) -> None:
    """A console that will not wait shows the timeline without numbers while the first count
    runs, and the numbers once it is done."""
    app, _ = engine(NOW)
    _add(app, ("ann@example.org", "Ann"))
    cache = plan_page.NumbersCache(patience=0)
    first = plan_page.timeline(app.db, app.content, NOW, cache)
    cache.join()
    then = plan_page.timeline(app.db, app.content, NOW, cache)
    assert first.counted_at is None or first.counted_at == NOW  # None unless it was that quick
    assert then.counted_at == NOW
    assert then.steps[0].numbers is not None


def test_import_preview_judges_every_row_and_stores_nothing(
    engine: EngineFactory, tmp_path: Path
) -> None:
    """New, known, repeated, invalid and suppressed rows each get their verdict; nothing is
    stored until the import is committed, which then adds exactly the rows marked 'add'."""
    app, _ = engine(NOW)
    _add(app, ("known@example.org", "K"), ("gone@example.org", "G"))
    subscriptions.forget_person(app.db, "gone@example.org", NOW)
    file = tmp_path / "list.csv"
    file.write_text(
        "email,first_name\n"
        "new@example.org,Nina\n"
        "KNOWN@example.org,K\n"
        "new@example.org,Nina again\n"
        "not-an-address,X\n"
        "gone@example.org,G\n",
        encoding="utf-8",
    )
    source = csv_import.open_csv(file)
    preview = import_preview.preview_rows(app.db, csv_import.rows(source))
    verdicts = {row.line: (row.verdict, row.email) for row in preview.rows}
    assert verdicts == {
        2: ("add", "new@example.org"),
        3: ("already known", "KNOWN@example.org"),
        4: ("repeated in the file", "new@example.org"),
        5: ("refused", "not-an-address"),
        6: ("refused", "gone@example.org"),
    }
    assert [row.line for row in preview.rows][:2] == [5, 6]  # problems first
    assert preview.counts == {
        "add": 1,
        "already known": 1,
        "repeated in the file": 1,
        "refused": 2,
    }
    assert directory.search(app.db, "new").rows == []

    report = subscriptions.import_rows(app.db, app.plan, csv_import.rows(source), now=NOW)
    assert report.added == preview.counts["add"]
    assert _emails(directory.search(app.db, "new")) == ["new@example.org"]
