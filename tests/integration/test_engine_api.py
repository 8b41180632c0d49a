"""The public API, `from campaign import Engine`: subscribe, one pass to a real SMTP server,
stats, unsubscribe, and the plan and its composer swapped as one value on a reload."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaign import Engine
from campaign.clock import FixedClock
from campaign.delivery.passes import PassResult
from campaign.delivery.smtp import SMTPTransport
from campaign.domain.transport import Connection, Envelope
from campaign.settings import Settings
from tests.conftest import ROOT
from tests.smtp_server import SMTPServer

START = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
WELCOME = "Your free ebook is here: Concepts of Self Healing"


@pytest.fixture
def make_engine(env: dict[str, str]) -> Iterator[Callable[..., tuple[Engine, FixedClock]]]:
    """Engines built the public way, on a fixed clock, from `env` and overrides."""
    built: list[Engine] = []

    def make(**overrides: str) -> tuple[Engine, FixedClock]:
        clock = FixedClock(START)
        engine = Engine.from_settings(Settings.from_env({**env, **overrides}), clock=clock)
        built.append(engine)
        return engine, clock

    yield make
    for engine in built:
        engine.close()


def _subjects(smtp: SMTPServer, email: str) -> list[str]:
    return [str(received.message["Subject"]) for received in smtp.to(email)]


def test_a_subscriber_gets_the_welcome_from_one_pass_and_stats_count_it(
    make_engine: Callable[..., tuple[Engine, FixedClock]], smtp_server: SMTPServer
) -> None:
    """subscribe, then run_pass sends the welcome over SMTP and stats show it sent."""
    engine, _ = make_engine()
    subscribed = engine.subscribe("Ann@Example.org", name="Ann", timezone="Europe/Berlin")
    assert (subscribed.email, subscribed.created, subscribed.status) == (
        "Ann@example.org",
        True,
        "active",
    )
    result = engine.run_pass()
    assert isinstance(result, PassResult)
    assert (result.claimed, result.sent, result.failed, result.error) == (1, 1, 0, None)
    assert _subjects(smtp_server, "Ann@example.org") == [WELCOME]
    numbers = engine.stats()
    assert numbers["subscribers"]["active"] == 1
    welcome = next(row for row in numbers["steps"] if row["key"] == "welcome")
    assert welcome["sent"] == 1
    assert engine.health().status == "ok"


def test_unsubscribe_stops_the_next_email(
    make_engine: Callable[..., tuple[Engine, FixedClock]], smtp_server: SMTPServer
) -> None:
    """After unsubscribe, the next day's pass sends nothing to that address."""
    engine, clock = make_engine()
    engine.subscribe("bob@example.org", timezone="UTC")
    assert engine.run_pass().sent == 1
    assert engine.unsubscribe("bob@example.org") is True
    assert engine.unsubscribe("bob@example.org") is False  # already gone
    clock.set(START + timedelta(days=1, hours=1))
    assert engine.run_pass().sent == 0
    assert _subjects(smtp_server, "bob@example.org") == [WELCOME]
    assert engine.stats()["subscribers"]["unsubscribed"] == 1


def test_from_env_builds_the_engine_the_environment_describes(env: dict[str, str]) -> None:
    """Engine.from_env takes a mapping of variables, and works as a context manager."""
    with Engine.from_env(env) as engine:
        assert engine.settings.database_url == env["DATABASE_URL"]
        assert engine.plan.id == "thirty-day-self-healing"
        engine.require_schema()


def test_the_collaborators_and_the_plan_cannot_be_reassigned(
    make_engine: Callable[..., tuple[Engine, FixedClock]],
) -> None:
    """An engine is wired once: only a reload changes its content, as one value."""
    engine, _ = make_engine()
    with pytest.raises(AttributeError):
        engine.db = engine.db  # type: ignore[misc]  # the point: a frozen field
    with pytest.raises(AttributeError):
        engine.plan = engine.plan  # type: ignore[misc]  # the point: a read-only property


def _edit_welcome_subject(plan_file: Path, subject: str, stamp: int) -> None:
    """Save the plan with a new welcome subject and a modification time of its own."""
    text = (ROOT / "plans" / "thirty_day.yaml").read_text()
    plan_file.write_text(text.replace(f'subject: "{WELCOME}"', f'subject: "{subject}"'))
    os.utime(plan_file, ns=(stamp, stamp))


