"""DKIM signatures checked by dkimpy's own verifier on the bytes a real SMTP server received
(dot-stuffed and pipelined on the way), for every shipped step and both key types."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dkim
import pytest

from campaign.content.dkim import DkimSigner
from campaign.content.dkim_keys import KeyType, SigningKey, new_signing_key
from campaign.content.mime import address, build_message
from campaign.delivery.smtp import SMTPTransport
from campaign.domain.transport import Envelope
from campaign.people import signups, subscriptions
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

START = datetime(2026, 10, 20, 6, 0, tzinfo=UTC)
DOMAIN, SELECTOR = "example.org", "s2026"
STEP_ORDER = ["welcome"] + [f"day{n:02d}" for n in range(1, 31)]
SIGNED = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
]

DnsLookup = Callable[..., bytes | None]


def dns_stub(key: SigningKey) -> DnsLookup:
    """A resolver that knows only SELECTOR._domainkey.DOMAIN, holding `key`'s public half."""
    record = f"v=DKIM1; k={key.kind}; p={key.public}".encode("ascii")

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def signed_headers(data: bytes) -> list[str]:
    """The h= tag of the message's DKIM-Signature, lowercased names."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    found = re.search(r"\bh=([^;]+);", re.sub(r"\r\n[ \t]", " ", head))
    assert found
    return [name.strip() for name in found.group(1).split(":")]


@pytest.fixture(params=["rsa", "ed25519"])
def key_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, SigningKey]:
    kind: KeyType = request.param
    pem, key = new_signing_key(kind)
    path = tmp_path / f"dkim-{kind}.key"
    path.write_bytes(pem)
    return path, key


def test_every_shipped_step_verifies_as_received(
    engine: EngineFactory, smtp_server: SMTPServer, key_file: tuple[Path, SigningKey]
) -> None:
    """The welcome (with its PDF) and the 30 lessons, signed at compose time, pass dkimpy's
    verifier on the server's bytes, with From to List-Id (and Feedback-ID) signed."""
    path, key = key_file
    app, clock = engine(
        START,
        DKIM_DOMAIN=DOMAIN,
        DKIM_SELECTOR=SELECTOR,
        DKIM_PRIVATE_KEY_FILE=str(path),
        FEEDBACK_ID_SENDER="painclinic",
    )
    subscriptions.subscribe(
        app.db, app.plan, email="sam@example.com", first_name="Sam", timezone="UTC", now=START
    )
    for day in range(32):
        tick(app, clock, START + timedelta(days=day, hours=2))

    mails = smtp_server.to("sam@example.com")
    steps = [str(m.message["X-Campaign-Step"]).split("/", 1)[1] for m in mails]
    assert steps == STEP_ORDER
    assert b"Content-Type: application/pdf" in mails[0].data  # the welcome carries the ebook
    lookup = dns_stub(key)
    for mail, step in zip(mails, steps, strict=True):
        assert dkim.verify(mail.data, dnsfunc=lookup), step
        assert signed_headers(mail.data) == [*SIGNED, "feedback-id"], step
        assert mail.message["Feedback-ID"] == f"{step}:thirty-day-self-healing:drip:painclinic"
        assert mail.message["List-Id"].endswith("<thirty-day-self-healing.example.org>")


def test_the_double_opt_in_confirmation_verifies_too(
    engine: EngineFactory, smtp_server: SMTPServer, key_file: tuple[Path, SigningKey]
) -> None:
    """The confirmation email a signup queues is signed like the plan's steps."""
    path, key = key_file
    app, _ = engine(
        START,
        DKIM_DOMAIN=DOMAIN,
        DKIM_SELECTOR=SELECTOR,
        DKIM_PRIVATE_KEY_FILE=str(path),
        FEEDBACK_ID_SENDER="painclinic",
    )
    app.signups.signup(
        email="new@example.net", first_name="", timezone="UTC", visitor=signups.Visitor(), now=START
    )
    app.signup_mail.drain(START)
    [confirmation] = smtp_server.to("new@example.net")
    assert dkim.verify(confirmation.data, dnsfunc=dns_stub(key))
    assert signed_headers(confirmation.data) == [*SIGNED, "feedback-id"]
    assert str(confirmation.message["Feedback-ID"]).endswith(":confirm:painclinic")


def test_a_tampered_body_or_header_fails(
    engine: EngineFactory, smtp_server: SMTPServer, key_file: tuple[Path, SigningKey]
) -> None:
    """One changed byte of the body, or a changed signed header, and verification fails."""
    path, key = key_file
    app, clock = engine(
        START, DKIM_DOMAIN=DOMAIN, DKIM_SELECTOR=SELECTOR, DKIM_PRIVATE_KEY_FILE=str(path)
    )
    subscriptions.subscribe(
        app.db, app.plan, email="sam@example.com", first_name="Sam", timezone="UTC", now=START
    )
    tick(app, clock, START)
    [mail] = smtp_server.received
    lookup = dns_stub(key)
    assert dkim.verify(mail.data, dnsfunc=lookup)
    head, body = mail.data.split(b"\r\n\r\n", 1)
    assert not dkim.verify(head + b"\r\n\r\n" + body.replace(b"Sam", b"Pam", 1), dnsfunc=lookup)
    forged = head.replace(b"\r\nSubject: ", b"\r\nSubject: Re: ", 1) + b"\r\n\r\n" + body
    assert not dkim.verify(forged, dnsfunc=lookup)
    unsubscribe = re.sub(rb"unsubscribe/[^>]+>", b"unsubscribe/x>", head, count=1)
    assert not dkim.verify(unsubscribe + b"\r\n\r\n" + body, dnsfunc=lookup)


def test_without_dkim_settings_messages_go_unsigned(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """No DKIM_* variables: no DKIM-Signature, as before; List-Id still, no Feedback-ID."""
    app, clock = engine(START)
    subscriptions.subscribe(
        app.db, app.plan, email="sam@example.com", first_name="Sam", timezone="UTC", now=START
    )
    tick(app, clock, START)
    [mail] = smtp_server.received
    assert b"DKIM-Signature" not in mail.data
    assert mail.message["List-Id"] is not None
    assert mail.message["Feedback-ID"] is None


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
def test_lines_that_dot_stuffing_changes_still_verify(
    smtp_server: SMTPServer, kind: KeyType, pipelining: bool
) -> None:
    """Body lines that begin with a dot are stuffed on the wire and unstuffed by the server:
    the signature, made before, still holds on what arrives."""
    smtp_server.handler.pipelining = pipelining
    _, key = new_signing_key(kind)
    text = ".leading dot\n.\n..two dots\n" + ".x\n" * 50
    data = build_message(
        sender=address("newsletter@example.org", "Clinic"),
        recipient=address("sam@example.com", "Sam"),
        subject="dots",
        text=text,
        html="<p>.dots</p>\n.\n",
        message_id="<dots@example.org>",
        date=START,
        extra_headers={"List-Unsubscribe": "<https://news.example.org/unsubscribe/x>"},
    )
    signed = DkimSigner(DOMAIN, SELECTOR, key).sign(data)
    assert b"\r\n." in signed  # dot-stuffing has something to do
    transport = SMTPTransport("127.0.0.1", smtp_server.port, security="none", timeout=5)
    with transport.open() as connection:
        for _ in range(3):
            connection.send(Envelope("newsletter@example.org", "sam@example.com"), signed)
    assert len(smtp_server.received) == 3
    for mail in smtp_server.received:
        assert mail.data == signed
        assert dkim.verify(mail.data, dnsfunc=dns_stub(key))
