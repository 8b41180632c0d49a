"""The Transport protocol: how use cases hand a message to a mail server, without knowing which."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Envelope:
    """Who the SMTP transaction is from and to: exactly one recipient, never read from headers."""

    sender: str
    #: as SMTP writes it: an internationalised domain as its A-label (xn--...).
    recipient: str
    #: the recipient's local part is not ASCII: only a relay that offers SMTPUTF8 takes it.
    smtputf8: bool = False


class Connection(Protocol):
    def send(self, envelope: Envelope, data: bytes) -> None:
        """Send one message or raise TemporaryFailure, PermanentFailure or TransportUnavailable."""
        ...


class Transport(Protocol):
    #: shown in logs, e.g. "smtp://mail.example.com:587 (starttls)" or "dev sink outbox/".
    description: str

    def open(self) -> AbstractContextManager[Connection]:
        """One connection, reused for every message of a pass."""
        ...
