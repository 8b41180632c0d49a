"""Charts of the benchmarks' JSON results, as PNGs for docs/performance.md.

    .venv/bin/python bench/charts.py --throughput docs/perf-throughput.json \\
        --scale docs/perf-scale.json --instances docs/perf-instances.json --out docs

Draws whichever results it is given: sending rate against SMTP connections (engine and plain
smtplib, per database), a pass's database time, due-query, claim batch and peak RSS against
the number of subscribers, and the rate against the number of scheduler processes. Needs
matplotlib (`.venv/bin/pip install matplotlib`); the benchmarks themselves do not.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

COLOURS = {"sqlite": "tab:blue", "postgresql": "tab:orange"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--throughput", type=Path, metavar="JSON", help="bench/throughput.py")
    parser.add_argument("--scale", type=Path, metavar="JSON", help="bench/scale.py")
    parser.add_argument("--instances", type=Path, metavar="JSON", help="bench/instances.py")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="directory for PNGs")
    args = parser.parse_args()
    pyplot = _pyplot()
    args.out.mkdir(parents=True, exist_ok=True)
    drawn = []
    if args.throughput:
        drawn.append(rate_by_connections(pyplot, json.loads(args.throughput.read_text()), args.out))
    if args.scale:
        drawn.append(pass_by_subscribers(pyplot, _results(args.scale), args.out))
    if args.instances:
        drawn.append(rate_by_processes(pyplot, _results(args.instances), args.out))
    for path in drawn:
        print(f"wrote {path}")


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend; a clear message when it is missing."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ModuleNotFoundError:
        raise SystemExit("charts need matplotlib: .venv/bin/pip install matplotlib") from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _results(path: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = json.loads(path.read_text())["results"]
    return results


def rate_by_connections(pyplot: Any, report: dict[str, Any], out: Path) -> Path:
    """Emails a second against SMTP connections, the engine's and smtplib's, per database:
    one panel per step sent (a lesson, the welcome email), medians where there were repeats."""
    rows = report.get("medians") or [
        {**r, "engine_rate": r["engine"]["rate"], "smtplib_rate": r["smtplib"]["rate"]}
        for r in report["results"]
    ]
    days = sorted({row.get("day", 0) for row in rows}, reverse=True)
    figure, panels = pyplot.subplots(1, len(days), figsize=(6.5 * len(days), 4.5), squeeze=False)
    for axes, day in zip(panels[0], days, strict=True):
        by_database: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row.get("day", 0) == day:
                by_database[row["database"]].append(row)
        for database, runs in sorted(by_database.items()):
            runs.sort(key=lambda r: r["connections"])
            connections = [r["connections"] for r in runs]
            colour = COLOURS.get(database)
            axes.plot(
                connections,
                [r["engine_rate"] for r in runs],
                "o-",
                color=colour,
                label=f"engine, {database}",
            )
            axes.plot(
                connections,
                [r["smtplib_rate"] for r in runs],
                "s--",
                color=colour,
                alpha=0.6,
                label=f"plain smtplib, {database} run",
            )
        shown = [row for row in rows if row.get("day", 0) == day]
        axes.set_xticks(sorted({r["connections"] for r in shown}))
        axes.set_xlabel("SMTP connections (engine: one sender process each)")
        axes.set_ylabel("emails per second")
        axes.set_ylim(bottom=0)
        what = "welcome emails" if day == 0 else f"day-{day} lessons"
        size = shown[0]["message_bytes"] / 1024
        axes.set_title(f"{shown[0]['count']:,} {what} ({size:.0f} KiB) to {shown[0]['sink']}")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    return _save(pyplot, figure, out / "perf-rate-vs-connections.png")


def pass_by_subscribers(pyplot: Any, results: list[dict[str, Any]], out: Path) -> Path:
    """Database time of a pass, due-query and claim batch times, and peak RSS, by list size."""
    figure, (left, middle, right) = pyplot.subplots(1, 3, figsize=(13, 4.2))
    by_database: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_database[result["database"]].append(result)
    for database, runs in sorted(by_database.items()):
        runs.sort(key=lambda r: r["subscribers"])
        sizes = [r["subscribers"] for r in runs]
        colour = COLOURS.get(database)
        left.plot(
            sizes,
            [r["pass"]["db_ms"] / 1e3 for r in runs],
            "o-",
            color=colour,
            label=f"{database}: in transactions",
        )
        left.plot(
            sizes,
            [r["pass"]["claim_tx_ms"] / 1e3 for r in runs],
            "s--",
            color=colour,
            label=f"{database}: claiming only",
        )
        middle.plot(
            sizes,
            [r["due_query_ms"] for r in runs],
            "o-",
            color=colour,
            label=f"{database}: due-query",
        )
        middle.plot(
            sizes,
            [r["claim_batch_ms"] for r in runs],
            "s--",
            color=colour,
            label=f"{database}: one claim batch",
        )
        right.plot(sizes, [r["peak_rss_mb"] for r in runs], "o-", color=colour, label=database)
    due = results[0]["due"]
    left.axhline(0.2, color="grey", linestyle=":", label="target: 0.2 s")
    left.set_title(f"A pass's database time ({due:,} due)")
    left.set_ylabel("seconds")
    middle.set_title("Due-query and claim batch")
    middle.set_ylabel("milliseconds")
    right.set_title("Peak RSS of the pass's process")
    right.set_ylabel("MB")
    right.set_ylim(0, max(r["peak_rss_mb"] for r in results) * 1.25)
    for axes in (left, middle, right):
        axes.set_xscale("log")
        axes.set_xlabel("subscribers")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    left.set_yscale("log")
    middle.set_yscale("log")
    return _save(pyplot, figure, out / "perf-pass-vs-subscribers.png")


def rate_by_processes(pyplot: Any, results: list[dict[str, Any]], out: Path) -> Path:
    """Total and per-process emails a second against scheduler processes on PostgreSQL."""
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    runs = sorted(results, key=lambda r: r["processes"])
    processes = [r["processes"] for r in runs]
    axes.plot(processes, [r["rate"] for r in runs], "o-", label="total")
    axes.plot(processes, [r["rate_per_process"] for r in runs], "s--", label="per process")
    axes.set_xticks(processes)
    axes.set_xlabel("run_scheduler.py processes (PostgreSQL)")
    axes.set_ylabel("emails per second")
    axes.set_ylim(bottom=0)
    axes.set_title(f"{runs[0]['count']:,} welcome emails, processes started together")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    return _save(pyplot, figure, out / "perf-rate-vs-processes.png")


def _save(pyplot: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    # No timestamps in the file: the same results draw the same bytes.
    figure.savefig(path, dpi=110, metadata={"Software": None})
    pyplot.close(figure)
    return path


if __name__ == "__main__":
    main()
