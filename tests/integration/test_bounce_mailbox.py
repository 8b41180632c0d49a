"""Polling a real Dovecot for bounce reports, in process, on both databases: what is stored
before a message is settled, and what a large or long-lined message does."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaign.engine import App, return_paths
from campaign.errors import MailboxUnavailable
from campaign.people import bounce_mailbox, subscriptions
from campaign.people.mailbox import Entry, Mailbox, open_mailbox
from campaign.settings import parse_mailbox_url
from campaign.storage import store
from tests.bounce_reports import dsn
from tests.conftest import EngineFactory
from tests.dovecot_server import PASSWORD, Dovecot
from tests.helpers import tick
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
SETTLE = bounce_mailbox.Disposal(settle=True, delete_reports=True)


def _open(dovecot: Dovecot, protocol: str) -> Mailbox:
    port = dovecot.imap_port if protocol == "imap" else dovecot.pop3_port
    url = dovecot.url(protocol, port=port, query="?security=none")
    return open_mailbox(parse_mailbox_url(url), PASSWORD, ca_file=None, timeout=10)


def _status(app: App, email: str) -> str | None:
    with app.db.transaction() as session:
        known = store.find_subscriber(session, email)
    return known.status if known else None


class _CrashesOnSettle:
    """The real mailbox, except that the process "dies" where it would settle a message."""

    def __init__(self, inner: Mailbox) -> None:
        self.inner = inner

    def label(self, key: str) -> str:
        return self.inner.label(key)

    def new_messages(self, limit: int | None) -> list[Entry]:
        return self.inner.new_messages(limit)

    def fetch(self, key: str) -> bytes:
        return self.inner.fetch(key)

    def settle(self, key: str, *, delete: bool) -> None:
        raise MailboxUnavailable("test", "connection lost")

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_crash_before_settling_leaves_the_report_to_be_read_again_harmlessly(
    engine: EngineFactory, smtp_server: SMTPServer, dovecot: Dovecot, protocol: str
) -> None:
    """The bounce is stored before the message is touched; lost between the two, the message
    is still there, and reading it again stores nothing more."""
    app, clock = engine(START)
    for email in ("gone@example.net", "stays@example.net"):
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Sam", timezone="UTC", now=START
        )
    tick(app, clock, START)
    [gone] = smtp_server.to("gone@example.net")
    dovecot.deliver(dsn(delivered_to=gone.sender, final_recipient="gone@example.net"))
    paths = return_paths(app.settings)

    crashing = _CrashesOnSettle(_open(dovecot, protocol))
    with pytest.raises(MailboxUnavailable):
        bounce_mailbox.poll(app.db, crashing, START, return_paths=paths, disposal=SETTLE)
    crashing.close()

    assert _status(app, "gone@example.net") == "bounced"
    with app.db.transaction() as session:
        assert store.is_suppressed(session, subscriptions.email_hash("gone@example.net"))
    # Still there (IMAP: still unseen; POP3's own RETR may flag it, which POP3 never reads).
    assert len(dovecot.flags()) == 1
    if protocol == "imap":
        assert dovecot.flags() == [set()]
    box = _open(dovecot, protocol)
    again = bounce_mailbox.poll(app.db, box, START, return_paths=paths, disposal=SETTLE)
    box.close()
    assert [o.verdict for o in again.outcomes] == ["applied"]
    assert dovecot.flags() == []
    assert _status(app, "gone@example.net") == "bounced"
    assert _status(app, "stays@example.net") == "active"


def test_a_message_over_the_size_limit_is_left_and_a_long_line_is_read_over_pop3(
    engine: EngineFactory, dovecot: Dovecot
) -> None:
    """Over POP3, a message with a 50 KB line is read (poplib alone stops at 2 KB); one over
    the size limit is reported unreadable without being fetched, and both stay."""
    app, _ = engine(START)
    long_line = b"From: a@example.org\r\nSubject: long\r\n\r\n" + b"x" * 50_000 + b"\r\n"
    too_large = b"From: a@example.org\r\nSubject: large\r\n\r\n" + (b"y" * 70 + b"\r\n") * 3000
    dovecot.deliver(long_line, too_large)
    box = _open(dovecot, "pop3")

    result = bounce_mailbox.poll(
        app.db,
        box,
        START,
        return_paths=return_paths(app.settings),
        disposal=SETTLE,
        max_bytes=100_000,
    )
    box.close()

    assert [o.verdict for o in result.outcomes] == ["not a bounce", "unreadable"]
    assert "larger than a report can be" in result.outcomes[1].what
    assert len(dovecot.flags()) == 2
