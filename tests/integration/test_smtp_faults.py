"""SMTP transport faults against real TLS relays (aiosmtpd with trustme certificates), through
the real engine on SQLite and PostgreSQL: a relay that never greets, STARTTLS missing or
refused, certificates not to be trusted, a rejected password, odd replies, implicit TLS."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme
from sqlalchemy import select

from campaign.delivery.passes import PassResult
from campaign.engine import App, make_service
from campaign.errors import ConfigError
from campaign.people import subscriptions
from campaign.settings import Settings
from campaign.storage.models import Delivery, Enrollment, Subscriber
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.tls_smtp import SilentServer, TLSSMTPServer

START = datetime(2026, 10, 20, 9, 0, tzinfo=UTC)
USER = "campaign-relay-user"
PASSWORD = "Relay-Passw0rd-7c1e"
WRONG_PASSWORD = "Old-Passw0rd-b93d"
ANN = "ann@example.org"

ServerFactory = Callable[..., TLSSMTPServer]


@dataclass(frozen=True)
class Certificates:
    """A test CA (its PEM in `ca_file`) and certificates a relay can present."""

    ca_file: Path
    #: for 127.0.0.1, from the test CA.
    good: trustme.LeafCert
    #: for 127.0.0.1, from another CA (its PEM in `other_ca_file`).
    from_other_ca: trustme.LeafCert
    other_ca_file: Path
    #: for the name `localhost` only, from the test CA.
    localhost_only: trustme.LeafCert


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Two trustme CAs, their PEM files, and leaf certificates for the relays."""
    folder = tmp_path_factory.mktemp("certificates")
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(folder / "other-ca.pem"))
    return Certificates(
        ca_file=folder / "ca.pem",
        good=ca.issue_cert("127.0.0.1"),
        from_other_ca=other_ca.issue_cert("127.0.0.1"),
        other_ca_file=folder / "other-ca.pem",
        localhost_only=ca.issue_cert("localhost"),
    )


@pytest.fixture
def relays() -> Iterator[ServerFactory]:
    """Start TLS relays (`TLSSMTPServer` arguments); each is stopped after the test."""
    started: list[TLSSMTPServer] = []

    def start(*args: Any, **kwargs: Any) -> TLSSMTPServer:
        server = TLSSMTPServer(*args, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A server that accepts TCP connections and never answers."""
    server = SilentServer()
    server.start()
    yield server
    server.stop()


def _relay(
    port: int, security: str, ca_file: Path | None, *, host: str = "127.0.0.1", **more: str
) -> dict[str, str]:
    """Engine settings for a relay on `port` (an empty SMTP_CA_FILE: the system's store)."""
    return {
        "SMTP_HOST": host,
        "SMTP_PORT": str(port),
        "SMTP_SECURITY": security,
        "SMTP_CA_FILE": str(ca_file) if ca_file else "",
        "SMTP_TIMEOUT": "5",
        **more,
    }


def _login(password: str) -> dict[str, str]:
    return {"SMTP_USERNAME": USER, "SMTP_PASSWORD": password}


def _subscribe(app: App, *emails: str) -> None:
    for email in emails:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name=None, timezone="UTC", now=START
        )


def _deliveries(app: App) -> dict[str, tuple[str, int]]:
    """Each subscriber's welcome delivery: (status, attempts)."""
    with app.db.transaction() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.status, Delivery.attempts)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        ).all()
    return {email: (status, attempts) for email, status, attempts in rows}


def _last_errors(app: App) -> dict[str, str | None]:
    with app.db.transaction() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.last_error)
            .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
            .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
        ).all()
    return dict(rows)


def _subscriber_statuses(app: App) -> dict[str, str]:
    with app.db.transaction() as session:
        rows = session.execute(select(Subscriber.email, Subscriber.status)).all()
    return dict(rows)


def _paused_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    messages = [record.getMessage() for record in caplog.records]
    return [message for message in messages if message.startswith("sending paused")]


def _recipients(relay: TLSSMTPServer) -> list[str]:
    return sorted(address for received in relay.received for address in received.recipients)


