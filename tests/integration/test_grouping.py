"""One round trip per email: a message's end travels with the next message's MAIL, RCPT and
DATA (RFC 2920), and every reply still belongs to its own message.

The server here is written by hand on a socket, so that it can tell what the client had
already written when it answered a message's final dot: grouping is seen, not timed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from campaign.delivery.smtp import SMTPTransport
from campaign.domain.transport import Envelope
from campaign.errors import PermanentFailure, TemporaryFailure
from campaign.people import subscriptions
from tests.conftest import EngineFactory
from tests.helpers import tick
from tests.smtp_server import SMTPServer

SENDER = "news@example.org"


@dataclass
class RawRelay:
    """An SMTP server offering PIPELINING that answers each command in order, as it reads it.
    Before answering a final dot it waits up to `wait` seconds for the client's next MAIL,
    and notes whether it had come."""

    wait: float = 0.5
    #: replies to RCPT for these addresses, e.g. "550 5.1.1 no such user".
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    #: replies to MAIL for messages to these recipients (known once RCPT is read).
    final_replies: dict[str, str] = field(default_factory=dict)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    #: called with the recipient just before a final dot is answered
    before_reply: Callable[[str], None] | None = None
    #: per accepted message: was the next MAIL already written when the dot was answered?
    grouped: list[bool] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            with client, contextlib.suppress(OSError):
                _Session(self, client).run()


class _Session:
    def __init__(self, relay: RawRelay, sock: socket.socket) -> None:
        self.relay, self.sock, self.buffer = relay, sock, b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            if not self._more():
                return None
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _say(self, reply: str) -> None:
        self.sock.sendall(reply.encode() + b"\r\n")

    def run(self) -> None:
        self._say("220 raw.example ESMTP")
        recipient = ""
        while (line := self._line()) is not None:
            verb = line[:4].upper()
            if verb == b"EHLO":
                self._say("250-raw.example\r\n250-PIPELINING\r\n250 SIZE 10000000")
            elif verb == b"MAIL":
                recipient = ""
                self._say("250 2.1.0 ok")
            elif verb == b"RCPT":
                address = line.decode().split("<", 1)[1].split(">", 1)[0]
                refusal = self.relay.rcpt_replies.get(address)
                recipient = "" if refusal else address
                self._say(refusal or "250 2.1.5 ok")
            elif verb == b"DATA":
                if not recipient:
                    self._say("554 5.5.1 no valid recipients")
                    continue
                self._say("354 go ahead")
                self._data(recipient)
                recipient = ""
            elif verb == b"RSET":
                self._say("250 2.0.0 ok")
            elif verb == b"QUIT":
                self._say("221 2.0.0 bye")
                return
            else:
                self._say("500 5.5.2 what?")

    def _data(self, recipient: str) -> None:
        while b"\r\n.\r\n" not in self.buffer:
            if not self._more():
                return
        data, self.buffer = self.buffer.split(b"\r\n.\r\n", 1)
        self.sock.settimeout(self.relay.wait)
        try:
            while b"MAIL FROM" not in self.buffer.upper() and self._more():
                pass
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(None)
        if self.relay.before_reply is not None:
            self.relay.before_reply(recipient)
        reply = self.relay.final_replies.get(recipient, "250 2.0.0 queued")
        if reply.startswith("250"):
            self.relay.received.append((recipient, data + b"\r\n"))
            self.relay.grouped.append(b"MAIL FROM" in self.buffer.upper())
        self._say(reply)


@pytest.fixture
def relay() -> Iterator[RawRelay]:
    server = RawRelay()
    yield server
    server.close()


def _message(n: int) -> tuple[Envelope, bytes]:
    return Envelope(SENDER, f"r{n}@example.org"), f"Subject: {n}\r\n\r\nLesson {n}.\r\n".encode()


def _send_all(transport: SMTPTransport, count: int) -> list[BaseException | None]:
    """Send messages 0..count-1 as the dispatcher does: each with the next one's envelope."""
    messages = [_message(n) for n in range(count)]
    outcomes: list[BaseException | None] = []
    with transport.open() as connection:
        for n, (envelope, data) in enumerate(messages):
            then = None
            if n + 1 < count and connection.groups():
                following = messages[n + 1]
                then = (following[0], len(following[1]))
            try:
                connection.send(envelope, data, then)
                outcomes.append(None)
            except (TemporaryFailure, PermanentFailure) as exc:
                outcomes.append(exc)
    return outcomes