def test_a_reload_swaps_the_plan_and_its_composer_as_one_value(
    make_engine: Callable[..., tuple[Engine, FixedClock]], plan_file: Path
) -> None:
    """A reader running beside reloads never sees one plan with another plan's composer."""
    engine, _ = make_engine(PLAN_PATH=str(plan_file))
    mismatched: list[str] = []
    subjects: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            content = engine.content
            subject = content.plan.steps[0].subject
            if content.composer.plan is not content.plan:
                mismatched.append(subject)
            if content.renderer.plan is not content.plan:
                mismatched.append(subject)
            subjects.add(subject)
            # Give the GIL back each round: a reader that only spins holds it in 5 ms turns,
            # and the reloads (file reads, each a GIL release) took minutes on a slow machine.
            time.sleep(0)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for edition in range(8):
            _edit_welcome_subject(plan_file, f"Edition {edition}", 10**18 + edition)
            assert engine.reload_plan_if_changed()
    finally:
        stop.set()
        reader.join()
    assert mismatched == []
    assert engine.plan.steps[0].subject == "Edition 7"
    assert engine.composer.plan is engine.plan
    assert len(subjects) > 1  # the reader did run across reloads


@dataclass
class _ReloadsAfterTheFirstMessage:
    """Sends through `real`; once the first message is accepted, `edit` runs (the marketer
    saves the plan and the engine reloads it) while the pass is still going."""

    real: SMTPTransport
    edit: Callable[[], None]
    description: str = "smtp, with a plan edit mid-pass"
    _connection: list[Connection] = field(default_factory=list)

    @contextmanager
    def open(self) -> Iterator[_ReloadsAfterTheFirstMessage]:
        with self.real.open() as connection:
            self._connection.append(connection)
            yield self

    def send(self, envelope: Envelope, data: bytes) -> None:
        self._connection[-1].send(envelope, data)
        edit, self.edit = self.edit, lambda: None
        edit()


def test_a_pass_keeps_the_plan_it_started_with_through_a_reload(
    env: dict[str, str], smtp_server: SMTPServer, plan_file: Path
) -> None:
    """A plan saved mid-pass changes the next pass's emails, not the rest of this one's."""
    holder: list[Engine] = []

    def save_and_reload() -> None:
        _edit_welcome_subject(plan_file, "Edited welcome", 10**18)
        assert holder[0].reload_plan_if_changed()

    transport = _ReloadsAfterTheFirstMessage(
        SMTPTransport("127.0.0.1", smtp_server.port, security="none", timeout=10), save_and_reload
    )
    settings = Settings.from_env({**env, "PLAN_PATH": str(plan_file)})
    with Engine.from_settings(settings, clock=FixedClock(START), transport=transport) as engine:
        holder.append(engine)
        for name in ("one", "two"):
            engine.subscribe(f"{name}@example.org", timezone="UTC")
        assert engine.run_pass().sent == 2
        engine.subscribe("three@example.org", timezone="UTC")
        assert engine.run_pass().sent == 1
    assert _subjects(smtp_server, "one@example.org") == [WELCOME]
    assert _subjects(smtp_server, "two@example.org") == [WELCOME]
    assert _subjects(smtp_server, "three@example.org") == ["Edited welcome"]


def _readme_example() -> str:
    """The Python block of the README's "Embedding the engine" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Embedding the engine", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "README.md: no python block under 'Embedding the engine'"
    return found.group(1)


def test_the_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's embedding example runs in a fresh folder (SQLite, the outbox) and prints
    what its comments say."""
    for name in ("plans", "templates", "assets"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - our own README
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("claimed=1 sent=1 ")
    assert printed[1].startswith("claimed=1 sent=1 ")
    assert "'unsubscribed': 1" in printed[2]
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def test_importing_campaign_does_not_load_the_engine() -> None:
    """`import campaign` stays light (the CLI starts on it); `campaign.Engine` loads on use."""
    code = (
        "import sys, campaign\n"
        "assert 'sqlalchemy' not in sys.modules and 'campaign.engine' not in sys.modules\n"
        "from campaign import Engine\n"
        "assert Engine.__module__ == 'campaign.engine'\n"
        "assert campaign.__all__ == ['Engine', '__version__']\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
