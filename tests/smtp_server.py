"""A real SMTP server for tests: aiosmtpd on loopback, recording messages, scriptable replies."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def free_port() -> int:
    # aiosmtpd's Controller cannot bind port 0, so ask the OS for a free one first.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    #: the client's (host, port): which SMTP connection delivered it.
    peer: Any = None
    #: MAIL FROM parameters, e.g. ["SMTPUTF8", "BODY=8BITMIME"].
    mail_options: list[str] = field(default_factory=list)

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    #: addresses answered at RCPT with this reply, e.g. {"gone@x.org": "550 5.1.1 no such user"}
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    #: replies given at end of DATA, one per message, before accepting again.
    data_replies: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: offer PIPELINING (RFC 2920), as Postfix and most providers do; aiosmtpd reads
    #: pipelined commands in order but does not say so by itself.
    pipelining: bool = True
    #: what happens after a message is stored, one entry per message (then a prompt 250):
    #: seconds to wait before the 250, or "drop" to close the connection without a reply.
    after_storing: list[float | str] = field(default_factory=list)
    #: seconds the server takes to answer EHLO, MAIL, RCPT and DATA: a slow relay.
    command_delay: float = 0.0

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        await asyncio.sleep(self.command_delay)
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        await asyncio.sleep(self.command_delay)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        await asyncio.sleep(self.command_delay)
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await asyncio.sleep(self.command_delay)
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            content = envelope.original_content or b""
            self.received.append(
                Received(
                    str(envelope.mail_from),
                    list(envelope.rcpt_tos),
                    content,
                    session.peer,
                    list(envelope.mail_options),
                )
            )
            then = self.after_storing.pop(0) if self.after_storing else 0.0
        if then == "drop" and server.transport is not None:
            server.transport.close()  # the server has the message; the client never hears so
            return "421 4.3.0 (never seen: the connection is closed)"
        if then:
            await asyncio.sleep(float(then))
        return "250 Message accepted"


class SMTPServer:
    def __init__(self, *, smtputf8: bool = True) -> None:
        """`smtputf8`: offer SMTPUTF8 (RFC 6531) in EHLO, as aiosmtpd's Controller does
        unless told not to."""
        self.port = free_port()
        self.handler = _Handler()
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, enable_SMTPUTF8=smtputf8
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.recipients]