def test_a_message_end_goes_with_the_next_messages_envelope(relay: RawRelay) -> None:
    """From the second message on, the server has the next MAIL before it answers a dot:
    one round trip per email. Every message arrives once, in order, with its own content."""
    transport = SMTPTransport("127.0.0.1", relay.port, security="none", timeout=5)
    assert _send_all(transport, 4) == [None] * 4
    assert [r for r, _ in relay.received] == [f"r{n}@example.org" for n in range(4)]
    assert [d for _, d in relay.received] == [_message(n)[1] for n in range(4)]
    # The first message goes alone (whether the server groups is known after connecting);
    # the last has nothing after it.
    assert relay.grouped == [False, True, True, False]
    assert relay.connections == 1


def test_without_grouping_each_dot_is_answered_before_the_next_mail(relay: RawRelay) -> None:
    """SMTP_GROUP_MESSAGES=false: two round trips per email, the same messages."""
    relay.wait = 0.2
    transport = SMTPTransport(
        "127.0.0.1", relay.port, security="none", timeout=5, group_messages=False
    )
    assert _send_all(transport, 3) == [None] * 3
    assert relay.grouped == [False, False, False]
    assert [r for r, _ in relay.received] == [f"r{n}@example.org" for n in range(3)]


def test_a_refusal_of_the_grouped_recipient_is_that_messages_own(relay: RawRelay) -> None:
    """A 550 at the RCPT that travelled with message 1's end is message 2's bounce; message
    1's 250 is its own; the session then falls back to one message per exchange."""
    relay.wait = 0.2
    relay.rcpt_replies["r2@example.org"] = "550 5.1.1 no such user"
    transport = SMTPTransport("127.0.0.1", relay.port, security="none", timeout=5)
    outcomes = _send_all(transport, 5)
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None,
        None,
        "PermanentFailure",
        None,
        None,
    ]
    refused = outcomes[2]
    assert isinstance(refused, PermanentFailure)
    assert (refused.bounce, refused.enhanced_code) == (True, "5.1.1")
    assert [r for r, _ in relay.received] == [f"r{n}@example.org" for n in (0, 1, 3, 4)]
    # Grouped up to the refusal; after it, one message per exchange.
    assert relay.grouped == [False, True, False, False]


def test_a_rejected_final_dot_leaves_the_grouped_message_to_go_again(relay: RawRelay) -> None:
    """A 554 to message 1's dot is message 1's failure. Message 2's envelope, written with
    that dot, is abandoned with the connection and message 2 goes on a new one, once."""
    relay.wait = 0.2
    relay.final_replies["r1@example.org"] = "554 5.6.0 content rejected"
    transport = SMTPTransport("127.0.0.1", relay.port, security="none", timeout=5)
    outcomes = _send_all(transport, 4)
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None,
        "PermanentFailure",
        None,
        None,
    ]
    assert [r for r, _ in relay.received] == [f"r{n}@example.org" for n in (0, 2, 3)]
    assert relay.connections == 2


START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
FAST = {"SMTP_FINAL_REPLY_TIMEOUT": "2", "SMTP_TIMEOUT": "5", "RETRY_BASE_SECONDS": "60"}


