"""Reading a subscriber CSV as people save it (Excel, Numbers, Sheets): its encoding, delimiter
and header, each problem named as FILE or FILE:LINE, never a traceback or unbounded memory."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from campaign.errors import BadInput

COLUMNS = ("email", "first_name", "timezone", "plan")
#: Header spellings people use for our columns, after lowercasing and `_` for spaces.
ALIASES = {
    "e_mail": "email",
    "email_address": "email",
    "firstname": "first_name",
    "time_zone": "timezone",
}
#: No real row is longer; a longer line is reported and skipped, never held in memory.
MAX_LINE_CHARS = 64 * 1024
#: Tried in this order: the first that makes the header name an `email` column wins.
DELIMITERS = (",", "\t", ";")
_CHUNK = 1 << 16
_NAMES = {",": "commas", "\t": "tabs", ";": "semicolons"}


@dataclass
class CsvFile:
    """A CSV whose whole text decodes and whose header names an email column."""

    path: Path
    encoding: str
    delimiter: str
    #: our column name (or None: ignored) for each field of the header, in order
    columns: list[str | None]
    #: physical lines, for a progress bar
    lines: int
    #: what the reader noticed and the person should know (a delimiter, unknown columns)
    notes: list[str] = field(default_factory=list)
    #: the header's names as written
    header: list[str] = field(default_factory=list)


def open_csv(
    path: Path, encoding: str | None = None, custom_fields: Collection[str] = ()
) -> CsvFile:
    """Check `path` before anything is imported: BadInput (nothing imported) if its text does
    not decode or its header has no email column. UTF-8 (with or without BOM) and UTF-16 with a
    BOM (Excel's "Unicode text") are recognised; anything else needs an explicit `encoding`.
    Columns named after `custom_fields` (the plan's `fields:`) are read too."""
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise BadInput(f"{path}: unknown encoding {encoding!r}") from exc
    with path.open("rb") as raw:
        head = raw.read(4)
    chosen = encoding or _encoding_by_bom(head)
    lines = _count_lines(path, chosen, explicit=encoding is not None)
    with path.open(encoding=chosen, newline="") as handle:
        header = handle.readline(MAX_LINE_CHARS + 1)
    if len(header) > MAX_LINE_CHARS:
        raise BadInput(f"{path}:1: the header line is longer than {MAX_LINE_CHARS} characters")
    delimiter, names = _header(path, header)
    source = CsvFile(path, chosen, delimiter, [], lines, header=names)
    return with_custom_fields(source, custom_fields)


def with_custom_fields(source: CsvFile, custom_fields: Collection[str]) -> CsvFile:
    """`source` with its header read again, columns named after `custom_fields` now known
    (`campaign import` checks the file before it loads the plan that declares them)."""
    path, names, known = source.path, source.header, (*COLUMNS, *custom_fields)
    columns = [_column(name, custom_fields) for name in names]
    notes = []
    if source.delimiter != ",":
        notes.append(
            f"{path}: columns are separated by {_NAMES[source.delimiter]}; reading them so"
        )
    unknown = [name.strip() for name, column in zip(names, columns, strict=True) if not column]
    if any(unknown):
        listed = ", ".join(repr(name) for name in unknown if name)
        notes.append(f"{path}:1: ignored column(s) {listed} (known: {', '.join(known)})")
    for column in known:
        if columns.count(column) > 1:
            raise BadInput(f"{path}:1: two columns are named {column!r}")
    return replace(source, columns=columns, notes=notes)


def rows(source: CsvFile) -> Iterator[tuple[int, dict[str, str] | BadInput]]:
    """Each data row as (line number, our columns), or (line number, the problem with it)."""
    csv.field_size_limit(MAX_LINE_CHARS)
    width = len(source.columns)
    with source.path.open(encoding=source.encoding, newline="") as handle:
        too_long: list[int] = []
        reader = csv.reader(_bounded_lines(handle, too_long), delimiter=source.delimiter)
        next(reader, None)  # the header, read by open_csv
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # an unclosed quote running past the limit, ...
                yield reader.line_num, BadInput(f"unreadable row: {exc}")
                continue
            for line in too_long:
                yield line, BadInput(f"the line is longer than {MAX_LINE_CHARS} characters")
            too_long.clear()
            if not any(value.strip() for value in fields):
                continue  # a blank line
            if any(value.strip() for value in fields[width:]):
                yield (
                    reader.line_num,
                    BadInput(
                        f"{len(fields)} fields, but the header names {width} (a stray delimiter?)"
                    ),
                )
                continue
            row = {
                column: value
                for column, value in zip(source.columns, fields, strict=False)
                if column is not None
            }
            yield reader.line_num, row
        for line in too_long:
            yield line, BadInput(f"the line is longer than {MAX_LINE_CHARS} characters")


def _encoding_by_bom(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # the BOM says which byte order, and is dropped
    return "utf-8"


def _count_lines(path: Path, encoding: str, *, explicit: bool) -> int:
    """The number of lines, decoding the whole file once in chunks: a file that does not
    decode is refused before its first row is imported."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines, start = 0, True
    with path.open("rb") as raw:
        while True:
            chunk = raw.read(_CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                if explicit:
                    raise BadInput(f"{path}: not {encoding}: {exc.reason}") from exc
                raise BadInput(f"{path}: not UTF-8, save as CSV UTF-8") from exc
            if start and not explicit and text[:200].count("\x00") * 4 > len(text[:200]):
                raise BadInput(f"{path}: not UTF-8, save as CSV UTF-8")  # UTF-16, no BOM
            start = False
            lines += text.count("\n")
            if not chunk:
                return lines


def _bounded_lines(handle: TextIO, too_long: list[int]) -> Iterator[str]:
    """The file's lines; one longer than MAX_LINE_CHARS is read past in chunks, noted in
    `too_long`, and given to the csv reader as a blank line (so line numbers still agree)."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            while line and not line.endswith(("\n", "\r")):
                line = handle.readline(MAX_LINE_CHARS)
            too_long.append(number)
            yield "\n"
            continue
        yield line


def _header(path: Path, line: str) -> tuple[str, list[str]]:
    found: list[str] = []
    for delimiter in DELIMITERS:
        try:
            names = next(csv.reader([line], delimiter=delimiter), [])
        except csv.Error:
            continue
        if "email" in (_column(name) for name in names):
            return delimiter, names
        found = found or names
    shown = ", ".join(repr(name.strip()) for name in found[:8]) or "nothing"
    raise BadInput(f"{path}:1: the header must name an 'email' column (found {shown})")


def _column(name: str, custom_fields: Collection[str] = ()) -> str | None:
    key = name.strip().strip("\ufeff").strip().lower().replace(" ", "_").replace("-", "_")
    key = ALIASES.get(key, key)
    return key if key in COLUMNS or key in custom_fields else None
