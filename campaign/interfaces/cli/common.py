"""What every command shares: settings, the app, --now, and the group that maps errors to exit
codes. Light on purpose: heavy modules (the engine, SQLAlchemy, pydantic, Jinja, starlette,
Rich) are imported inside the commands that need them, so `campaign --help` starts at once."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from campaign.clock import parse_instant
from campaign.errors import CampaignError, PlanError, UnknownStep

if TYPE_CHECKING:
    from campaign.engine import App
    from campaign.interfaces.cli.console import PlainConsole
    from campaign.settings import Settings


class LazyConsole:
    """A PlainConsole made on first use: Rich loads when a command prints, not for --help."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr

    @functools.cached_property
    def console(self) -> PlainConsole:
        from campaign.interfaces.cli.console import PlainConsole

        return PlainConsole(stderr=self._stderr)

    def print(self, *objects: Any, **options: Any) -> None:
        self.console.print(*objects, **options)


err = LazyConsole(stderr=True)


out = LazyConsole()


class InstantType(click.ParamType):  # type: ignore[type-arg]  # click 8.2+ is generic
    name = "ISO8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return parse_instant(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class TextType(click.ParamType):  # type: ignore[type-arg]  # click 8.2+ is generic
    """Text from the command line that can be stored and printed: no control characters, and no
    bytes that were not valid in the terminal's encoding (Python keeps them as surrogates,
    which neither the database nor the email can hold)."""

    name = "TEXT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) < 0xE000 for c in text):
            shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            self.fail(f"{shown!r} has control characters or bytes that are not UTF-8", param, ctx)
        return text


TEXT = TextType()


def parse_host_port(text: str) -> tuple[str, int]:
    """`127.0.0.1:8000` -> ("127.0.0.1", 8000); ValueError naming the expected shape."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT with a port 1-65535 (e.g. 127.0.0.1:8000)")
    return host, int(port)


class HostPortType(click.ParamType):  # type: ignore[type-arg]  # click 8.2+ is generic
    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_host_port(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


NOW = click.option(
    "--now",
    type=InstantType(),
    default=None,
    help="Act as if it were this instant (ISO-8601 with offset, e.g. 2026-12-01T07:00:00+00:00).",
)


def load_settings() -> Settings:
    from campaign.settings import Settings, load_environment

    return Settings.from_env(load_environment())


def make_app(now: datetime | None = None, *, migrated: bool = True) -> App:
    from campaign.clock import Clock, FixedClock, SystemClock
    from campaign.engine import Engine
    from campaign.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    clock: Clock = FixedClock(now) if now else SystemClock()
    app = Engine.from_settings(settings, clock=clock)
    if migrated:
        app.require_schema()
    return app


def _plan_problems(exc: PlanError) -> int:
    # One problem per line, compiler style, so editors can jump to file:line.
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    click.echo(f"error: the plan has {len(exc.problems)} problem(s)", err=True)
    return exc.exit_code


def _campaign_error(exc: CampaignError) -> int:
    click.echo(f"error: {exc.message}", err=True)
    return exc.exit_code  # 2 bad input or config, 1 a runtime failure


def _os_error(exc: OSError) -> int:
    # A file or folder the command needs: missing, unwritable.
    where = f"{exc.filename}: " if exc.filename else ""
    click.echo(f"error: {where}{exc.strerror or exc}", err=True)
    return 1


#: Errors to exit codes, in one table, most specific first: each is one line on stderr (a
#: plan's problems one a line) and its code; anything else is a bug and keeps its traceback.
ERROR_EXITS: tuple[tuple[type[Exception], Callable[[Any], int]], ...] = (
    (PlanError, _plan_problems),
    (CampaignError, _campaign_error),
    (OSError, _os_error),
)


class CampaignGroup(click.Group):
    """The `campaign` group: every command below it runs inside `invoke`, so its errors are
    turned into messages and exit codes here, in one place (ERROR_EXITS)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            for kind, report in ERROR_EXITS:
                if isinstance(exc, kind):
                    sys.exit(report(exc))
            raise


@click.group(cls=CampaignGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="campaign-engine")
def main() -> None:
    """The campaign engine: a 30-day email plan sent at each subscriber's local morning."""


def _step(app: App, key_or_day: str) -> Any:
    step = app.plan.step(key_or_day)
    if step is None:
        raise UnknownStep(key_or_day)
    return step


@main.group()
def plan() -> None:
    """The plan file."""