@pytest.mark.parametrize("grouping", ["true", "false"], ids=["grouped", "two-round-trips"])
def test_faults_mid_group_are_classified_as_they_would_be_alone(
    engine: EngineFactory, smtp_server: SMTPServer, grouping: str
) -> None:
    """Six welcomes on one connection: b's connection drops after the server stored it (the
    next envelope, c's, went with b's end), e's recipient is refused while grouped with d's
    end, f gets a 451 at RCPT. Grouped or not: the same outcomes, nobody gets a copy from
    the grouping, and b (unknown) and f (retry) come later, b with the same Message-ID."""
    people = [f"{name}@example.org" for name in "abcdef"]
    smtp_server.handler.after_storing.extend([0.0, "drop"])
    smtp_server.handler.rcpt_replies["e@example.org"] = "550 5.1.1 no such user"
    smtp_server.handler.rcpt_replies["f@example.org"] = "451 4.3.0 try again later"
    app, clock = engine(START, SMTP_GROUP_MESSAGES=grouping, **FAST)
    for email in people:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Reader", timezone="UTC", now=START
        )
    first = tick(app, clock, START)
    assert (first.sent, first.unknown, first.bounced, first.retried) == (3, 1, 1, 1)
    assert [len(smtp_server.to(email)) for email in people] == [1, 1, 1, 1, 0, 0]
    smtp_server.handler.rcpt_replies.pop("f@example.org")
    later = tick(app, clock, START + timedelta(hours=1))
    assert (later.sent, later.unknown) == (2, 0)
    assert [len(smtp_server.to(email)) for email in people] == [1, 2, 1, 1, 0, 1]
    first_b, second_b = smtp_server.to("b@example.org")
    assert first_b.message["Message-ID"] == second_b.message["Message-ID"]


def test_the_engine_sends_a_morning_one_round_trip_per_email(
    engine: EngineFactory, relay: RawRelay
) -> None:
    """A pass of five welcomes through a relay that offers PIPELINING: from the third on, each
    message is proved and its envelope written with the previous message's end (the first
    goes alone, before the session is known to group); all arrive once, on one connection."""
    relay.wait = 0.3
    app, clock = engine(
        START, SMTP_HOST="127.0.0.1", SMTP_PORT=str(relay.port), SMTP_SECURITY="none"
    )
    people = [f"{name}@example.org" for name in "abcde"]
    for email in people:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Reader", timezone="UTC", now=START
        )
    assert tick(app, clock, START).sent == 5
    assert sorted(r for r, _ in relay.received) == people
    assert relay.grouped == [False, True, True, True, False]
    assert relay.connections == 1


def test_a_stop_while_the_server_reads_gives_back_the_message_built_meanwhile(
    engine: EngineFactory, relay: RawRelay
) -> None:
    """While the server reads a message the engine builds the next one (its claim taken, not
    proved). A stop (SIGINT) arriving then ends the pass after that message's reply: the one
    built meanwhile is not sent but given back with the rest, and the next pass sends every
    remaining lesson once, in order."""
    relay.wait = 0.3  # the next message is built well within the server's wait
    stop = threading.Event()
    relay.before_reply = lambda recipient: stop.set()
    app, clock = engine(
        START, SMTP_HOST="127.0.0.1", SMTP_PORT=str(relay.port), SMTP_SECURITY="none"
    )
    people = [f"{name}@example.org" for name in "abcd"]
    for email in people:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Reader", timezone="UTC", now=START
        )
    clock.set(START)
    first = app.dispatcher.run_pass(START, stop)
    assert (first.sent, first.released, first.stopped) == (1, 3, True)
    assert [r for r, _ in relay.received] == ["a@example.org"]
    relay.before_reply = None
    assert tick(app, clock, START).sent == 3
    assert [r for r, _ in relay.received] == people


def test_a_stop_while_the_next_batch_is_claimed_gives_that_batch_back_too(
    engine: EngineFactory, relay: RawRelay
) -> None:
    """Small batches, so the next one is claimed in the background while a message goes: a
    stop at the first reply ends the pass with every claim it made either sent or given back
    (none left to wait out its lease), and a pass at the same instant sends each remaining
    welcome email once."""
    stop = threading.Event()
    relay.before_reply = lambda recipient: stop.set()
    app, clock = engine(
        START,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(relay.port),
        SMTP_SECURITY="none",
        BATCH_SIZE="2",
    )
    people = [f"p{n}@example.org" for n in range(8)]
    for email in people:
        subscriptions.subscribe(
            app.db, app.plan, email=email, first_name="Reader", timezone="UTC", now=START
        )
    clock.set(START)
    first = app.dispatcher.run_pass(START, stop)
    assert (first.sent, first.stopped, first.error) == (1, True, None)
    assert first.claimed >= 3  # the next batch was claimed before the first one ran out
    assert first.released == first.claimed - first.sent
    relay.before_reply = None
    assert tick(app, clock, START).sent == 7  # none of them is held by a lease
    assert sorted(r for r, _ in relay.received) == sorted(people)
