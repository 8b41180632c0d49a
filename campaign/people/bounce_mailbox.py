"""`bounces poll`: read DSN bounces and ARF complaints from a mailbox (IMAP or POP3), act on
each exactly as `bounces ingest` does, and only then settle the message on the server. A crash
between the two leaves the message to be read again: harmless, a report applies only once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from campaign.domain.verp import ReturnPaths
from campaign.people import bounces
from campaign.people.mailbox import MAX_MESSAGE_BYTES, Mailbox
from campaign.storage.db import Database


@dataclass(frozen=True)
class Disposal:
    """What is done on the server with a message once read.

    `settle`: mark it done at all (False: `--keep`, the server is left as it was).
    `delete_reports`: delete the reports read (applied or not ours); messages that are not
    reports (an auto-reply, a person writing back) are never deleted, only marked seen."""

    settle: bool
    delete_reports: bool


def poll(
    db: Database,
    mailbox: Mailbox,
    now: datetime,
    *,
    return_paths: ReturnPaths,
    disposal: Disposal,
    limit: int | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> bounces.IngestReport:
    """Read up to `limit` new messages; for each, store what it says (committed), then settle
    it as `disposal` says. Messages over `max_bytes` are reported unreadable and left alone."""
    result = bounces.IngestReport()
    for key, size in mailbox.new_messages(limit):
        label = mailbox.label(key)
        if size > max_bytes:
            problem = f"{size} bytes, larger than a report can be; left in the mailbox"
            result.unreadable.append(bounces.Unreadable(label, problem))
            result.outcomes.append(bounces.FileOutcome(label, "unreadable", problem))
            continue
        outcomes = bounces.ingest_message(
            db, mailbox.fetch(key), label, now, return_paths=return_paths, into=result
        )
        if not disposal.settle:
            continue
        is_report = any(o.verdict in ("applied", "not ours") for o in outcomes)
        mailbox.settle(key, delete=is_report and disposal.delete_reports)
    return result
