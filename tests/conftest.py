"""Shared fixtures: a real database per test (SQLite file and PostgreSQL schema), a real SMTP
server on loopback, and settings pointing at the project's own plan and templates."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import hypothesis
import psycopg
import pytest

from campaign.clock import Clock, FixedClock
from campaign.domain.transport import Transport
from campaign.engine import App, build
from campaign.settings import Settings
from campaign.storage.db import Database
from tests.dovecot_server import Dovecot, dovecot_binary
from tests.smtp_server import SMTPServer

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Property tests that do not pin their own count (the MIME round trips among them) run as many
# examples as the profile says: a quick search for `make test`, a long one on demand.
hypothesis.settings.register_profile("default", max_examples=100)
hypothesis.settings.register_profile("long", max_examples=1000)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


#: Held shared by every test, and exclusively by one marked `restarts_postgresql`: a test on
#: another pytest-xdist worker (or in another run on this machine, which shares the server)
#: never meets the restart, and the restart never cuts a test in the middle.
SERVER_LOCK = Path(tempfile.gettempdir()) / "campaign-tests-postgresql.lock"


@pytest.fixture(autouse=True)
def _postgresql_server_in_use(request: pytest.FixtureRequest) -> Iterator[None]:
    restarts = request.node.get_closest_marker("restarts_postgresql") is not None
    with SERVER_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if restarts else fcntl.LOCK_SH)
        yield


def _postgres_available() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The PostgreSQL server; under CI=true its absence fails the run instead of skipping."""
    problem = _postgres_available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield sqlite_database(tmp_path)
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{base}?options=-csearch_path%3D{schema}"
    _migrate(url)
    yield url
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def sqlite_database(folder: Path) -> str:
    """The URL of a fresh, migrated SQLite file in `folder`."""
    url = f"sqlite:///{folder / 'campaign.db'}"
    _migrate(url)
    return url


def _migrate(url: str) -> None:
    database = Database(url)
    database.upgrade()
    database.dispose()


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    """A real aiosmtpd server on 127.0.0.1 that keeps what it receives."""
    server = SMTPServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A real Dovecot (IMAP, POP3) on loopback; under CI=true its absence fails the run."""
    binary = dovecot_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Dovecot is required under CI=true (apt-get install dovecot-imapd ...)")
        pytest.skip("Dovecot not installed (Debian: dovecot-imapd dovecot-pop3d)")
    server = Dovecot(binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(database_url: str, smtp_server: SMTPServer, tmp_path: Path) -> dict[str, str]:
    """Environment variables for an engine that sends to the test SMTP server."""
    return {
        "DATABASE_URL": database_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "SMTP_TIMEOUT": "10",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "PUBLIC_BASE_URL": "https://news.example.org",
        "MAIL_FROM": "Pain & Injury Doctor <newsletter@example.org>",
        "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
        "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        "PAGES_DIR": str(ROOT / "templates" / "web"),
        "OUTBOX_DIR": str(tmp_path / "outbox"),
        "POSTAL_ADDRESS": "Pain & Injury Doctor, 1 Test Street, Testville",
    }


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    """A copy of the shipped plan (and its ebook) that the test edits."""
    (tmp_path / "plans").mkdir()
    shutil.copy(ROOT / "plans" / "thirty_day.yaml", tmp_path / "plans" / "thirty_day.yaml")
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    return tmp_path / "plans" / "thirty_day.yaml"


EngineFactory = Callable[..., tuple[App, FixedClock]]


@pytest.fixture
def engine(env: dict[str, str]) -> Iterator[EngineFactory]:
    """Build engines on a fixed clock from `env`; their connections close after the test."""
    built: list[App] = []

    def make(
        now: datetime,
        transport: Transport | None = None,
        *,
        lease_clock: Clock | None = None,
        database_leases: bool = False,
        **overrides: str,
    ) -> tuple[App, FixedClock]:
        """An engine at `now`. Its leases run by its own fixed clock (so a test can walk past
        them), by `lease_clock` (engines sharing a database's clock), or by the database's
        real clock when `database_leases` is set, as in production."""
        clock = FixedClock(now)
        leases = None if database_leases else (lease_clock or clock)
        settings = Settings.from_env({**env, **overrides})
        app = build(settings, clock=clock, transport=transport, lease_clock=leases)
        built.append(app)
        return app, clock

    yield make
    for app in built:
        app.close()
