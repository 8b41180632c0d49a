"""LOG_FORMAT: today's text lines by default, or one JSON object a line."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from campaign.errors import ConfigError
from campaign.logs import TEXT_FORMAT, JSONFormatter
from campaign.settings import Settings


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(
        "campaign.scheduler", logging.WARNING, __file__, 1, message, args, exc_info
    )
    record.created = 1_796_112_000.25  # 2026-12-01T08:00:00.250Z
    return record


def test_a_json_line_holds_time_level_logger_and_the_formatted_message() -> None:
    """One object on one line: ISO time in UTC, level, logger name, the %-formatted message."""
    line = JSONFormatter().format(_record("pass done: sent=%d to %s", 3, 'ann "x"\nb'))

    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-12-01T08:00:00.250+00:00",
        "level": "WARNING",
        "logger": "campaign.scheduler",
        "message": 'pass done: sent=3 to ann "x"\nb',
    }


def test_a_json_line_carries_the_traceback_as_text() -> None:
    """An exception's traceback travels in the same object, under `exception`."""
    entry = json.loads(JSONFormatter().format(_record("pass failed", exc=True)))

    assert entry["message"] == "pass failed"
    assert "RuntimeError: boom" in entry["exception"]
    assert "Traceback" in entry["exception"]


def test_text_stays_the_default_format() -> None:
    """Without LOG_FORMAT the lines keep today's shape."""
    assert Settings.from_env({}).log_format == "text"
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s: %(message)s"
    assert Settings.from_env({"LOG_FORMAT": "json"}).log_format == "json"


def test_an_unknown_log_format_is_a_config_error_naming_the_variable() -> None:
    """LOG_FORMAT=xml stops the start with the variable and its bad value."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"LOG_FORMAT": "xml"})
    assert "LOG_FORMAT" in str(caught.value)
    assert "'xml'" in str(caught.value)