def _nothing_lost(app: App, result: PassResult, *emails: str) -> None:
    """The pass gave its claims back unsent: each email still queued, no attempt used."""
    assert (result.sent, result.retried, result.failed, result.bounced) == (0, 0, 0, 0)
    assert result.released == len(emails)
    assert _deliveries(app) == dict.fromkeys(emails, ("queued", 0))


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_relay_that_never_greets_pauses_sending_within_smtp_timeout(
    engine: EngineFactory,
    certificates: Certificates,
    relays: ServerFactory,
    silent_server: SilentServer,
    caplog: pytest.LogCaptureFixture,
    security: str,
) -> None:
    """A relay that accepts TCP but sends no 220 (nor a TLS hello) ends the pass within
    SMTP_TIMEOUT (1 s) plus 1.5 s, on one connection, with one 'sending paused' line and no
    attempt used; a later pass on a working relay sends the email exactly once."""
    caplog.set_level(logging.INFO, logger="campaign")
    app, _ = engine(
        START, **_relay(silent_server.port, security, certificates.ca_file, SMTP_TIMEOUT="1")
    )
    _subscribe(app, ANN)
    began = time.perf_counter()
    result = make_service(app).run_pass(START)
    elapsed = time.perf_counter() - began

    assert elapsed < 1 + 1.5
    description = f"smtp://127.0.0.1:{silent_server.port} ({security})"
    assert result.error == f"{description}: no reply within 1 s (connect)"
    assert _paused_lines(caplog) == [f"sending paused: {result.error}"]
    assert silent_server.connections == 1
    _nothing_lost(app, result, ANN)

    relay = relays(security, certificates.good)
    working, clock = engine(START, **_relay(relay.port, security, certificates.ca_file))
    assert tick(working, clock, START + timedelta(minutes=1)).sent == 1
    assert tick(working, clock, START + timedelta(minutes=2)).sent == 0
    assert _recipients(relay) == [ANN]
    assert _deliveries(app) == {ANN: ("sent", 1)}


@pytest.mark.parametrize(
    ("starttls_reply", "reason", "verbs"),
    [
        (None, "server does not offer STARTTLS", ["EHLO"]),
        (
            "454 4.7.0 TLS not available due to temporary reason",
            "STARTTLS refused: 454 4.7.0 TLS not available due to temporary reason",
            ["EHLO", "STARTTLS"],
        ),
    ],
    ids=["not-offered", "refused-454"],
)
def test_starttls_missing_or_refused_sends_nothing_and_never_authenticates(
    engine: EngineFactory,
    certificates: Certificates,
    relays: ServerFactory,
    starttls_reply: str | None,
    reason: str,
    verbs: list[str],
) -> None:
    """A relay that offers no STARTTLS, or answers it 454 4.7.0, yet would take AUTH and mail
    in cleartext: on two passes the engine sends nothing past EHLO/STARTTLS (no AUTH, no
    MAIL), names the host and the reason, and uses no attempt."""
    relay = relays(
        "starttls" if starttls_reply else "none",
        certificates.good if starttls_reply else None,
        users={USER: PASSWORD},
        starttls_reply=starttls_reply,
        cleartext_auth=True,
    )
    app, clock = engine(
        START, **_relay(relay.port, "starttls", certificates.ca_file, **_login(PASSWORD))
    )
    _subscribe(app, ANN)

    for at in (START, START + timedelta(minutes=5)):
        result = tick(app, clock, at)
        assert result.error == f"smtp://127.0.0.1:{relay.port} (starttls): {reason}"
        _nothing_lost(app, result, ANN)
    assert relay.verbs == verbs * 2
    assert not any(command.tls for command in relay.commands)
    assert relay.received == []


def _untrusted(
    engine: EngineFactory, relay: TLSSMTPServer, security: str, ca_file: Path | None, **more: str
) -> str:
    """Run a pass on `relay` that must fail its TLS handshake; return the error."""
    app, clock = engine(START, **_relay(relay.port, security, ca_file, **_login(PASSWORD), **more))
    _subscribe(app, ANN)
    result = tick(app, clock, START)
    assert result.error is not None
    _nothing_lost(app, result, ANN)
    return result.error


