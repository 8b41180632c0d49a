"""The Transport protocol: how use cases hand a message to a mail server, without knowing which."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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


@runtime_checkable
class GroupingConnection(Connection, Protocol):
    """A connection that can send one message's end with the next message's envelope (SMTP
    PIPELINING, RFC 2920): one round trip per email instead of two."""

    def groups(self) -> bool:
        """Whether the session takes the next envelope with this message's end now."""
        ...

    def send(
        self,
        envelope: Envelope,
        data: bytes,
        then: tuple[Envelope, int] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Send one message; `then` (the next message's envelope and size) may go with its end:
        the next `send` must be that message's. `meanwhile` is called once the message is
        written and before its reply is read (the caller's work overlaps the server's); it
        must not raise."""
        ...


class Transport(Protocol):
    #: shown in logs, e.g. "smtp://mail.example.com:587 (starttls)" or "dev sink outbox/".
    description: str

    def open(self) -> AbstractContextManager[Connection]:
        """One connection, reused for every message of a pass."""
        ...
