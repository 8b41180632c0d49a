"""What every command shares: settings, the app, --now, errors to exit codes."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console

from campaign.clock import Clock, FixedClock, SystemClock, parse_instant
from campaign.engine import App, Engine
from campaign.errors import CampaignError, PlanError, UnknownStep
from campaign.logs import configure_logging
from campaign.settings import Settings, load_environment

F = TypeVar("F", bound=Callable[..., Any])


#: Control characters but tab and newline: an escape sequence in a bounce report's text
#: must not retitle or repaint the operator's terminal (Rich strips only some of them).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class PlainConsole(Console):
    """A console that prints untrusted text as it is: markup and emoji codes off (a stray
    "[/x]" in a name or a report is text, not a Rich tag that crashes the command), and
    control characters shown as \\xNN."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, **options)

    def print(self, *objects: Any, **options: Any) -> None:
        shown = [_CONTROL.sub(_escaped, o) if isinstance(o, str) else o for o in objects]
        super().print(*shown, **options)


def _escaped(found: re.Match[str]) -> str:
    return f"\\x{ord(found.group(0)):02x}"


err = PlainConsole(stderr=True)


out = PlainConsole()


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


NOW = click.option(
    "--now",
    type=InstantType(),
    default=None,
    help="Act as if it were this instant (ISO-8601 with offset, e.g. 2026-12-01T07:00:00+00:00).",
)


def load_settings() -> Settings:
    return Settings.from_env(load_environment())


def make_app(now: datetime | None = None, *, migrated: bool = True) -> App:
    settings = load_settings()
    configure_logging(settings.log_level)
    clock: Clock = FixedClock(now) if now else SystemClock()
    app = Engine.from_settings(settings, clock=clock)
    if migrated:
        app.require_schema()
    return app


def reports_errors(command: F) -> F:
    """Errors to exit codes, in one table: a CampaignError is one line on stderr and its
    exit code (2 bad input, 1 runtime); an OSError (a file) is one line and 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PlanError as exc:
            # One problem per line, compiler style, so editors can jump to file:line.
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            click.echo(f"error: the plan has {len(exc.problems)} problem(s)", err=True)
            sys.exit(exc.exit_code)
        except CampaignError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:  # a file or folder the command needs: missing, unwritable
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
