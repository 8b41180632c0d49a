"""Sending rate over a link with a real round-trip time: the engine, plain smtplib and an
ideal client, each through a delaying TCP proxy to an SMTP sink.

    .venv/bin/python bench/link.py                                   # the issue's points
    .venv/bin/python bench/link.py --rtt 0 2 20 50 --connections 1 4 16 32 64 \\
        --processes 1 2 --database sqlite --database postgresql://postgres@127.0.0.1:5432/test \\
        --json docs/perf-link.json

For each round trip, connection count, sender-process count and database: lessons (plan day
1, about 19 KiB) are loaded for one engine pass (`run_once`, set-up not timed), then the same
bytes are sent by plain smtplib (`sendmail`: four round trips per email) and by an ideal
client that does exactly the exchange RFC 2920 allows with no per-email work at all, in two
forms: `ideal-2rtt` (MAIL, RCPT and DATA in one write, then the content: what the engine did
before it grouped) and `ideal-1rtt` (the content and its final dot in the same write as the
next message's MAIL, RCPT and DATA: one round trip per email, as Postfix's own client and
the engine do). Each prints emails/s, its ratio to smtplib, and its share of the bound
`connections / RTT` (one email per round trip per connection).

The link is a proxy in its own process (no kernel features needed: this kernel has no
netem) that holds every chunk for half the round trip in each direction, in order; bandwidth
is not limited. The sink behind it is Postfix's smtp-sink when installed (`apt-get install
postfix`), aiosmtpd otherwise. The number of emails per run follows the bound (`--seconds`
of it, at least 5 per connection), so slow points stay short. `--parts` also prints the
engine's time per email in each part (claim, compose, record, SMTP), CPU and wall.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.scratch import (  # noqa: E402 - after the path is set
    SINKS,
    database_kind,
    engine_env,
    free_port,
    load_average,
    machine,
    print_machine,
    reap,
    scratch_database,
    smtp_sink,
    wait_for_port,
)
from bench.throughput import (  # noqa: E402
    _prepare,
    _sample_message,
    _worker,
    run_lanes,
    smtplib_lane,
)

SENDER = "newsletter@example.com"
CLIENTS = ("engine", "smtplib", "ideal-2rtt", "ideal-1rtt")


# --- the link: a delaying TCP proxy ---------------------------------------------------------


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, one_way: float) -> None:
    """Forward what `reader` gives to `writer`, each chunk `one_way` seconds after it came."""
    queue: deque[tuple[float, bytes]] = deque()
    arrived = asyncio.Event()
    ended = False

    async def deliver() -> None:
        while True:
            while not queue:
                if ended:
                    writer.close()
                    return
                arrived.clear()
                await arrived.wait()
            due, chunk = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(65536):
            queue.append((time.monotonic() + one_way, chunk))
            arrived.set()
    except ConnectionError:
        pass
    ended = True
    arrived.set()
    with suppress(ConnectionError):
        await delivering


async def _proxy(listen: int, upstream: int, rtt: float) -> None:
    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        for sock in (writer.get_extra_info("socket"), up_writer.get_extra_info("socket")):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pump(reader, up_writer, rtt / 2), _pump(up_reader, writer, rtt / 2))

    server = await asyncio.start_server(connected, "127.0.0.1", listen, backlog=1024)
    async with server:
        await server.serve_forever()


@dataclass
class Link:
    """A running delaying proxy: its port, and its CPU seconds once it has stopped."""

    port: int
    cpu_seconds: float = 0.0


@contextmanager
def delaying_link(upstream: int, rtt_ms: float) -> Iterator[Link]:
    """A proxy process to 127.0.0.1:`upstream` adding `rtt_ms` of round trip."""
    link = Link(free_port())
    process = subprocess.Popen(
        [sys.executable, __file__, "proxy", json.dumps([link.port, upstream, rtt_ms / 1000])]
    )
    try:
        wait_for_port(link.port)
        yield link
    finally:
        process.send_signal(signal.SIGTERM)
        link.cpu_seconds, _ = reap(process.pid)


# --- the ideal client ------------------------------------------------------------------------


class _Replies:
    """SMTP replies read off a socket, a multi-line reply counted once."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def code(self) -> int:
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                more = self.sock.recv(65536)
                if not more:
                    raise ConnectionError("the server closed the connection")
                self.buffer += more
                continue
            line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            if line[3:4] != b"-":
                return int(line[:3])


def _expect(replies: _Replies, *wanted: int) -> None:
    for code in wanted:
        got = replies.code()
        if got != code:
            raise RuntimeError(f"expected {code}, got {got}")


