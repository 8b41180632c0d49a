"""Real signups while slow clients trickle: `run_scheduler.py --http` under the usual 1,024
open-file limit, N connections each sending a request header one byte a second, and the
time a real visitor's signup takes meanwhile.

    .venv/bin/python bench/slow_clients.py                    # 1,100 trickling connections
    .venv/bin/python bench/slow_clients.py --slow 3000 --max-connections 500

Prints how many slow connections the server had closed and the median and worst signup time
(a signup that fails or takes over 10 s counts as refused).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.smtp_server import free_port  # noqa: E402

PARTIAL = b"POST /subscribe HTTP/1.1\r\nHost: bench\r\nUser-Agent: s"


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))  # the usual default soft limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--slow", type=int, default=1100, help="trickling connections")
    parser.add_argument("--signups", type=int, default=20, help="real signups meanwhile")
    parser.add_argument("--max-connections", type=int, default=500)
    parser.add_argument("--header-timeout", type=float, default=10.0)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "ERROR",
            "DATABASE_URL": f"sqlite:///{folder}/bench.db",
            "OUTBOX_DIR": f"{folder}/outbox",
            "DOUBLE_OPT_IN": "false",
            "SIGNUP_RATE_PER_MINUTE": "10000",
            "SMTP_HOST": "",
            "HTTP_MAX_CONNECTIONS": str(args.max_connections),
            "HTTP_HEADER_TIMEOUT": str(args.header_timeout),
        }
        campaign = [sys.executable, "-m", "campaign", "db", "upgrade"]
        subprocess.run(campaign, env=env, cwd=ROOT, check=True, capture_output=True)
        service = subprocess.Popen(
            [sys.executable, str(ROOT / "run_scheduler.py"), "--http", f"127.0.0.1:{port}"],
            env=env,
            cwd=ROOT,
            preexec_fn=_limit_files,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):  # the service starting, not a schedule
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(url + "/subscribe", timeout=1)
                    break
                time.sleep(0.1)
            slow = []
            for _ in range(args.slow):
                with contextlib.suppress(OSError):
                    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                    sock.sendall(PARTIAL)
                    slow.append(sock)
            times: list[float] = []
            for n in range(args.signups):
                for sock in slow:  # a byte each between signups: still trickling
                    with contextlib.suppress(OSError):
                        sock.send(b"x")
                started = time.monotonic()
                try:
                    answer = httpx.post(
                        url + "/subscribe", data={"email": f"r{n}@example.org"}, timeout=10
                    )
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                times.append(time.monotonic() - started if ok else float("inf"))
            closed = 0
            for sock in slow:
                sock.setblocking(False)
                try:
                    closed += sock.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
                sock.close()
        finally:
            service.terminate()
            service.wait(timeout=20)
    refused = sum(t == float("inf") for t in times)
    served = [t for t in times if t != float("inf")] or [float("nan")]
    print(
        f"slow connections opened {len(slow)}/{args.slow}, closed by the server {closed}; "
        f"signups ok {len(times) - refused}/{len(times)}, median {statistics.median(served):.3f}s,"
        f" worst {max(served):.3f}s (cap {args.max_connections}, header timeout "
        f"{args.header_timeout}s)"
    )


if __name__ == "__main__":
    main()
