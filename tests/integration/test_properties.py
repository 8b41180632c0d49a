"""Random histories against the send guarantee: subscribes to two plans side by side (one
may chain into the other with `then:`), leaving one plan or everything, plan edits, passes at
random instants, crashes, SMTP faults, and a second engine (its clock off by minutes) running
while this one is paused past its lease or slow, never send a step twice (beyond one message
per connection in flight at a crash or a pause), out of order, early, past the daily cap
across plans, after leaving, or not at all."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import inspect, select

from campaign.clock import FixedClock
from campaign.delivery.scheduler import Service
from campaign.domain.schedule import local_instant
from campaign.domain.transport import Connection, Envelope, Transport
from campaign.domain.variants import choose_variant
from campaign.domain.weekdays import EVERY_DAY, days_from_names
from campaign.engine import App, make_service
from campaign.people import subscriptions
from campaign.settings import Settings
from campaign.storage.models import Base, Delivery, Enrollment, Subscriber
from tests.conftest import ROOT, EngineFactory
from tests.plans_folder import KNEE
from tests.smtp_server import Received, SMTPServer

START = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
#: DST both ways and both hemispheres, half-hour offsets with and without DST.
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Australia/Sydney",
    "America/St_Johns",
)
SEND_TIME = time(7, 0)
#: the second plan, side by side with the shipped one in the plan folder: the knee plan's three
#: steps at 09:00 (a lesson held back by the daily cap goes at its own plan's time and days).
SECOND = "knee"
SECOND_TIME = time(9, 0)
SECOND_DAYS = {"welcome": 0, "day01": 1, "day02": 2}
#: lessons (steps after a plan's day 0) one person may get per local day (MAX_PER_DAY default).
MAX_PER_DAY = 1
#: the plan's send_days: every day (the key left out), weekdays, weekends, three days a week.
SEND_DAYS = (None, "[mon, tue, wed, thu, fri]", "[sat, sun]", "[mon, wed, fri]")
#: how long after SEND_TIME a daily step may go out (the default send_window_hours).
SEND_WINDOW = timedelta(hours=12)
MAX_READERS = 4
#: the test's plan: the shipped one up to this day.
PLAN_DAYS = 7
#: new steps go on a day no step of the current plan uses (freed by a removal, or past the end).
NEW_STEP_DAYS = range(1, PLAN_DAYS + 4)
FINAL = frozenset({"sent", "failed", "bounced", "skipped"})
TEMPORARY_REPLIES = (
    "451 4.3.0 Try again later",
    "421 4.4.2 Closing connection",
    "451 4.7.1 Slow down",  # a throttle: the whole relay backs off
)
#: pauses between passes: within a lease, within a day, up to two days of downtime.
GAPS = st.one_of(st.integers(1, 9), st.integers(10, 600), st.integers(600, 2 * 24 * 60)).map(
    lambda minutes: timedelta(minutes=minutes)
)
#: plan saves per example: each one re-checks every template (most of an example's time).
MAX_SAVES = 2
#: a subject test on one step: each reader's email carries the variant its delivery recorded.
TESTED_KEY = "day02"
VARIANT_SUBJECT = "Variant b: day02"
CHANGES = st.tuples(
    st.sampled_from(("subject", "remove", "add")), st.integers(0, 99), st.booleans()
)
#: histories per database with one SMTP connection (half as many with three); raise it to
#: search longer, e.g. CAMPAIGN_PROPERTY_EXAMPLES=500.
EXAMPLES = int(os.environ.get("CAMPAIGN_PROPERTY_EXAMPLES", "20"))


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so the dispatcher neither records nor releases."""


@dataclass
class Script:
    """What happens inside the next pass, counted in messages the server accepted."""

    #: die at this message: before it is sent, or just after the server accepted it.
    kill_at: int | None = None
    kill_after_acceptance: bool = True
    #: run `hook` (an unsubscribe, another engine's pass) right after the server accepted
    #: this message.
    hook_at: int | None = None
    hook: Callable[[], None] | None = None
    #: how long each message takes to send, by the database's clock (a slow relay).
    slow: timedelta = timedelta(0)


