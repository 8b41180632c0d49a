"""Bounce (RFC 3464) and complaint (RFC 5965) reports as a receiving MTA writes them, built
from a message our SMTP server really received, or forged the way an attacker would."""

from __future__ import annotations


def dsn(
    *,
    delivered_to: str,
    final_recipient: str,
    original: bytes = b"",
    status: str = "5.1.1",
) -> bytes:
    """A hard-bounce DSN delivered to `delivered_to` (our return path, or whatever a forger
    writes), for `final_recipient`, returning the headers of `original`."""
    headers = original.split(b"\r\n\r\n", 1)[0].decode("ascii") if original else ""
    return (
        "Return-Path: <>\r\n"
        f"Delivered-To: {delivered_to}\r\n"
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        f"To: {delivered_to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R1"\r\n'
        "\r\n--R1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "\r\n--R1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {final_recipient}\r\n"
        f"Action: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{final_recipient}>: no such user\r\n"
        "\r\n--R1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{headers}\r\n"
        "\r\n--R1--\r\n"
    ).encode()


def arf(*, original: bytes, delivered_to: str = "abuse@example.org", mail_from: str = "") -> bytes:
    """An abuse complaint about `original` (returned whole), as a mailbox provider's feedback
    loop sends it: to an abuse address, not to the return path."""
    original_mail_from = f"Original-Mail-From: <{mail_from}>\r\n" if mail_from else ""
    return (
        (
            "From: feedback@isp.example.net\r\n"
            f"To: {delivered_to}\r\n"
            "Subject: FW: complaint\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="R2"\r\n'
            "\r\n--R2\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
            "\r\n--R2\r\nContent-Type: message/feedback-report\r\n\r\n"
            f"Feedback-Type: abuse\r\nUser-Agent: Test/1.0\r\nVersion: 1\r\n{original_mail_from}"
            "\r\n--R2\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
        ).encode()
        + original
        + b"\r\n--R2--\r\n"
    )
