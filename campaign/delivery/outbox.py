"""The dev sink: with no SMTP_HOST, each message is written as an .eml file a person can open."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from campaign.domain.transport import Envelope


class OutboxConnection:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._next = len(list(directory.glob("*.eml"))) + 1

    def send(self, envelope: Envelope, data: bytes) -> None:
        safe = re.sub(r"[^A-Za-z0-9@._-]", "_", envelope.recipient)[:80]
        while True:
            path = self.directory / f"{self._next:06d}_{safe}.eml"
            self._next += 1
            try:
                # O_EXCL: two processes writing the outbox never overwrite each other's files.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as handle:
                # As the receiving mailbox would show it: the envelope sender (a VERP return path).
                handle.write(b"Return-Path: <" + envelope.sender.encode("utf-8") + b">\r\n")
                handle.write(data)
            return


class OutboxTransport:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.description = (
            f"dev sink {self.directory}/ (no SMTP_HOST set: nothing leaves this machine)"
        )

    @contextmanager
    def open(self) -> Iterator[OutboxConnection]:
        self.directory.mkdir(parents=True, exist_ok=True)
        yield OutboxConnection(self.directory)