def _sends_once_over_tls(
    engine: EngineFactory, relay: TLSSMTPServer, security: str, ca_file: Path, **more: str
) -> None:
    """A pass on `relay` sends the waiting email; AUTH and mail went only under TLS."""
    app, clock = engine(START, **_relay(relay.port, security, ca_file, **_login(PASSWORD), **more))
    assert tick(app, clock, START + timedelta(minutes=1)).sent == 1
    assert _recipients(relay) == [ANN]
    assert _deliveries(app) == {ANN: ("sent", 1)}
    assert {command.verb for command in relay.commands if not command.tls} <= {"EHLO", "STARTTLS"}
    assert {"AUTH", "MAIL", "RCPT", "DATA"} <= set(relay.verbs)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_certificate_from_an_unknown_ca_is_refused_until_its_ca_is_configured(
    engine: EngineFactory, certificates: Certificates, relays: ServerFactory, security: str
) -> None:
    """A relay whose certificate comes from a CA the engine was not told about (the system's
    store, or SMTP_CA_FILE naming another CA): the handshake fails, no AUTH, no mail, no
    attempt used; with SMTP_CA_FILE naming its CA the same relay gets the email once."""
    relay = relays(security, certificates.from_other_ca, users={USER: PASSWORD})
    refusal = "TLS certificate not accepted: unable to get local issuer certificate"
    for ca_file in (None, certificates.ca_file):
        error = _untrusted(engine, relay, security, ca_file)
        assert error == f"smtp://127.0.0.1:{relay.port} ({security}): {refusal}"
    assert relay.verbs == (["EHLO", "STARTTLS"] * 2 if security == "starttls" else [])
    assert relay.received == []

    _sends_once_over_tls(engine, relay, security, certificates.other_ca_file)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_certificate_for_another_host_name_is_refused(
    engine: EngineFactory, certificates: Certificates, relays: ServerFactory, security: str
) -> None:
    """A certificate from the configured CA but for `localhost`, presented at 127.0.0.1: the
    host name check fails the handshake, no AUTH, no mail, no attempt used; asked for by the
    name on its certificate, the same relay gets the email once."""
    relay = relays(security, certificates.localhost_only, users={USER: PASSWORD})
    error = _untrusted(engine, relay, security, certificates.ca_file)
    assert error == (
        f"smtp://127.0.0.1:{relay.port} ({security}): TLS certificate not accepted: "
        "IP address mismatch, certificate is not valid for '127.0.0.1'."
    )
    assert relay.verbs == (["EHLO", "STARTTLS"] if security == "starttls" else [])
    assert relay.received == []

    _sends_once_over_tls(engine, relay, security, certificates.ca_file, SMTP_HOST="localhost")


