"""Test doubles that implement the real interfaces: a transport that records instead of sending."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from campaign.domain.transport import Envelope


@dataclass
class SentMessage:
    envelope: Envelope
    data: bytes


@dataclass
class RecordingTransport:
    """Keeps every message it is given; `failures` are raised, in order, before accepting."""

    description: str = "recording transport"
    sent: list[SentMessage] = field(default_factory=list)
    failures: list[Exception] = field(default_factory=list)

    @contextmanager
    def open(self) -> Iterator[RecordingTransport]:
        yield self

    def send(self, envelope: Envelope, data: bytes) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(SentMessage(envelope, data))
