"""How long `campaign import` spends reading a CSV before any database work: the encoding
check (a full decode), then the bounded line reader, against a plain csv.DictReader.

    .venv/bin/python bench/csv_read.py [ROWS]
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

from campaign.people import csv_import


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "people.csv"
        with path.open("w", encoding="utf-8") as handle:
            handle.write("email,first_name,timezone\n")
            for n in range(rows):
                handle.write(f"person{n}@example.org,Zoë {n},Europe/Berlin\n")
        started = time.perf_counter()
        with path.open(encoding="utf-8", newline="") as handle:
            plain = sum(1 for _ in csv.DictReader(handle))
        plain_seconds = time.perf_counter() - started
        started = time.perf_counter()
        source = csv_import.open_csv(path)
        checked = time.perf_counter() - started
        read = sum(1 for _ in csv_import.rows(source))
        ours = time.perf_counter() - started
    assert plain == read == rows
    print(
        f"{rows} rows: csv.DictReader {plain_seconds:.2f} s; csv_import {ours:.2f} s "
        f"(of which the encoding check {checked:.2f} s)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000)