def test_a_rejected_password_pauses_sending_with_one_log_line_and_is_never_logged(
    engine: EngineFactory,
    certificates: Certificates,
    relays: ServerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AUTH answered 535 5.7.8 over STARTTLS: two passes pause sending with one 'sending
    paused' line naming the host and the reply, use no attempt, and no log record holds the
    password (plain or base64); with the right password a new engine sends the email once."""
    caplog.set_level(logging.DEBUG)
    relay = relays("starttls", certificates.good, users={USER: PASSWORD})
    app, _ = engine(
        START, **_relay(relay.port, "starttls", certificates.ca_file, **_login(WRONG_PASSWORD))
    )
    _subscribe(app, ANN)
    service = make_service(app)
    first = service.run_pass(START)
    second = service.run_pass(START + timedelta(minutes=1))

    expected = (
        f"smtp://127.0.0.1:{relay.port} (starttls): "
        "authentication failed: 535 5.7.8 Authentication credentials invalid"
    )
    assert first.error == second.error == expected
    assert _paused_lines(caplog) == [f"sending paused: {expected}"]
    _nothing_lost(app, first, ANN)
    _nothing_lost(app, second, ANN)
    assert relay.received == []
    auth_lines = [command for command in relay.commands if command.verb == "AUTH"]
    assert auth_lines
    assert all(command.tls for command in auth_lines)

    secrets = [
        WRONG_PASSWORD,
        base64.b64encode(WRONG_PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{WRONG_PASSWORD}".encode()).decode(),
    ]
    engine_records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert engine_records
    for record in engine_records:  # the test relay's own log ("mail.log") is not the engine's
        logged = f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        assert not [secret for secret in secrets if secret in logged], record

    fixed, clock = engine(
        START, **_relay(relay.port, "starttls", certificates.ca_file, **_login(PASSWORD))
    )
    assert tick(fixed, clock, START + timedelta(minutes=2)).sent == 1
    assert _recipients(relay) == [ANN]
    assert _deliveries(app) == {ANN: ("sent", 1)}


#: how the engine talks to the relay: one round trip per email (PIPELINING and grouping,
#: the default), two (PIPELINING, SMTP_GROUP_MESSAGES=false), or plain SMTP.
EXCHANGES = pytest.mark.parametrize(
    ("pipelining", "grouping"),
    [(True, "true"), (True, "false"), (False, "true")],
    ids=["grouped", "pipelined", "one-by-one"],
)


@EXCHANGES
def test_multi_line_bare_and_long_replies_are_read_whole_and_classified(
    engine: EngineFactory,
    certificates: Certificates,
    relays: ServerFactory,
    pipelining: bool,
    grouping: str,
) -> None:
    """Multi-line replies, replies with no enhanced code and a 2,000-byte reply line (RFC 5321
    allows 512) are read whole on TLS connections and classified by the enhanced code, else
    the basic one: bounce, failure, retry or success, and the pass goes on to the end."""
    relay = relays("starttls", certificates.good, users={USER: PASSWORD})
    relay.handler.pipelining = pipelining
    long_text = "y" * 2000
    relay.handler.rcpt_replies.update(
        {
            "gmail@example.org": "550-5.1.1 The email account that you tried to reach does "
            "not exist.\r\n550 5.1.1 Please try double-checking the recipient's address.",
            "bare550@example.org": "550 No such user here",
        }
    )
    relay.handler.data_replies_for.update(
        {
            "long@example.org": [f"550 5.1.1 {long_text}"],
            "bare554@example.org": ["554 Transaction failed"],
            "bare451@example.org": ["451 Requested action aborted: local error in processing"],
            "bare421@example.org": ["421 Service not available, closing transmission channel"],
            "ok@example.org": ["250-2.0.0 Ok: queued as 4F2A\r\n250 2.0.0 Thank you"],
        }
    )
    app, clock = engine(
        START,
        **_relay(relay.port, "starttls", certificates.ca_file, **_login(PASSWORD)),
        SMTP_GROUP_MESSAGES=grouping,
    )
    emails = [
        "gmail@example.org",
        "bare550@example.org",
        "long@example.org",
        "bare554@example.org",
        "bare451@example.org",
        "bare421@example.org",
        "ok@example.org",
        "plain@example.org",
    ]
    _subscribe(app, *emails)

    result = tick(app, clock, START)
    assert result.error is None  # no reply here pauses the relay
    counts = (result.sent, result.bounced, result.failed, result.retried)
    assert counts == (2, 3, 1, 2)
    assert _deliveries(app) == {
        "gmail@example.org": ("bounced", 1),  # 5xx at RCPT: about the address
        "bare550@example.org": ("bounced", 1),
        "long@example.org": ("bounced", 1),  # 5.1.1 after DATA: about the address
        "bare554@example.org": ("failed", 1),  # a bare 554 after DATA: not about the address
        "bare451@example.org": ("retry", 1),  # a bare 4xx: temporary, not a throttle
        "bare421@example.org": ("retry", 1),
        "ok@example.org": ("sent", 1),
        "plain@example.org": ("sent", 1),
    }
    errors = _last_errors(app)
    gmail_error = errors["gmail@example.org"] or ""
    assert "550 5.1.1 The email account" in gmail_error
    assert "double-checking" in gmail_error  # the second line was read with the first
    assert "\n" not in gmail_error  # kept on one line, for one-line logs
    long_error = errors["long@example.org"] or ""
    assert long_error.startswith("550 5.1.1 yyy")  # read whole, kept short
    assert len(long_error) < 400
    statuses = _subscriber_statuses(app)
    assert statuses["bare554@example.org"] == "active"
    assert statuses["long@example.org"] == statuses["bare550@example.org"] == "bounced"

    assert tick(app, clock, START + timedelta(hours=1)).sent == 2  # the two retries
    assert _recipients(relay) == [
        "bare421@example.org",
        "bare451@example.org",
        "ok@example.org",
        "plain@example.org",
    ]


def test_a_multi_line_421_4_7_0_at_data_backs_off_the_relay_without_using_attempts(
    engine: EngineFactory, certificates: Certificates, relays: ServerFactory
) -> None:
    """'421-4.7.0 ...' then '421 4.7.0 ...' at the end of DATA is read as one reply and
    classified by its enhanced code as a throttle: the relay backs off (no connection for
    30 s), no attempt is used, and the email goes once after the backoff."""
    relay = relays("starttls", certificates.good, users={USER: PASSWORD})
    relay.handler.data_replies_for[ANN] = [
        "421-4.7.0 Too many messages from your address\r\n421 4.7.0 Try again later, closing"
    ]
    app, clock = engine(
        START, **_relay(relay.port, "starttls", certificates.ca_file, **_login(PASSWORD))
    )
    _subscribe(app, ANN)

    first = tick(app, clock, START)
    assert first.error is not None
    assert "throttled" in first.error
    assert "Try again later" in first.error  # both lines of the reply were read
    _nothing_lost(app, first, ANN)
    connections = relay.verbs.count("EHLO")
    assert tick(app, clock, START + timedelta(seconds=30)).sent == 0
    assert relay.verbs.count("EHLO") == connections  # backing off: the relay is left alone
    assert tick(app, clock, START + timedelta(minutes=2)).sent == 1
    assert _recipients(relay) == [ANN]
    assert _deliveries(app) == {ANN: ("sent", 1)}


def test_a_reply_line_longer_than_smtplib_reads_defers_the_email(
    engine: EngineFactory, certificates: Certificates, relays: ServerFactory
) -> None:
    """A 9,000-byte '451 4.3.0 ...' at RCPT, which smtplib cannot read as one line, defers
    the email as a lost connection would (never failed or bounced), and the next pass sends
    it once."""
    relay = relays("starttls", certificates.good, users={USER: PASSWORD})
    relay.handler.rcpt_replies[ANN] = "451 4.3.0 " + "z" * 9000
    app, clock = engine(
        START, **_relay(relay.port, "starttls", certificates.ca_file, **_login(PASSWORD))
    )
    _subscribe(app, ANN)

    result = tick(app, clock, START)
    assert (result.sent, result.failed, result.bounced) == (0, 0, 0)
    assert _deliveries(app) == {ANN: ("retry", 1)}
    del relay.handler.rcpt_replies[ANN]
    assert tick(app, clock, START + timedelta(hours=1)).sent == 1
    assert _recipients(relay) == [ANN]


def test_implicit_tls_with_the_configured_ca_authenticates_and_sends_once(
    engine: EngineFactory, certificates: Certificates, relays: ServerFactory
) -> None:
    """SMTP_SECURITY=ssl against a TLS-wrapped relay whose CA is SMTP_CA_FILE: every command,
    AUTH first, goes under TLS, and the email arrives once with its delivery recorded sent."""
    relay = relays("ssl", certificates.good, users={USER: PASSWORD})
    app, clock = engine(
        START, **_relay(relay.port, "ssl", certificates.ca_file, **_login(PASSWORD))
    )
    _subscribe(app, ANN)

    result = tick(app, clock, START)
    assert (result.sent, result.error) == (1, None)
    assert tick(app, clock, START + timedelta(minutes=1)).sent == 0
    assert all(command.tls for command in relay.commands)
    assert relay.verbs[:3] == ["EHLO", "AUTH", "MAIL"]
    assert _recipients(relay) == [ANN]
    assert _deliveries(app) == {ANN: ("sent", 1)}


def test_smtp_ca_file_must_be_a_pem_file_of_certificates(
    certificates: Certificates, tmp_path: Path
) -> None:
    """SMTP_CA_FILE naming a missing file, or a file with no certificate in it, stops start-up
    with a ConfigError naming SMTP_CA_FILE; a PEM file of CA certificates is taken."""
    base = {
        "SMTP_HOST": "127.0.0.1",
        "SECRET_KEY": "k" * 40,
        "MAIL_FROM": "News <news@example.org>",
        "POSTAL_ADDRESS": "1 Test Street, Testville",
    }
    not_pem = tmp_path / "not-a-certificate.pem"
    not_pem.write_text("hello\n")
    for path in (tmp_path / "missing.pem", not_pem):
        with pytest.raises(ConfigError) as refused:
            Settings.from_env({**base, "SMTP_CA_FILE": str(path)})
        assert refused.value.variable == "SMTP_CA_FILE"
        assert str(path) in refused.value.message
    settings = Settings.from_env({**base, "SMTP_CA_FILE": str(certificates.ca_file)})
    assert settings.smtp_ca_file == certificates.ca_file
    assert Settings.from_env(base).smtp_ca_file is None