def ideal_lane(port: int, numbers: range, data: bytes, one_round_trip: bool) -> int:
    """Send `data` to reader<n> for each n over one connection, with no per-email work."""
    body = data if data.endswith(b"\r\n") else data + b"\r\n"
    end = body + b".\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replies = _Replies(sock)
        _expect(replies, 220)
        sock.sendall(b"EHLO ideal.example\r\n")
        _expect(replies, 250)

        def envelope(n: int) -> bytes:
            return f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<reader{n}@example.org>\r\nDATA\r\n".encode()

        sent = 0
        if one_round_trip:
            # The content of one message rides with the next message's envelope.
            pending = list(numbers)
            if pending:
                sock.sendall(envelope(pending[0]))
            for index in range(len(pending)):
                _expect(replies, 250, 250, 354)
                following = envelope(pending[index + 1]) if index + 1 < len(pending) else b""
                sock.sendall(end + following)
                _expect(replies, 250)
                sent += 1
        else:
            for n in numbers:
                sock.sendall(envelope(n))
                _expect(replies, 250, 250, 354)
                sock.sendall(end)
                _expect(replies, 250)
                sent += 1
        sock.sendall(b"QUIT\r\n")
        return sent


def client_worker(params: dict[str, Any]) -> dict[str, Any]:
    """smtplib or the ideal client: `count` emails over `connections` threads, timed."""
    data = Path(params["message"]).read_bytes()
    count, connections, port, kind = (
        params["count"],
        params["connections"],
        params["port"],
        params["kind"],
    )

    def lane(index: int) -> int:
        numbers = range(index, count, connections)
        if kind == "smtplib":
            return smtplib_lane(port, numbers, data)
        return ideal_lane(port, numbers, data, kind == "ideal-1rtt")

    return run_lanes(connections, lane)


# --- one point of the table -----------------------------------------------------------------


def emails_for(rtt_ms: float, connections: int, seconds: float, loopback_count: int) -> int:
    """Enough emails for `seconds` at the bound, or `loopback_count` with no delay."""
    if rtt_ms <= 0:
        return loopback_count
    bound = connections / (rtt_ms / 1000)
    return max(int(bound * seconds), 5 * connections)


def measure(
    url: str | None,
    rtt_ms: float,
    connections: int,
    processes: int,
    count: int,
    sink: str,
    clients: list[str],
    parts: bool = False,
) -> dict[str, Any]:
    rates: dict[str, dict[str, Any]] = {}
    kinds: set[str] = set()
    with scratch_database(url, "link") as scratch:
        _prepare(scratch, count, 1)
        message = _sample_message(scratch, 1)
        if "engine" in clients:
            with smtp_sink(sink) as behind, delaying_link(behind.port, rtt_ms) as link:
                kinds.add(behind.kind)
                rates["engine"] = _worker(
                    "engine",
                    {"profile": 0, "parts": parts},
                    engine_env(
                        scratch,
                        link.port,
                        SMTP_CONNECTIONS=str(connections),
                        SENDER_PROCESSES=str(processes),
                    ),
                    Path(__file__),
                )
            rates["engine"] |= {"proxy_cpu_s": link.cpu_seconds, "sink_cpu_s": behind.cpu_seconds}
    with tempfile.NamedTemporaryFile(suffix=".eml") as file:
        file.write(message)
        file.flush()
        for kind in (c for c in clients if c != "engine"):
            with smtp_sink(sink) as behind, delaying_link(behind.port, rtt_ms) as link:
                kinds.add(behind.kind)
                rates[kind] = _worker(
                    "client",
                    {
                        "kind": kind,
                        "port": link.port,
                        "count": count,
                        "connections": connections,
                        "message": file.name,
                    },
                    dict(os.environ),
                    Path(__file__),
                )
            rates[kind] |= {"proxy_cpu_s": link.cpu_seconds, "sink_cpu_s": behind.cpu_seconds}
    bound = connections / (rtt_ms / 1000) if rtt_ms > 0 else None
    for figures in rates.values():
        figures["rate"] = figures["sent"] / figures["wall_s"]
    smtplib_rate = rates["smtplib"]["rate"] if "smtplib" in rates else None
    result = {
        "database": database_kind(url),
        "rtt_ms": rtt_ms,
        "connections": connections,
        "sender_processes": processes,
        "count": count,
        "message_bytes": len(message),
        "sink": " ".join(sorted(kinds)),
        "bound": bound,
        "clients": {
            kind: {
                **figures,
                "vs_smtplib": figures["rate"] / smtplib_rate if smtplib_rate else None,
                "of_bound": figures["rate"] / bound if bound else None,
            }
            for kind, figures in rates.items()
        },
        "load_average": load_average(),
    }
    _print(result)
    return result


