"""Slow clients never hold the HTTP server: each request's headers and body have a deadline,
the number of connections is bounded, and a full server makes room by closing the oldest
connection that has not sent a whole request yet (an attacker's, not a real client's)."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from campaign.errors import ListenFailed
from campaign.settings import Settings

log = logging.getLogger("campaign.http_guard")

#: the body deadline at the ASGI level answers 408 first; the connection's own one is later.
BACKSTOP_SECONDS = 1.0
WARN_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class HttpLimits:
    #: seconds from a connection's start (or the end of its last response) to a whole header
    header_timeout: float
    #: seconds from the end of the headers to the end of the body
    body_timeout: float
    #: open connections at most; past it the oldest one still awaiting its request is closed
    max_connections: int

    @property
    def backlog(self) -> int:
        """The listen queue, which is also how many connections asyncio accepts at a time
        before their protocols can make room: kept small so the cap holds (and file
        descriptors last) under a burst."""
        return min(128, self.max_connections)

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            settings.http_header_timeout, settings.http_body_timeout, settings.http_max_connections
        )


def listen_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket on host:port, bound here so that a busy port is an error the
    caller sees at once (uvicorn in a thread would only log it and run on without HTTP)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ListenFailed(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenFailed(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another server using it?)"
        ) from exc
    sock.set_inheritable(True)
    return sock


def guarded_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """The h11 protocol class for one server: its limits and its connections awaiting a
    request (oldest first) are shared by its connections only."""
    attributes = {
        "limits": limits,
        "awaiting": {},
        "evicted": 0,
        "last_warning": -WARN_EVERY_SECONDS,
    }
    return type("GuardedH11Protocol", (GuardedH11Protocol,), attributes)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, a body deadline and a connection cap."""

    limits: ClassVar[HttpLimits]
    #: connections still waiting for a whole request header, oldest first (a dict keeps order)
    awaiting: ClassVar[dict[GuardedH11Protocol, None]]
    #: connections closed to make room, and when that was last logged (loop time)
    evicted: ClassVar[int]
    last_warning: ClassVar[float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        #: the cycle in place when we began waiting for a request: a new one means headers came
        self._waiting_since_cycle: object | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_request()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        finished = self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is finished:  # nothing pipelined: the connection waits for a request
            self._await_request()
        else:
            self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.awaiting.pop(self, None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Move the deadline along: from the header's to the body's, then none."""
        if self.transport.is_closing():
            return
        if self in self.awaiting and self.cycle is not self._waiting_since_cycle:
            self.awaiting.pop(self, None)
            self._arm(self.limits.body_timeout + BACKSTOP_SECONDS, "request body")
        if self not in self.awaiting and self.conn.their_state is not h11.SEND_BODY:
            self._disarm()  # the whole request is in: the application's time is not limited

    def _await_request(self) -> None:
        self._waiting_since_cycle = self.cycle
        self.awaiting[self] = None
        self._arm(self.limits.header_timeout, "request header")

    def _make_room(self) -> None:
        """Close the oldest connection without a whole request (this one, if it is the only
        one): the open ones stay at the cap, and a real client, whose request comes at once,
        is never the oldest for long."""
        oldest = next((c for c in self.awaiting if c is not self), self)
        # Popped now: its connection_lost comes later, and the next newcomer needs another.
        self.awaiting.pop(oldest, None)
        oldest._disarm()
        oldest.transport.close()
        type(self).evicted += 1
        now = self.loop.time()
        if now - type(self).last_warning >= WARN_EVERY_SECONDS:  # one line, not one per close
            type(self).last_warning = now
            log.warning(
                "more than %d HTTP connections: closing the oldest ones without a whole request "
                "(%d so far; slow clients?)",
                self.limits.max_connections,
                self.evicted,
            )

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.debug("closing a connection whose %s took too long", what)
            self.transport.close()
