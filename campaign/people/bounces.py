"""Bounce and complaint reports: delivery status notifications (RFC 3464) and ARF feedback
reports (RFC 5965), read from files, folders or maildirs, or from a mailbox (`bounce_mailbox`).
Hard bounces and complaints stop all email to the address and suppress it, but only when the
report is about an email we sent to that address (see `campaign.report_trust`): anyone can mail
a forged report."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path
from typing import Literal, NamedTuple

from campaign.domain.addresses import email_hash
from campaign.domain.statuses import SubscriberStatus
from campaign.domain.verp import ReturnPaths
from campaign.people import report_trust
from campaign.storage import store
from campaign.storage.db import Database

_ADDRESS = re.compile(r"[^\s<>;]+@[^\s<>;]+")
# An address with control characters or undecodable bytes (surrogates, U+FFFD) is no one's:
# a forged report's NUL must not reach the database, nor a stray byte the address hash.
_UNUSABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff\ufffd]")


@dataclass(frozen=True)
class Finding:
    """One address a report is about: `kind` is "bounce" (permanent) or "complaint"; the
    address is empty for a complaint whose provider redacted the recipient."""

    kind: str
    address: str
    detail: str


class Unreadable(NamedTuple):
    path: str
    error: str


class FileOutcome(NamedTuple):
    """What was done with one report file or mailbox message (`path` is its label)."""

    path: str
    verdict: Literal["applied", "not ours", "not a bounce", "unreadable"]
    what: str


@dataclass
class IngestReport:
    bounced: list[str] = field(default_factory=list)
    complained: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # temporary failures, not reports, ...
    unreadable: list[Unreadable] = field(default_factory=list)
    #: reports that name no email we sent to that address: "ADDRESS (reason) from PATH".
    not_ours: list[str] = field(default_factory=list)
    #: per file, in order.
    outcomes: list[FileOutcome] = field(default_factory=list)


def report_files(paths: list[Path]) -> Iterator[Path]:
    """Every message file under the given files, folders and maildirs (cur/ and new/)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


def _parts_of_type(message: Message, content_type: str) -> list[Message]:
    return [part for part in message.walk() if part.get_content_type() == content_type]


