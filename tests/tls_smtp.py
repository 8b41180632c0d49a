"""Mail servers that test the engine's TLS and AUTH: aiosmtpd on loopback with trustme
certificates, recording every command line a client sent (as read after TLS), and a server
that accepts TCP connections but never greets."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.smtp_server import Received, _Handler, free_port


@dataclass(frozen=True)
class Command:
    """One line a client sent outside a message body, and whether TLS protected it."""

    line: bytes
    tls: bool

    @property
    def verb(self) -> str:
        return self.line.split(b" ", 1)[0].decode("ascii", "replace").upper()


@dataclass
class ScriptedHandler(_Handler):
    """The test server's handler, with end-of-DATA replies scripted per recipient."""

    #: replies at the end of DATA for one recipient, used in turn, e.g.
    #: {"a@x.org": ["421-4.7.0 busy\r\n421 4.7.0 closing"]}; a 250 reply still keeps the message.
    data_replies_for: dict[str, list[str]] = field(default_factory=dict)
    #: refuse MAIL before a successful AUTH, as a submission relay does.
    require_auth: bool = False

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipient = (envelope.rcpt_tos or [""])[0].lower()
        with self.lock:
            script = self.data_replies_for.get(recipient)
            reply = script.pop(0) if script else None
        if reply is None or reply.startswith("250"):
            accepted = await super().handle_DATA(server, session, envelope)
            return reply or accepted
        return reply


class _RecordingSMTP(SMTP):
    """aiosmtpd's SMTP session, keeping each command line it receives and optionally
    answering STARTTLS with a scripted refusal."""

    def __init__(self, handler: Any, *, server: TLSSMTPServer, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._server = server
        self._pending = b""
        self._in_body = False

    def data_received(self, data: bytes) -> None:
        # Called with the plaintext: TLS (STARTTLS or implicit) is undone below this layer.
        tls = self.transport is not None and self.transport.get_extra_info("ssl_object") is not None
        self._pending += data
        *lines, self._pending = self._pending.split(b"\r\n")
        for line in lines:
            if self._in_body:
                self._in_body = line != b"."
            else:
                self._server.record(Command(line, tls))
        super().data_received(data)

    async def push(self, status: Any) -> None:
        text = status.decode() if isinstance(status, bytes) else str(status)
        if text.startswith("354"):
            self._in_body = True  # the client sends the message only after this reply
        await super().push(status)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._server.starttls_reply is not None:
            await self.push(self._server.starttls_reply)
            return
        await super().smtp_STARTTLS(arg)


class _Controller(Controller):
    def __init__(self, server: TLSSMTPServer, **kwargs: Any) -> None:
        self._tls_server = server
        super().__init__(server.handler, **kwargs)

    def factory(self) -> SMTP:
        return _RecordingSMTP(self.handler, server=self._tls_server, **self.SMTP_kwargs)


def server_context(certificate: trustme.LeafCert) -> ssl.SSLContext:
    """A server-side TLS context presenting `certificate` (and its chain)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    return context


class TLSSMTPServer:
    """A relay on 127.0.0.1: STARTTLS (`starttls`), TLS from the first byte (`ssl`) or
    cleartext only (`none`), with AUTH PLAIN/LOGIN for `users` (login -> password).

    `cleartext_auth=True` makes it the server a downgrade attack would present: AUTH offered
    and mail accepted without TLS, so a client that fell back to cleartext would go through.
    `starttls_reply` answers STARTTLS with that reply instead of starting TLS.
    """

    def __init__(
        self,
        security: Literal["starttls", "ssl", "none"],
        certificate: trustme.LeafCert | None = None,
        *,
        users: Mapping[str, str] | None = None,
        starttls_reply: str | None = None,
        cleartext_auth: bool = False,
    ) -> None:
        self.port = free_port()
        self.handler = ScriptedHandler()
        self.users = dict(users or {})
        self.starttls_reply = starttls_reply
        self._commands: list[Command] = []
        self._lock = threading.Lock()
        context = server_context(certificate) if certificate is not None else None
        self.handler.require_auth = bool(self.users) and not cleartext_auth
        options: dict[str, Any] = {
            "server_hostname": "mail.test",
            "authenticator": self._authenticate,
            # aiosmtpd counts only STARTTLS as TLS: on implicit TLS it would not offer AUTH.
            "auth_require_tls": security == "starttls" and not cleartext_auth,
        }
        if security == "starttls":
            options.update(tls_context=context, require_starttls=not cleartext_auth)
        elif security == "ssl":
            options.update(ssl_context=context)
        self._controller = _Controller(self, hostname="127.0.0.1", port=self.port, **options)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        known = isinstance(data, LoginPassword) and self.users.get(
            data.login.decode("utf-8", "replace")
        ) == data.password.decode("utf-8", "replace")
        # handled=False: aiosmtpd answers the failure itself (535 5.7.8).
        return AuthResult(success=known, handled=False)

    def record(self, command: Command) -> None:
        with self._lock:
            self._commands.append(command)

    @property
    def commands(self) -> list[Command]:
        """Every command line received so far, in order, message bodies left out."""
        with self._lock:
            return list(self._commands)

    @property
    def verbs(self) -> list[str]:
        return [command.verb for command in self.commands]

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte: no 220 greeting, no TLS
    handshake. Counts the connections it accepted."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._accepted.append(connection)  # held open, unanswered, until stop()

    @property
    def connections(self) -> int:
        return len(self._accepted)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        for connection in self._accepted:
            connection.close()
        self._listener.close()
