"""Importing subscribers from CSV on both databases: one bad row never costs its neighbours,
and the reader takes files as people save them (encodings, delimiters, header spellings)."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from sqlalchemy import text

from campaign.errors import BadInput
from campaign.people import csv_import, subscriptions
from campaign.storage.db import Database
from tests.acceptance.conftest import NOW
from tests.conftest import EngineFactory


def _refuse_one_address(db: Database, address: str) -> None:
    """Make the database itself refuse one row, as a constraint or a racing insert would."""
    with db.transaction() as session:
        if db.is_sqlite:
            session.execute(
                text(
                    "CREATE TRIGGER refuse_one BEFORE INSERT ON subscribers "
                    f"WHEN NEW.email = '{address}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            )
        else:
            session.execute(
                text(
                    "ALTER TABLE subscribers ADD CONSTRAINT refuse_one "
                    f"CHECK (email <> '{address}')"
                )
            )


def test_a_row_the_database_refuses_never_rolls_back_its_neighbours(
    engine: EngineFactory,
) -> None:
    """In one batch of 1,200 rows, the one the database refuses is reported by its line and
    the other 1,199 are stored, once each, however the batches fall."""
    app, _ = engine(NOW)
    _refuse_one_address(app.db, "p600@example.org")
    rows = [(n + 2, {"email": f"p{n}@example.org", "first_name": f"P{n}"}) for n in range(1200)]
    report = subscriptions.import_rows(app.db, app.plan, rows, now=NOW)
    assert report.added == 1199
    [(line, problem)] = report.problems
    assert line == 602
    assert problem.startswith("not stored: ")
    again = subscriptions.import_rows(app.db, app.plan, rows, now=NOW)
    assert (again.added, again.already_known) == (0, 1199)


def test_rows_given_as_problems_are_reported_in_line_order(engine: EngineFactory) -> None:
    """A row the reader could not read arrives as its BadInput: reported at its line, in
    order with the rows whose values are bad."""
    app, _ = engine(NOW)
    rows: list[tuple[int, dict[str, str | None] | BadInput]] = [
        (2, {"email": "a@example.org"}),
        (3, BadInput("the line is longer than 65536 characters")),
        (4, {"email": "nope"}),
        (5, {"email": "b@example.org", "first_name": "x" * 101}),
    ]
    report = subscriptions.import_rows(app.db, app.plan, rows, now=NOW)
    assert report.added == 1
    assert [line for line, _ in report.problems] == [3, 4, 5]


@pytest.mark.parametrize(
    ("raw", "delimiter"),
    [
        (codecs.BOM_UTF8 + b"Email,First Name,Time Zone\na@x.org,A,UTC\n", ","),
        ("EMAIL\tfirstname\na@x.org\tA\n".encode("utf-16"), "\t"),
        (b" email ;FIRST-NAME;TIMEZONE\r\na@x.org;A;UTC\r\n", ";"),
        (b"e-mail,first_name\r\na@x.org,A\r\n", ","),
    ],
)
def test_header_names_are_matched_in_any_case_spacing_and_delimiter(
    tmp_path: Path, raw: bytes, delimiter: str
) -> None:
    """`Email`, `EMAIL`, ` email `, `E-Mail`, `First Name`, `firstname`: one column each."""
    file = tmp_path / "people.csv"
    file.write_bytes(raw)
    source = csv_import.open_csv(file)
    assert source.delimiter == delimiter
    [(line, row)] = list(csv_import.rows(source))
    assert line == 2
    assert isinstance(row, dict)
    assert row["email"] == "a@x.org"


def test_line_numbers_stay_true_after_quoted_newlines_and_overlong_lines(tmp_path: Path) -> None:
    """A quoted name over two lines and a 1 MiB line do not shift the numbers of later rows."""
    file = tmp_path / "people.csv"
    file.write_text(
        'email,first_name\na@x.org,"Two\nlines"\n'
        + "b@x.org,"
        + "y" * (1 << 20)
        + "\n"
        + "\n"
        + "c@x.org,C\n"
    )
    read = list(csv_import.rows(csv_import.open_csv(file)))
    assert [line for line, _ in read] == [3, 4, 6]
    assert isinstance(read[1][1], BadInput)
    assert read[2][1] == {"email": "c@x.org", "first_name": "C"}


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    """`Email` and `email` in one header: which one is meant is not guessed."""
    file = tmp_path / "twice.csv"
    file.write_text("Email,email\na@x.org,b@x.org\n")
    with pytest.raises(BadInput, match="two columns are named 'email'"):
        csv_import.open_csv(file)