def _print(r: dict[str, Any]) -> None:
    bound = f"{r['bound']:,.0f}/s" if r["bound"] else "none (loopback)"
    print(
        f"\n{r['database']}, RTT {r['rtt_ms']:g} ms, {r['connections']} connection(s), "
        f"{r['sender_processes']} sender process(es), {r['count']} emails of "
        f"{r['message_bytes'] / 1024:.0f} KiB, sink {r['sink']}; bound {bound}; "
        f"load {r['load_average']}"
    )
    for kind, figures in r["clients"].items():
        ratio = f"{figures['vs_smtplib']:.2f}x smtplib" if figures["vs_smtplib"] else ""
        share = f"{figures['of_bound']:.2f} of bound" if figures["of_bound"] else ""
        missing = "" if figures["sent"] == r["count"] else f"  (sent {figures['sent']} only)"
        # Where the machine's CPU went per email: the client, the proxy and the sink share it.
        per_email = 1e6 / max(figures["sent"], 1)
        cpu = "  CPU/email: client {:,.0f} us, proxy {:,.0f}, sink {:,.0f}".format(
            figures["cpu_s"] * per_email,
            figures["proxy_cpu_s"] * per_email,
            figures["sink_cpu_s"] * per_email,
        )
        print(f"  {kind:<11} {figures['rate']:>8,.0f} emails/s  {ratio:<16} {share}{missing}{cpu}")
        if figures.get("parts"):
            # Summed over the connections' threads: wall is what one email kept its
            # connection busy in each part, waits for locks and the interpreter included.
            print(
                "  {:<11} us per email, thread CPU / wall: {}".format(
                    "",
                    ", ".join(
                        f"{name} {figures['parts'][name]:,.0f} / {figures['parts_wall'][name]:,.0f}"
                        for name in figures["parts"]
                    ),
                )
            )


def print_table(results: list[dict[str, Any]]) -> None:
    print("\nemails/s (ratio to smtplib; share of connections / RTT)")
    print("  database    RTT  conn proc  " + "  ".join(f"{c:>24}" for c in CLIENTS))
    for r in results:
        cells = []
        for kind in CLIENTS:
            figures = r["clients"].get(kind)
            if figures is None:
                cells.append(f"{'-':>24}")
                continue
            ratio = f"{figures['vs_smtplib']:.2f}x" if figures["vs_smtplib"] else "-"
            share = f"{figures['of_bound']:.2f}" if figures["of_bound"] else "-"
            cells.append(f"{figures['rate']:>8,.0f} ({ratio:>5}; {share:>4})")
        print(
            f"  {r['database']:<10} {r['rtt_ms']:>4g} {r['connections']:>5} "
            f"{r['sender_processes']:>4}  " + "  ".join(cells)
        )


# The targets: 20 ms with 32 connections in one process, 50 ms with 64 in two.
DEFAULT_POINTS = [(20.0, 32, 1), (50.0, 64, 2), (20.0, 1, 1), (2.0, 16, 1)]


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "proxy":
        listen, upstream, rtt = json.loads(sys.argv[2])
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(_proxy(listen, upstream, rtt))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "client":
        print(json.dumps(client_worker(json.loads(sys.argv[2]))))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "engine":
        from bench.throughput import engine_worker

        print(json.dumps(engine_worker(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", type=float, nargs="+", metavar="MS", help="round trips, ms")
    parser.add_argument("--connections", type=int, nargs="+", metavar="N")
    parser.add_argument("--processes", type=int, nargs="+", metavar="P", default=[1])
    parser.add_argument("--database", action="append", metavar="URL")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--seconds", type=float, default=3.0, help="run length at the bound")
    parser.add_argument("--count", type=int, default=2000, help="emails per run at 0 ms")
    parser.add_argument("--sink", choices=SINKS, default="auto")
    parser.add_argument(
        "--parts",
        action="store_true",
        help="also time each part of the engine's emails (claim, compose, record, SMTP): "
        "thread CPU and wall per email, summed over its connections",
    )
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args()
    if args.rtt or args.connections:
        points = [
            (rtt, connections, processes)
            for rtt in args.rtt or [20.0]
            for connections in args.connections or [32]
            for processes in args.processes
            if processes <= connections
        ]
    else:
        points = DEFAULT_POINTS
    databases = [None if url == "sqlite" else url for url in (args.database or ["sqlite"])]
    found = machine(databases)
    print_machine(found)
    results = [
        measure(
            url,
            rtt,
            connections,
            processes,
            emails_for(rtt, connections, args.seconds, args.count),
            args.sink,
            args.clients,
            args.parts,
        )
        for url in databases
        for rtt, connections, processes in points
    ]
    print_table(results)
    if args.json:
        args.json.write_text(
            json.dumps({"bench": "link", "machine": found, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