#: Message-ID at the start of a header line, as the composer writes it.
_MESSAGE_ID = re.compile(rb"^Message-ID: (<[^>\r\n]+>)", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Send:
    """A message the server accepted, as the engine that sent it saw it."""

    engine: str
    #: the engine's own clock at its pass, and the database's clock at the 250.
    at: datetime
    database_at: datetime


class ScriptedTransport:
    """The real SMTP transport, with a scripted process death and mid-pass events around it;
    it notes every accepted message in `sends`, by Message-ID."""

    def __init__(
        self,
        inner: Transport,
        name: str,
        database_clock: FixedClock,
        sends: dict[str, list[Send]],
    ) -> None:
        self.inner = inner
        self.description = inner.description
        self.name = name
        self.database_clock = database_clock
        self.sends = sends
        self.pass_at = database_clock.now()
        self._lock = threading.Lock()
        self.begin(Script())

    def begin(self, script: Script, at: datetime | None = None) -> None:
        with self._lock:
            self.script = script
            self.pass_at = at or self.database_clock.now()
            self.calls = 0
            self.accepted = 0
            self.dead = False

    @contextlib.contextmanager
    def open(self) -> Iterator[Connection]:
        with self.inner.open() as connection:
            yield _ScriptedConnection(self, connection)

    def before_send(self) -> None:
        with self._lock:
            self.calls += 1
            script = self.script
            if script.slow:
                self.database_clock.advance(script.slow)
            if not self.dead and not script.kill_after_acceptance:
                self.dead = script.kill_at == self.calls
            dead = self.dead
        if dead:
            raise Killed

    def after_acceptance(self, data: bytes) -> None:
        with self._lock:
            found = _MESSAGE_ID.search(data)
            if found is not None:
                send = Send(self.name, self.pass_at, self.database_clock.now())
                self.sends.setdefault(found.group(1).decode(), []).append(send)
            self.accepted += 1
            script = self.script
            # A connection whose message was in flight when another one died dies too: the
            # server has its message, the database never hears of it.
            dying = self.dead
            if not dying and script.kill_after_acceptance and script.kill_at == self.accepted:
                self.dead = dying = True
            hook = script.hook if script.hook_at == self.accepted else None
        if dying:
            raise Killed
        if hook is not None:
            hook()


class _ScriptedConnection:
    def __init__(self, transport: ScriptedTransport, inner: Connection) -> None:
        self._transport = transport
        self._inner = inner

    def send(self, envelope: Envelope, data: bytes) -> None:
        self._transport.before_send()
        self._inner.send(envelope, data)
        self._transport.after_acceptance(data)


class RecordingReplies(dict[str, str]):
    """RCPT replies for the test server that remember whom they refused, and when (as the
    number of messages the server had received by then)."""

    def __init__(self, received: list[Received]) -> None:
        super().__init__()
        self._received = received
        self.refused: list[tuple[str, int]] = []

    def get(self, key: str, default: Any = None, /) -> Any:
        reply = super().get(key, default)
        if reply:
            self.refused.append((key, len(self._received)))
        return reply


#: a client write that ends with the DATA command: alone, after MAIL and RCPT (PIPELINING),
#: or after the previous message's content and final dot (one round trip per email).
_ENDS_WITH_DATA = re.compile(rb"(?:^|\r\n)data\r\n\Z", re.IGNORECASE)


class DroppingProxy:
    """A TCP relay in front of the test SMTP server that can cut a connection the moment the
    client says DATA, as a flaky network does (the server never gets that write: neither the
    message it opens nor, when grouped, the end of the message before it)."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._drops = 0
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def arm(self, drops: int) -> None:
        with self._lock:
            self._drops = drops

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target))
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):  # no Nagle delay on SMTP's small replies
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._open.update((client, upstream))
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops <= 0:
                return False
            self._drops -= 1
            return True

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if from_client and _ENDS_WITH_DATA.search(chunk) and self._take_drop():
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._cut(source, sink)

    def _cut(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() on Linux
        self._listener.close()
        with self._lock:
            still_open = list(self._open)
        self._cut(*still_open)
        for thread in self._threads:
            thread.join(timeout=5)


@dataclass
class World:
    """What every example shares: the fixtures, the relay, and how to build an engine."""

    engine: EngineFactory
    smtp: SMTPServer
    proxy: DroppingProxy
    tmp_path: Path
    overrides: dict[str, str]
    connections: int
    max_attempts: int
    soft_bounce_limit: int
    lease: timedelta
    examples: int = 0


@dataclass
class Reader:
    """A subscriber as the test sees them."""

    email: str
    zone: str
    #: plan id -> when a signup naming it enrolled them (a plan `then:` chained them into is
    #: not here: it starts past its day 0).
    joined: dict[str, datetime]
    #: steps of the first plan they may receive: the plan when they joined it plus steps
    #: added while still ahead of them.
    allowed: set[str]
    #: plan id -> position in the server's received list from which nothing of that plan may
    #: reach them (they left it by its footer link, staying in another).
    left: dict[str, int] = field(default_factory=dict)
    unsubscribed: bool = False
    #: the server refused them with 550 5.1.1 (a hard bounce).
    refused: bool = False
    #: position in the server's received list from which nothing may reach them.
    gone_from: int | None = None
    gone_pass: int | None = None
    #: messages that may still arrive in that pass (already past the status check on another
    #: connection when they left mid-pass).
    gone_slack: int = 0

    @property
    def present(self) -> bool:
        return not self.unsubscribed and not self.refused


@dataclass(frozen=True)
class Mail:
    """One message the server accepted, tied to the pass that sent it."""

    index: int
    recipient: str
    key: str
    message_id: str
    subject: str
    pass_no: int
    at: datetime
    #: accepted but never recorded sent: a crash hit between the 250 and the commit.
    ghost: bool
    #: which engine sent it ("main" or "rival"), and the database's clock at its 250.
    engine: str = "main"
    database_at: datetime | None = None
    #: the plan the message belongs to (X-Campaign-Step).
    plan: str = ""


@dataclass
class PassInfo:
    number: int
    at: datetime
    keys: frozenset[str]
    subjects: dict[str, str]
    crashed: bool = False


def split_plan(text: str) -> tuple[str, dict[str, str]]:
    """The plan's text up to `steps:`, and each step's block by key."""
    head, marker, body = text.partition("\nsteps:\n")
    assert marker, "the plan has no steps: section"
    blocks: dict[str, str] = {}
    for chunk in re.split(r"(?m)^(?=  - key: )", body):
        if not chunk.strip():
            continue
        key = chunk.split("\n", 1)[0].removeprefix("  - key: ").strip()
        blocks[key] = chunk if chunk.endswith("\n") else chunk + "\n"
    return head + marker, blocks


def day_of(block: str) -> int:
    found = re.search(r"(?m)^    day: (\d+)$", block)
    assert found, block
    return int(found.group(1))


def with_field(block: str, name: str, value: str) -> str:
    return re.sub(
        rf"(?m)^(    {name}:|  - {name}:) .*$",
        lambda match: f"{match.group(1)} {value}",
        block,
        count=1,
    )


class History(RuleBasedStateMachine):
    """One random history of one engine against one database and one SMTP server."""

    world: ClassVar[World]

    def __init__(self) -> None:
        super().__init__()
        world = self.world
        world.examples += 1
        folder = world.tmp_path / f"example{world.examples}"
        (folder / "plans").mkdir(parents=True)
        (folder / "assets").symlink_to(ROOT / "assets")
        self.plan_path = folder / "plans" / "thirty_day.yaml"
        self.second_path = folder / "plans" / "knee.yaml"
        self.head, blocks = split_plan((ROOT / "plans" / "thirty_day.yaml").read_text())
        # The folder holds this plan and the knee plan; whether it says `then: knee` is drawn.
        self.head = re.sub(r"(?m)^(# Graduates join.*\n)?then: .*\n", "", self.head)
        found = re.search(r"(?m)^id: (\S+)$", self.head)
        assert found, "the shipped plan has no id"
        self.first = found.group(1)
        #: the plan a graduate of the first one is chained into (`then:`), if any.
        self.then: str | None = None
        self.plan_env = {"PLAN_PATH": str(self.plan_path.parent), "DEFAULT_PLAN": self.first}
        # The first days of the shipped plan: every rule applies alike, and a month of email
        # per reader would only make each example slower.
        self.blocks = {key: block for key, block in blocks.items() if day_of(block) <= PLAN_DAYS}
        self.blocks[TESTED_KEY] += (
            f"    variants:\n      - subject: {json.dumps(VARIANT_SUBJECT)}\n"
        )
        self.template_block = self.blocks["day06"]
        self.key_day = {key: day_of(block) for key, block in self.blocks.items()}
        #: key -> the subject an edit gave it; key -> how many passes had run when removed.
        self.edited: dict[str, str] = {}
        self.removed: dict[str, int] = {}
        #: plan id -> the weekdays its daily steps may go out on (its send_days).
        self.send_days = {self.first: EVERY_DAY, SECOND: EVERY_DAY}
        self.saves = 0
        self.mtime = 0
        self._write_plan()
        self._write_second(None)
        #: the database's clock, which leases run by: true time, whatever an engine's says.
        self.database_clock = FixedClock(START)
        #: Message-ID -> each acceptance of it by the server, as its sender saw it.
        self.sends: dict[str, list[Send]] = {}
        self.app, self.clock = world.engine(
            START,
            SMTP_PORT=str(world.proxy.port),
            lease_clock=self.database_clock,
            **self.plan_env,
            **world.overrides,
        )
        self._wire()
        #: a second engine on the same database (another machine), built when first needed.
        self.rival: tuple[App, FixedClock, ScriptedTransport, Service] | None = None
        #: repeats allowed by what the history did: one per connection in flight at a pause.
        self.repeat_allowance = 0
        tables = set(inspect(self.app.db.engine).get_table_names())
        with self.app.db.transaction() as session:  # a fresh database for every example
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in tables:
                    session.execute(table.delete())
        self.smtp = world.smtp
        with self.smtp.handler.lock:
            self.smtp.handler.received.clear()
            self.smtp.handler.data_replies.clear()
        self.replies = RecordingReplies(self.smtp.handler.received)
        self.smtp.handler.rcpt_replies = self.replies
        world.proxy.arm(0)
        self.readers: dict[str, Reader] = {}
        self.mails: list[Mail] = []
        self.passes: list[PassInfo] = []
        self.crashes = 0
        #: Message-ID -> end of the lease a killed process held on it.
        self.leases: dict[str, datetime] = {}
        self.broken = False

    # -- wiring ----------------------------------------------------------------------------

    def _wire(self) -> None:
        self.transport = ScriptedTransport(
            self.app.dispatcher.transport, "main", self.database_clock, self.sends
        )
        self.app.dispatcher.transport = self.transport
        self.service = make_service(self.app)

    def _sync_database_clock(self) -> None:
        """True time moves on: the database's clock is never behind this engine's."""
        if self.clock.now() > self.database_clock.now():
            self.database_clock.set(self.clock.now())

    def _restart(self) -> None:
        """A new process after the kill: fresh engine, same database, same plan file."""
        old = self.app
        self.app, self.clock = self.world.engine(
            self.clock.now(),
            SMTP_PORT=str(self.world.proxy.port),
            lease_clock=self.database_clock,
            **self.plan_env,
            **self.world.overrides,
        )
        old.close()
        self._wire()

    def _rival(self) -> tuple[App, FixedClock, ScriptedTransport, Service]:
        if self.rival is None:
            app, clock = self.world.engine(
                self.clock.now(),
                SMTP_PORT=str(self.world.proxy.port),
                lease_clock=self.database_clock,
                **self.plan_env,
                **self.world.overrides,
            )
            transport = ScriptedTransport(
                app.dispatcher.transport, "rival", self.database_clock, self.sends
            )
            app.dispatcher.transport = transport
            self.rival = (app, clock, transport, make_service(app))
        return self.rival

    def _rival_pass(self, paused: bool, offset: timedelta) -> None:
        """Another engine, its clock `offset` off, runs a whole pass on the same database
        while this one is stopped mid-pass: paused past its lease, or only slow."""
        if paused:
            self.database_clock.advance(self.world.lease + timedelta(seconds=1))
            # Each connection may have had a message in flight (past its proof) at the stop.
            self.repeat_allowance += self.world.connections
        else:
            # Without the lease keeper (it renews every few real seconds, and this test is
            # faster than that), a claim in flight on another connection of this engine may
            # outlive its lease while the relay is slow.
            self.repeat_allowance += self.world.connections - 1
        _, clock, transport, service = self._rival()
        at = self.database_clock.now() + offset
        clock.set(at)
        transport.begin(Script(), at)
        service.run_pass(at)

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.broken = True
            raise

    # -- the plan file ----------------------------------------------------------------------

    def _ordered_keys(self) -> list[str]:
        return sorted(self.blocks, key=lambda key: self.key_day[key])

    def _write_plan(self) -> None:
        text = self.head + "".join(self.blocks[key] for key in self._ordered_keys())
        self._save(self.plan_path, text)

    def _write_second(self, send_days: str | None) -> None:
        """The knee plan of tests.plans_folder, with the shipped plan's confirmation email."""
        confirmation = re.search(r"(?ms)^confirmation:\n.*?(?=^\S)", self.head)
        assert confirmation, "the shipped plan has no confirmation email"
        days = f"send_days: {send_days}\n" if send_days else ""
        text = KNEE.replace("steps:\n", f"{days}{confirmation[0]}steps:\n", 1)
        self._save(self.second_path, text)

    def _save(self, path: Path, text: str) -> None:
        path.write_text(text)
        # Saves within one filesystem tick keep their mtime; make every save visible.
        self.mtime = max(self.mtime + 1_000_000_000, path.stat().st_mtime_ns + 1)
        os.utime(path, ns=(self.mtime, self.mtime))

    def _reload(self) -> None:
        self._write_plan()
        assert self.app.reload_plan_if_changed(), "the engine refused the edited plan"
        assert [step.key for step in self.app.plan.steps] == self._ordered_keys()

    # -- the database, read-only ------------------------------------------------------------

    def _deliveries(self) -> list[tuple[str, str, str, int, str, str]]:
        """(address, step key, status, attempts, Message-ID, plan id) of every delivery."""
        with self.app.db.transaction() as session:
            rows = session.execute(
                select(
                    Subscriber.email,
                    Delivery.step_key,
                    Delivery.status,
                    Delivery.attempts,
                    Delivery.message_id,
                    Enrollment.plan_id,
                )
                .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
                .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)
            ).all()
            return [(a, b, c, d, e, f) for a, b, c, d, e, f in rows]

    def _variants(self) -> dict[str, tuple[int, str | None]]:
        """Per Message-ID: the delivery's enrollment and its recorded subject variant."""
        with self.app.db.transaction() as session:
            rows = session.execute(
                select(Delivery.message_id, Delivery.enrollment_id, Delivery.variant)
            ).all()
            return {message_id: (enrollment, variant) for message_id, enrollment, variant in rows}

    def _enrollments(self) -> dict[tuple[str, str], tuple[str, str, int, datetime]]:
        """Per address and plan: the subscriber's status, the enrollment's status, its last
        day and when it started (a person is never in one plan twice here)."""
        with self.app.db.transaction() as session:
            rows = session.execute(
                select(
                    Subscriber.email,
                    Enrollment.plan_id,
                    Subscriber.status,
                    Enrollment.status,
                    Enrollment.last_day,
                    Enrollment.started_at,
                ).join(Enrollment, Enrollment.subscriber_id == Subscriber.id)
            ).all()
        found: dict[tuple[str, str], tuple[str, str, int, datetime]] = {}
        for email, plan_id, who, status, day, started in rows:
            assert (email, plan_id) not in found, f"{email} is in {plan_id} twice"
            found[email, plan_id] = (who, status, day, started.replace(tzinfo=UTC))
        return found

    def _subscriber_status(self, email: str) -> str:
        with self.app.db.transaction() as session:
            return str(session.scalar(select(Subscriber.status).where(Subscriber.email == email)))

    def _day(self, plan_id: str, key: str) -> int:
        return self.key_day[key] if plan_id == self.first else SECOND_DAYS[key]

    # -- operations -------------------------------------------------------------------------

    def _present(self) -> list[Reader]:
        return [reader for reader in self.readers.values() if reader.present]

    def _subscribe(self, zone: str, plan_id: str) -> None:
        email = f"reader{len(self.readers)}@example.org"
        now = self.clock.now()
        plan = self.app.plan_named(plan_id)
        subscriptions.subscribe(
            self.app.db, plan, email=email, first_name="Sam", timezone=zone, now=now
        )
        allowed = set(self.blocks) if plan_id == self.first else set()
        self.readers[email] = Reader(email, zone, {plan_id: now}, allowed)

    def _join(self, reader: Reader, plan_id: str) -> None:
        """A signup naming another plan: an active reader joins it at once (its welcome due),
        unless they run or finished it (`then:` may have chained them in already)."""
        now = self.clock.now()
        result = subscriptions.subscribe(
            self.app.db,
            self.app.plan_named(plan_id),
            email=reader.email,
            first_name="Sam",
            timezone=reader.zone,
            now=now,
        )
        if result.joined:
            reader.joined[plan_id] = now
            if plan_id == self.first:
                reader.allowed = set(self.blocks)

    def _leave_plan(self, reader: Reader, plan_id: str) -> None:
        """The footer link of one plan: that plan stops; someone with no other plan running
        has left the list."""
        index = len(self.smtp.handler.received)
        with self.app.db.transaction() as session:
            subscriber_id = session.scalar(
                select(Subscriber.id).where(Subscriber.email == reader.email)
            )
        assert subscriber_id is not None
        subscriptions.leave_plan(self.app.db, subscriber_id, plan_id, self.clock.now())
        reader.left.setdefault(plan_id, index)
        if self._subscriber_status(reader.email) == "unsubscribed":
            reader.unsubscribed = True
            self._gone(reader, index, 0)

    def _gone(self, reader: Reader, index: int, slack: int) -> None:
        if reader.gone_from is None:
            reader.gone_from, reader.gone_pass, reader.gone_slack = (
                index,
                len(self.passes) - 1,
                slack,
            )

    def _leave(self, reader: Reader, *, mid_pass: bool = False) -> None:
        if reader.unsubscribed:
            return
        index = len(self.smtp.handler.received)
        subscriptions.unsubscribe(self.app.db, email=reader.email, now=self.clock.now())
        reader.unsubscribed = True
        # On parallel connections one message to them may already be past its status check.
        self._gone(reader, index, 1 if mid_pass and self.world.connections > 1 else 0)

    def _pass(self, gap: timedelta, script: Script | None = None) -> None:
        now = self.clock.now() + gap
        self.clock.set(now)
        self._sync_database_clock()
        info = PassInfo(len(self.passes), now, frozenset(self.blocks), dict(self.edited))
        self.passes.append(info)
        first = len(self.smtp.handler.received)
        refused_before = len(self.replies.refused)
        self.transport.begin(script or Script(), now)
        try:
            self.service.run_pass(now)
        except Killed:
            info.crashed = True
        # A pause or a slow relay took time: this engine's clock catches up with true time.
        if self.database_clock.now() > self.clock.now():
            self.clock.set(self.database_clock.now())
        # Faults last one pass.
        with self.smtp.handler.lock:
            self.smtp.handler.data_replies.clear()
        self.replies.clear()
        self.world.proxy.arm(0)
        for email, index in self.replies.refused[refused_before:]:
            reader = self.readers[email]
            reader.refused = True
            self._gone(reader, index, 0)
        received = self.smtp.received[first:]
        self._record(received, first, info)
        if info.crashed:
            self.crashes += 1
            self._note_leases(info)
            self._restart()
        self._check_mails()
        self._check_progress()

    def _note_leases(self, info: PassInfo) -> None:
        """The claims the dead process left: none may go out again before its lease ends."""
        with self.app.db.transaction() as session:
            leased = session.execute(
                select(Delivery.message_id, Enrollment.lease_expires_at)
                .join(Enrollment, Enrollment.id == Delivery.enrollment_id)
                .where(
                    Delivery.status == "queued",
                    Enrollment.lease_owner.startswith(f"{self.app.dispatcher.owner}/"),
                )
            ).all()
        for message_id, until in leased:
            assert until == info.at + self.world.lease, (message_id, until, info.at)
            self.leases[message_id] = until

    def _record(self, received: list[Received], first: int, info: PassInfo) -> None:
        new: list[tuple[int, str, str, str, str, str]] = []
        for offset, item in enumerate(received):
            assert len(item.recipients) == 1, item.recipients
            message = item.message
            plan_id, _, key = str(message["X-Campaign-Step"]).partition("/")
            assert plan_id in (self.first, SECOND), plan_id
            new.append(
                (
                    first + offset,
                    item.recipients[0],
                    key,
                    str(message["Message-ID"]),
                    str(message["Subject"]),
                    plan_id,
                )
            )
        ids = [message_id for _, _, _, message_id, _, _ in new]
        with self.app.db.transaction() as session:
            status = dict(
                session.execute(
                    select(Delivery.message_id, Delivery.status).where(Delivery.message_id.in_(ids))
                ).all()
            )
        ghosts = 0
        for index, recipient, key, message_id, subject, plan_id in new:
            ghost = status.get(message_id) != "sent"
            ghosts += ghost
            seen = self.sends.get(message_id) or [Send("main", info.at, info.at)]
            send = seen.pop(0)
            self.mails.append(
                Mail(
                    index,
                    recipient,
                    key,
                    message_id,
                    subject,
                    info.number,
                    send.at,
                    ghost,
                    send.engine,
                    send.database_at,
                    plan_id,
                )
            )
        if not info.crashed:
            assert ghosts == 0, f"pass {info.number}: accepted, not recorded, and no crash"
        assert ghosts <= self.world.connections, (
            f"pass {info.number}: {ghosts} messages lost their record in one crash"
        )

    # -- invariants -------------------------------------------------------------------------

    def _check_mails(self) -> None:
        """No stranger, no step outside the plan of its pass or outside what the reader may
        get, nothing after leaving (a plan, or everything), no step twice (ghosts aside), in
        order and one a local day within each plan, at most MAX_PER_DAY lessons a local day
        across plans, never early, daily steps only on a sending day within their plan's
        window, the edited subject."""
        ghosts = sum(mail.ghost for mail in self.mails)
        assert ghosts <= self.crashes * self.world.connections, (ghosts, self.crashes)
        repeats = over_cap = 0
        recorded = self._variants()
        starts = {key: started for key, (*_, started) in self._enrollments().items()}
        for reader in self.readers.values():
            mails = [mail for mail in self.mails if mail.recipient == reader.email]
            for mail in mails:
                if mail.plan == self.first:
                    self._check_first_plan_mail(mail, reader, recorded)
                else:
                    assert mail.key in SECOND_DAYS, mail
                    assert mail.key != "welcome" or SECOND in reader.joined, (
                        f"{mail}: a graduate chained by then: got the next plan's welcome"
                    )
            if reader.gone_from is not None:
                late = [mail for mail in mails if mail.index >= reader.gone_from]
                assert len(late) <= reader.gone_slack, f"mailed after leaving: {late}"
                assert all(mail.pass_no == reader.gone_pass for mail in late), late
            for plan_id, left_at in reader.left.items():
                late = [m for m in mails if m.plan == plan_id and m.index >= left_at]
                assert not late, f"mailed {plan_id} after leaving it: {late}"
            real: list[Mail] = []  # the first copy of each step
            for mail in mails:
                if mail.ghost:
                    continue
                first = next((m for m in real if (m.plan, m.key) == (mail.plan, mail.key)), None)
                if first is None:
                    real.append(mail)
                    continue
                # A repeat: only a message in flight when its engine was paused, the same one.
                repeats += 1
                assert mail.message_id == first.message_id, f"a step twice: {first}, {mail}"
            zone = ZoneInfo(reader.zone)
            for plan_id in (self.first, SECOND):
                ours = [mail for mail in real if mail.plan == plan_id]
                days = [self._day(plan_id, mail.key) for mail in ours]
                keys = [mail.key for mail in ours]
                assert all(a < b for a, b in pairwise(days)), f"out of order: {plan_id} {keys}"
                dates = [mail.at.astimezone(zone).date() for mail in ours]
                assert len(set(dates)) == len(dates), f"two emails on one local day: {ours}"
            # The daily cap across plans: lessons, not welcomes, by distinct message.
            lessons: dict[date, set[str]] = {}
            for mail in mails:
                if self._day(mail.plan, mail.key):
                    on = mail.at.astimezone(zone).date()
                    lessons.setdefault(on, set()).add(mail.message_id)
            over_cap += sum(max(len(ids) - MAX_PER_DAY, 0) for ids in lessons.values())
            for mail in mails:
                day = self._day(mail.plan, mail.key)
                started = starts[reader.email, mail.plan]
                if mail.plan in reader.joined:
                    assert started == reader.joined[mail.plan], (mail, started)
                send_time = SEND_TIME if mail.plan == self.first else SECOND_TIME
                if day:
                    local = mail.at.astimezone(zone)
                    assert local.weekday() in self.send_days[mail.plan], (
                        f"{mail}: not a sending day"
                    )
                    opens = local_instant(local.date(), send_time, zone)
                    assert opens <= mail.at < opens + SEND_WINDOW, f"{mail} outside its window"
                enrolled_on = started.astimezone(zone).date()
                earliest = (
                    datetime.combine(enrolled_on + timedelta(days=day), send_time, tzinfo=zone)
                    if day
                    else started
                )
                assert mail.at >= earliest, f"early: {mail} before {earliest}"
            for mail in mails:
                until = self.leases.get(mail.message_id)
                sent_at = mail.database_at or mail.at
                assert until is None or mail.ghost or sent_at >= until, f"{mail} within a lease"
            for ghost in (mail for mail in mails if mail.ghost):
                again = [m for m in real if (m.plan, m.key) == (ghost.plan, ghost.key)]
                assert all(mail.index > ghost.index for mail in again), f"resent: {ghost}"
                assert all(mail.message_id == ghost.message_id for mail in again), ghost
        assert repeats <= self.repeat_allowance, f"{repeats} steps repeated"
        # A crash or a pause may leave a claim that no pass counts until it is resent.
        allowance = self.crashes * self.world.connections + self.repeat_allowance
        assert over_cap <= allowance, f"{over_cap} lessons past the daily cap"

    def _check_first_plan_mail(
        self, mail: Mail, reader: Reader, recorded: dict[str, tuple[int, str | None]]
    ) -> None:
        """The edited first plan: the step was in the plan of its pass, still ahead of the
        reader, with the subject of its pass (or its recorded subject-test variant)."""
        info = self.passes[mail.pass_no]
        assert mail.key in info.keys, f"{mail} was not in the plan of its pass"
        assert mail.key in reader.allowed, f"{mail}: this reader was past its day"
        edited = info.subjects.get(mail.key)
        if mail.key == TESTED_KEY:
            # chosen once, from the enrollment and the key; kept by every retry.
            enrollment, variant = recorded[mail.message_id]
            assert variant == choose_variant(enrollment, TESTED_KEY, ("a", "b")), mail
            if variant == "b":
                assert mail.subject == VARIANT_SUBJECT, mail
                return
        if edited is not None:
            assert mail.subject == edited, mail
        else:
            assert not mail.subject.startswith("Edited"), mail

    def _reached(self, reader: Reader, plan_id: str, failed: set[tuple[str, str]]) -> int:
        """The last plan day the server saw the reader get (or fail) in `plan_id`; a plan
        `then:` chained them into starts past its day 0."""
        real = {
            mail.key
            for mail in self.mails
            if mail.recipient == reader.email and mail.plan == plan_id and not mail.ghost
        }
        real |= {key for plan, key in failed if plan == plan_id}
        default = -1 if plan_id in reader.joined else 0
        return max((self._day(plan_id, key) for key in real), default=default)

    def _failed(self) -> dict[str, set[tuple[str, str]]]:
        """Per address, the (plan, step) deliveries that failed for good."""
        failed: dict[str, set[tuple[str, str]]] = {}
        for email, key, status, attempts, _, plan_id in self._deliveries():
            if status == "failed":
                assert attempts == self.world.max_attempts, (email, key, attempts)
                failed.setdefault(email, set()).add((plan_id, key))
        return failed

    def _check_progress(self) -> None:
        """The database's idea of each reader's progress in each plan is what the server saw."""
        failed = self._failed()
        for (email, plan_id), (who, _, last_day, _) in self._enrollments().items():
            reader = self.readers[email]
            if reader.present and who == "active":
                reached = self._reached(reader, plan_id, failed.get(email, set()))
                assert last_day == reached, f"{email} {plan_id}: last_day {last_day}, saw {reached}"

    # -- rules ------------------------------------------------------------------------------

    @initialize(
        offset=st.integers(0, 365 * 24 * 60),
        zone=st.sampled_from(ZONES),
        send_days=st.sampled_from(SEND_DAYS),
        second_days=st.sampled_from(SEND_DAYS),
        then=st.booleans(),
        second_first=st.booleans(),
    )
    def first_signup(
        self,
        offset: int,
        zone: str,
        send_days: str | None,
        second_days: str | None,
        then: bool,
        second_first: bool,
    ) -> None:
        with self._step():
            if send_days is not None:
                self.head = self.head.replace("\nsteps:\n", f"\nsend_days: {send_days}\nsteps:\n")
                self.send_days[self.first] = days_from_names(send_days.strip("[]").split(", "))
            if then:
                self.head = self.head.replace("\nsteps:\n", f"\nthen: {SECOND}\nsteps:\n")
                self.then = SECOND
            if second_days is not None:
                self._write_second(second_days)
                self.send_days[SECOND] = days_from_names(second_days.strip("[]").split(", "))
            if send_days is not None or then or second_days is not None:
                self._reload()
            assert self.app.catalog.side_by_side
            self.clock.set(START + timedelta(minutes=offset))  # any season, any hour
            self._sync_database_clock()
            self._subscribe(zone, SECOND if second_first else self.first)

    @precondition(lambda self: len(self.readers) < MAX_READERS)
    @rule(zone=st.sampled_from(ZONES), second=st.booleans())
    def subscribe(self, zone: str, second: bool) -> None:
        with self._step():
            self._subscribe(zone, SECOND if second else self.first)

    @rule(pick=st.integers(0, 99))
    def join_the_other_plan(self, pick: int) -> None:
        """Someone still there signs up for the plan they never joined: a second enrollment,
        with its welcome at once and its lessons under the daily cap."""
        with self._step():
            present = [r for r in self._present() if len(r.joined) == 1 and not r.left]
            if present:
                reader = present[pick % len(present)]
                (mine,) = reader.joined
                self._join(reader, SECOND if mine == self.first else self.first)

    @rule(pick=st.integers(0, 99), second=st.booleans())
    def leave_one_plan(self, pick: int, second: bool) -> None:
        """The footer link of one plan the reader is in: that plan stops at once; with no
        other plan running, they have left the list."""
        with self._step():
            present = self._present()
            if not present:
                return
            reader = present[pick % len(present)]
            theirs = sorted(plan for email, plan in self._enrollments() if email == reader.email)
            wanted = SECOND if second else self.first
            plan_id = wanted if wanted in theirs else theirs[0]
            self._leave_plan(reader, plan_id)

    # Preconditions depend only on what the test did, never on what the engine did: on
    # parallel connections the engine's choices vary between runs of one example.

    @rule(pick=st.integers(0, 99), during_pass=st.none() | st.integers(1, 3), gap=GAPS)
    def unsubscribe(self, pick: int, during_pass: int | None, gap: timedelta) -> None:
        """Between passes, or right after the server accepted the k-th message of a pass."""
        with self._step():
            present = self._present()
            reader = present[pick % len(present)] if present else None
            if during_pass is None:
                if reader is not None:
                    self._leave(reader)
                return
            hook = (lambda: self._leave(reader, mid_pass=True)) if reader is not None else None
            self._pass(gap, Script(hook_at=during_pass, hook=hook))
            if reader is not None:
                self._leave(reader)  # the pass sent fewer messages: leave now

    @rule(gap=GAPS)
    def run_pass(self, gap: timedelta) -> None:
        with self._step():
            self._pass(gap)

    @rule(replies=st.lists(st.sampled_from(TEMPORARY_REPLIES), min_size=1, max_size=3), gap=GAPS)
    def temporary_replies_then_pass(self, replies: list[str], gap: timedelta) -> None:
        with self._step():
            with self.smtp.handler.lock:
                self.smtp.handler.data_replies.extend(replies)
            self._pass(gap)

    @rule(drops=st.integers(1, 2), gap=GAPS)
    def dropped_connections_then_pass(self, drops: int, gap: timedelta) -> None:
        with self._step():
            self.world.proxy.arm(drops)
            self._pass(gap)

    @rule(pick=st.integers(0, 99), gap=GAPS)
    def hard_bounce_then_pass(self, pick: int, gap: timedelta) -> None:
        """The server answers 550 5.1.1 at RCPT for one reader during the next pass."""
        with self._step():
            present = self._present()
            if present:
                self.replies[present[pick % len(present)].email] = "550 5.1.1 No such user"
            self._pass(gap)

    @rule(gap=GAPS, kill_at=st.integers(1, 4), after_acceptance=st.booleans())
    def crash_then_restart(self, gap: timedelta, kill_at: int, after_acceptance: bool) -> None:
        with self._step():
            self._pass(gap, Script(kill_at=kill_at, kill_after_acceptance=after_acceptance))

    @rule(
        at_message=st.integers(1, 3),
        paused=st.booleans(),
        slow=st.sampled_from((0, 40, 120)),
        offset=st.integers(-10, 10),
        gap=GAPS,
    )
    def another_engine_mid_pass(
        self, at_message: int, paused: bool, slow: int, offset: int, gap: timedelta
    ) -> None:
        """After this engine's k-th message, with each message taking `slow` seconds, it stops
        (past its lease, when `paused`) while another engine whose clock is `offset` minutes
        off runs a whole pass; then it goes on. Its lost claims must not go out again."""
        with self._step():
            hook = functools.partial(self._rival_pass, paused, timedelta(minutes=offset))
            script = Script(hook_at=at_message, hook=hook, slow=timedelta(seconds=slow))
            self._pass(gap, script)

    @precondition(lambda self: self.saves < MAX_SAVES)
    @rule(changes=st.lists(CHANGES, min_size=1, max_size=3))
    def edit_plan(self, changes: list[tuple[str, int, bool]]) -> None:
        """One save of the plan with up to three changes: a subject, a removed step (often one
        someone has claimed or is retrying), a new step on a free day."""
        with self._step():
            self._check_progress()
            for kind, pick, pending_first in changes:
                if kind == "subject":
                    self._edit_subject(pick)
                elif kind == "remove" and len(self.blocks) > 2:
                    self._remove_step(pick, pending_first)
                elif kind == "add" and self._free_days():
                    self._add_step(pick)
            self.saves += 1
            self._reload()

    def _edit_subject(self, pick: int) -> None:
        keys = self._ordered_keys()
        key = keys[pick % len(keys)]
        subject = f"Edited {len(self.edited) + len(self.removed)}: {key}"
        self.blocks[key] = with_field(self.blocks[key], "subject", json.dumps(subject))
        self.edited[key] = subject

    def _remove_step(self, pick: int, pending_first: bool) -> None:
        candidates = [key for key in self._ordered_keys() if key != "welcome"]
        if pending_first:
            pending = {
                key
                for _, key, status, _, _, plan_id in self._deliveries()
                if status in ("queued", "retry") and key in candidates and plan_id == self.first
            }
            candidates = sorted(pending) or candidates
        key = candidates[pick % len(candidates)]
        del self.blocks[key]
        self.edited.pop(key, None)
        self.removed[key] = len(self.passes)

    def _free_days(self) -> list[int]:
        used = {self.key_day[key] for key in self.blocks}
        return [day for day in NEW_STEP_DAYS if day not in used]

    def _add_step(self, pick: int) -> None:
        """A new key on a free day: for whoever has not passed that day yet."""
        free = self._free_days()
        day = free[pick % len(free)]
        key = f"extra{len(self.key_day)}"
        state = self._enrollments()
        for reader in self.readers.values():
            found = state.get((reader.email, self.first))
            if found is None:
                continue
            who, plan, last_day, _ = found
            if who == "active" and plan == "active" and last_day < day:
                reader.allowed.add(key)
        block = with_field(self.template_block, "key", key)
        block = with_field(block, "day", str(day))
        self.blocks[key] = with_field(block, "subject", json.dumps(f"Extra on day {day}"))
        self.key_day[key] = day

    # -- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if not self.broken:
                self._drain()
                self._check_the_end()
        finally:
            self.app.close()
            if self.rival is not None:
                self.rival[0].close()

    def _drain(self) -> None:
        """SMTP healed: passes every 12 hours until no plan is running (at most 120 days: a
        plan sending three days a week takes weeks longer)."""
        for _ in range(120 * 2):
            self._pass(timedelta(hours=12))
            running = [
                key for key, (_, plan, _, _) in self._enrollments().items() if plan == "active"
            ]
            if not running:
                break
        self._pass(timedelta(hours=12))

    def _check_the_end(self) -> None:
        """Every delivery settled, recorded sent iff delivered, and every reader still there
        got every step they were due in every plan they stayed in, none lost; a graduate of a
        plan that says `then:` is in the next plan (unless they had left it)."""
        rows = self._deliveries()
        state = self._enrollments()
        unsettled = [row for row in rows if row[2] not in FINAL]
        assert not unsettled, f"deliveries left unsettled: {unsettled}"
        sent = sorted(row[4] for row in rows if row[2] == "sent")
        delivered = sorted({mail.message_id for mail in self.mails if not mail.ghost})
        assert sent == delivered, "the sent records differ from what the server received"
        failed = self._failed()
        for reader in self.readers.values():
            theirs = {
                plan: found for (email, plan), found in state.items() if email == reader.email
            }
            who = next(iter(theirs.values()))[0]
            if reader.unsubscribed:
                assert who == "unsubscribed", (reader, who)
                continue
            if reader.refused:
                assert who == "bounced", (reader, who)
                continue
            mine = failed.get(reader.email, set())
            if who == "bounced":  # suppressed after SOFT_BOUNCE_LIMIT failed steps in a row
                assert len(mine) >= self.world.soft_bounce_limit, (reader, mine)
                continue
            assert who == "active", (reader, who)
            for plan_id, (_, status, _, _) in theirs.items():
                if plan_id in reader.left:
                    continue
                assert status == "completed", (reader, plan_id, status)
                got = {
                    m.key
                    for m in self.mails
                    if m.recipient == reader.email and m.plan == plan_id and not m.ghost
                }
                if plan_id == self.first:
                    due = reader.allowed & set(self.blocks)
                else:  # chained past day 0, or joined with its welcome
                    due = {k for k in SECOND_DAYS if SECOND in reader.joined or SECOND_DAYS[k]}
                lost = due - got - {key for plan, key in mine if plan == plan_id}
                assert not lost, f"{reader.email} never got {plan_id} {sorted(lost)}"
            if self.then and theirs.get(self.first, ("", ""))[1] == "completed":
                assert self.then in theirs, f"{reader.email} graduated and was not chained"