def _fields(part: Message) -> list[Message]:
    """The header blocks inside a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    text = payload if isinstance(payload, str) else ""
    return [
        message_from_bytes(block.encode("utf-8", "surrogateescape"), policy=policy.compat32)
        for block in re.split(r"\r?\n\r?\n", text)
        if block.strip()
    ]


def _address(value: str | None) -> str | None:
    if not value:
        return None
    # str(): a header with raw 8-bit bytes comes as an email.header.Header, not a str.
    found = _ADDRESS.search(str(value).split(";", 1)[-1])
    if found is None or _UNUSABLE.search(found.group(0)):
        return None
    return found.group(0).strip(".,").lower()


def findings(message: Message) -> list[Finding]:
    """What a report says: permanent failures per recipient, or a complaint."""
    kind = str(message.get_param("report-type") or "").lower()
    if message.get_content_type() != "multipart/report":
        return []
    out: list[Finding] = []
    if kind == "delivery-status":
        for part in _parts_of_type(message, "message/delivery-status"):
            for block in _fields(part)[1:]:  # the first block is about the reporting MTA
                action = (block.get("Action") or "").strip().lower()
                status = (block.get("Status") or "").strip()
                address = _address(block.get("Final-Recipient") or block.get("Original-Recipient"))
                if address and action == "failed" and status.startswith("5."):
                    out.append(
                        Finding(
                            "bounce",
                            address,
                            f"{status} {block.get('Diagnostic-Code', '')}".strip(),
                        )
                    )
    elif kind == "feedback-report":
        for part in _parts_of_type(message, "message/feedback-report"):
            blocks = _fields(part)
            report = blocks[0] if blocks else Message()
            address = _address(report.get("Original-Rcpt-To"))
            if address is None:
                address = _original_recipient(message)
            # A provider that redacts the recipient still returns our Message-ID or return
            # path: an empty address is resolved from those (see `report_trust`).
            out.append(
                Finding(
                    "complaint", address or "", f"feedback type {report.get('Feedback-Type', '?')}"
                )
            )
    return out


def _original_recipient(message: Message) -> str | None:
    for original in _returned_headers(message):
        return _address(original.get("To"))
    return None


def _returned_headers(message: Message) -> Iterator[Message]:
    """The returned original message (or its headers) in a report, if any."""
    for content_type in ("message/rfc822", "text/rfc822-headers"):
        for part in _parts_of_type(message, content_type):
            payload = part.get_payload()
            original = payload[0] if isinstance(payload, list) and payload else None
            if original is None and isinstance(payload, str):
                original = message_from_bytes(
                    payload.encode("utf-8", "surrogateescape"), policy=policy.compat32
                )
            if isinstance(original, Message):
                yield original


#: headers where a report's own recipient (our return path) is written by the receiving MTA.
_DELIVERED_TO = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To")


def evidence_of(message: Message) -> report_trust.Evidence:
    """The VERP tokens and Message-IDs a report carries: where it was delivered, its envelope
    id, the original's envelope sender (ARF), and the returned message's headers."""
    evidence = report_trust.Evidence()
    for name in _DELIVERED_TO:
        for value in message.get_all(name) or []:
            evidence.add_return_paths(str(value))
    evidence.add_message_id(message.get("Original-Message-ID"))
    for content_type in ("message/delivery-status", "message/feedback-report"):
        for part in _parts_of_type(message, content_type):
            for block in _fields(part):
                evidence.add_envelope_id(block.get("Original-Envelope-Id"))
                evidence.add_return_paths(block.get("Original-Mail-From"))
                evidence.add_message_id(block.get("Original-Message-ID"))
    for original in _returned_headers(message):
        evidence.add_return_paths(original.get("Return-Path"))
        evidence.add_message_id(original.get("Message-ID"))
    return evidence


def ingest(
    db: Database, paths: list[Path], now: datetime, *, return_paths: ReturnPaths
) -> IngestReport:
    """Read every report under `paths`; for each one about an email we sent to that address,
    bounce or mark complained, and suppress, the address. Others are counted as not ours."""
    result = IngestReport()
    for path in report_files(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            result.unreadable.append(Unreadable(str(path), exc.strerror or str(exc)))
            result.outcomes.append(FileOutcome(str(path), "unreadable", exc.strerror or str(exc)))
            continue
        ingest_message(db, data, str(path), now, return_paths=return_paths, into=result)
    return result


def ingest_message(
    db: Database,
    data: bytes,
    label: str,
    now: datetime,
    *,
    return_paths: ReturnPaths,
    into: IngestReport,
) -> list[FileOutcome]:
    """Act on one report (a file's or a mailbox message's bytes, named `label` in what is
    said); each finding is committed in its own transaction before this returns. The outcomes
    are added to `into` and returned. Applying the same report again changes nothing more."""
    outcomes: list[FileOutcome] = []
    message = message_from_bytes(data, policy=policy.compat32)
    found = findings(message)
    if not found:
        into.ignored.append(label)
        outcomes.append(FileOutcome(label, "not a bounce", "nothing to act on"))
        into.outcomes.extend(outcomes)
        return outcomes
    evidence = evidence_of(message)
    for finding in found:
        bounced = finding.kind == "bounce"
        status = SubscriberStatus.BOUNCED if bounced else SubscriberStatus.COMPLAINED
        with db.transaction() as session:
            verdict = report_trust.check(session, return_paths, evidence, finding.address)
            if verdict.address is not None:
                known = store.find_subscriber(session, verdict.address)
                store.stop_mailing(
                    session,
                    known.id if known else None,
                    status,
                    email_hash(verdict.address),
                    now,
                )
        shown = finding.address or "(recipient not named)"
        if verdict.address is None:
            into.not_ours.append(f"{shown} ({verdict.reason}) from {label}")
            outcomes.append(FileOutcome(label, "not ours", f"{shown}: {verdict.reason}"))
            continue
        line = f"{verdict.address} ({finding.detail}) from {label}"
        (into.bounced if bounced else into.complained).append(line)
        outcomes.append(
            FileOutcome(label, "applied", f"{status} {verdict.address} ({finding.detail})")
        )
    into.outcomes.extend(outcomes)
    return outcomes
