"""A real receiving end for outgoing webhooks: an HTTP server in a process of its own (so a
test can kill it mid-request) that checks each signature with the `standardwebhooks` package,
logs what it got as JSON lines, and answers with the status codes it was told to.

    python -m tests.webhook_receiver PORT SECRET LOG ANSWERS

ANSWERS: status codes for successive requests, comma-separated, the last one repeated
(`500,500,200`); `hang` reads the request, logs it and never answers.
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent


def _serve(port: int, secret: str, log: Path, answers: list[str]) -> None:
    verifier = Webhook(secret)
    served = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            webhook_id = self.headers.get("webhook-id", "")
            timestamp = self.headers.get("webhook-timestamp", "0")
            expected = verifier.sign(
                webhook_id, datetime.fromtimestamp(int(timestamp), UTC), body.decode()
            )
            given = self.headers.get("webhook-signature", "").split(" ")
            valid = any(hmac.compare_digest(expected, one) for one in given)
            answer = answers[min(served[0], len(answers) - 1)]
            served[0] += 1
            entry = {
                "id": webhook_id,
                "timestamp": int(timestamp),
                "valid": valid,
                "answer": answer,
                "body": json.loads(body),
            }
            with log.open("a") as file:
                file.write(json.dumps(entry) + "\n")
            if answer == "hang":
                time.sleep(3600)  # killed by the test before this ends
            self.send_response(int(answer))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


class Receiver:
    """The receiver process, from a test: start it, read what it got, kill or stop it."""

    def __init__(self, port: int, secret: str, log: Path) -> None:
        self.port, self.secret, self.log = port, secret, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self, answers: str = "200") -> Receiver:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.webhook_receiver",
                str(self.port),
                self.secret,
                str(self.log),
                answers,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("the webhook receiver did not start")

    def received(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """What was received once there are `count` requests (a request in flight, say)."""
        deadline = time.monotonic() + timeout
        while len(self.received()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received()

    def kill(self) -> None:
        """SIGKILL: the request in flight gets no answer, its connection is dropped."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4].split(","))
