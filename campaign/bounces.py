"""Bounce and complaint reports: delivery status notifications (RFC 3464) and ARF feedback
reports (RFC 5965), read from files, folders or maildirs. Hard bounces and complaints stop all
email to the address and suppress it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

from campaign import store
from campaign.db import Database
from campaign.subscriptions import email_hash

_ADDRESS = re.compile(r"[^\s<>;]+@[^\s<>;]+")
# An address with control characters or undecodable bytes (surrogates, U+FFFD) is no one's:
# a forged report's NUL must not reach the database, nor a stray byte the address hash.
_UNUSABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff\ufffd]")


@dataclass(frozen=True)
class Finding:
    """One address a report is about: `kind` is "bounce" (permanent) or "complaint"."""

    kind: str
    address: str
    detail: str


@dataclass
class IngestReport:
    bounced: list[str] = field(default_factory=list)
    complained: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # temporary failures, not reports, ...
    unreadable: list[tuple[str, str]] = field(default_factory=list)


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
    return [message_from_bytes(block.encode(), policy=policy.compat32)
            for block in re.split(r"\r?\n\r?\n", text) if block.strip()]  # fmt: skip


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
            if address:
                out.append(
                    Finding(
                        "complaint", address, f"feedback type {report.get('Feedback-Type', '?')}"
                    )
                )
    return out


def _original_recipient(message: Message) -> str | None:
    for content_type in ("message/rfc822", "text/rfc822-headers"):
        for part in _parts_of_type(message, content_type):
            payload = part.get_payload()
            original = payload[0] if isinstance(payload, list) and payload else None
            if original is None and isinstance(payload, str):
                original = message_from_bytes(payload.encode(), policy=policy.compat32)
            if isinstance(original, Message):
                return _address(original.get("To"))
    return None


def ingest(db: Database, paths: list[Path], now: datetime) -> IngestReport:
    """Read every report under `paths`; bounce or mark complained, and suppress, each address."""
    result = IngestReport()
    for path in report_files(paths):
        try:
            message = message_from_bytes(path.read_bytes(), policy=policy.compat32)
        except OSError as exc:
            result.unreadable.append((str(path), exc.strerror or str(exc)))
            continue
        found = findings(message)
        if not found:
            result.ignored.append(str(path))
        for finding in found:
            status = "bounced" if finding.kind == "bounce" else "complained"
            with db.transaction() as session:
                known = store.find_subscriber(session, finding.address)
                store.stop_mailing(
                    session, known.id if known else None, status, email_hash(finding.address), now
                )
            (result.bounced if status == "bounced" else result.complained).append(
                f"{finding.address} ({finding.detail}) from {path}"
            )
    return result
