"""Reading bounce and complaint reports: what each kind of report says about which address."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path

from campaign.bounces import Finding, findings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _read(name: str) -> list[Finding]:
    return findings(message_from_bytes((FIXTURES / name).read_bytes(), policy=policy.compat32))


def test_a_hard_bounce_names_the_failed_recipient_and_status() -> None:
    """A DSN with Action: failed and a 5.x.x status is a bounce for its Final-Recipient."""
    [finding] = _read("dsn_hard_bounce.eml")
    assert (finding.kind, finding.address) == ("bounce", "gone@example.org")
    assert finding.detail.startswith("5.1.1")


def test_a_delay_notice_is_not_a_bounce() -> None:
    """Action: delayed with a 4.x.x status stops nobody's email."""
    assert _read("dsn_delayed.eml") == []


def test_an_arf_report_is_a_complaint_about_the_original_recipient() -> None:
    """A feedback report with no Original-Rcpt-To names the original message's To address."""
    [finding] = _read("arf_complaint.eml")
    assert (finding.kind, finding.address) == ("complaint", "angry@example.org")
    assert "abuse" in finding.detail


def test_an_ordinary_email_says_nothing() -> None:
    """A reply that is not a multipart/report is ignored, however it is worded."""
    raw = (
        b"From: a@example.org\r\nSubject: Undelivered Mail\r\n\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
    )
    message = message_from_bytes(raw, policy=policy.compat32)
    assert findings(message) == []