@pytest.mark.parametrize("connections", [1, 3])
def test_random_histories_never_repeat_reorder_leak_or_lose_a_step(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path, connections: int
) -> None:
    """Random subscribes, unsubscribes, plan edits, passes, crashes and SMTP faults keep each
    step once (bar one per crashed connection), in order, never after leaving, none lost."""
    overrides: dict[str, str] = {}
    if connections != 1:
        if "smtp_connections" not in Settings.model_fields:
            pytest.skip("this engine has no SMTP_CONNECTIONS setting")
        overrides["SMTP_CONNECTIONS"] = str(connections)
    defaults = Settings()
    proxy = DroppingProxy(smtp_server.port)
    try:
        world = World(
            engine,
            smtp_server,
            proxy,
            tmp_path,
            overrides,
            connections,
            defaults.max_attempts,
            defaults.soft_bounce_limit,
            timedelta(seconds=defaults.lease_seconds),
        )

        class Bound(History):
            pass

        Bound.world = world
        run_state_machine_as_test(
            Bound,
            settings=settings(
                max_examples=EXAMPLES if connections == 1 else max(EXAMPLES // 2, 1),
                stateful_step_count=30,
                deadline=None,
                print_blob=True,
                # every example is a real engine, database and SMTP server: slow by design.
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        proxy.close()


# -- the smallest histories that once broke the guarantee -----------------------------------


def _plan_copy(tmp_path: Path) -> Path:
    (tmp_path / "plans").mkdir()
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    plan_file = tmp_path / "plans" / "thirty_day.yaml"
    plan_file.write_text((ROOT / "plans" / "thirty_day.yaml").read_text())
    return plan_file


def _without_step(plan_file: Path, key: str) -> None:
    head, blocks = split_plan(plan_file.read_text())
    del blocks[key]
    plan_file.write_text(head + "".join(blocks.values()))
    stamp = plan_file.stat().st_mtime_ns + 1_000_000_000
    os.utime(plan_file, ns=(stamp, stamp))


def _welcomed_on_a_plan_copy(
    engine: EngineFactory, tmp_path: Path
) -> tuple[Path, App, FixedClock, Service]:
    """An engine on an editable copy of the plan, and Ann, welcomed on 1 Jan 2026 00:00 UTC."""
    plan_file = _plan_copy(tmp_path)
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    app, clock = engine(start, PLAN_PATH=str(plan_file))
    service = make_service(app)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name=None, timezone="UTC", now=start
    )
    service.run_pass(start)
    return plan_file, app, clock, service


def _unsettled(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(key, status) for key, status in rows if status not in FINAL]


def test_removing_the_step_that_is_due_next_does_not_send_the_following_one_early(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """Day 2 stays on local day 2 when day 1 is removed while it is the next step due."""
    plan_file, _, clock, service = _welcomed_on_a_plan_copy(engine, tmp_path)
    start = clock.now()  # day 1 is now due on Jan 2 at 07:00
    _without_step(plan_file, "day01")
    at = start + timedelta(days=1, hours=7)  # Jan 2, 07:00: day 1's slot, not day 2's
    clock.set(at)
    service.run_pass(at)
    steps = [str(r.message["X-Campaign-Step"]).split("/")[1] for r in smtp_server.received]
    assert steps == ["welcome"], f"{steps[1:]} went out on local day 1"


def test_a_step_removed_while_awaiting_its_retry_leaves_no_delivery_pending(
    engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path
) -> None:
    """A step deferred by a 451 and then removed from the plan is settled, not left 'retry'."""
    plan_file, app, clock, service = _welcomed_on_a_plan_copy(engine, tmp_path)
    start = clock.now()
    smtp_server.handler.data_replies.append("451 4.3.0 Try again later")
    at = start + timedelta(days=1, hours=7)
    clock.set(at)
    service.run_pass(at)  # day 1 deferred
    _without_step(plan_file, "day01")
    for hour in range(1, 4 * 24):
        clock.set(at + timedelta(hours=hour))
        service.run_pass(clock.now())
    with app.db.transaction() as session:
        rows = [(k, s) for k, s in session.execute(select(Delivery.step_key, Delivery.status))]
    assert _unsettled(rows) == []


def test_unsubscribing_while_a_retry_is_pending_settles_it(
    engine: EngineFactory, smtp_server: SMTPServer
) -> None:
    """A delivery deferred by a 451 is settled (skipped) when its subscriber leaves."""
    start = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    app, clock = engine(start)
    service = make_service(app)
    subscriptions.subscribe(
        app.db, app.plan, email="ann@example.org", first_name=None, timezone="UTC", now=start
    )
    smtp_server.handler.data_replies.append("451 4.3.0 Try again later")
    service.run_pass(start)  # the welcome deferred
    subscriptions.unsubscribe(app.db, email="ann@example.org", now=start)
    for hour in range(1, 3 * 24):
        clock.set(start + timedelta(hours=hour))
        service.run_pass(clock.now())
    assert smtp_server.received == []
    with app.db.transaction() as session:
        rows = [(k, s) for k, s in session.execute(select(Delivery.step_key, Delivery.status))]
    assert _unsettled(rows) == []
