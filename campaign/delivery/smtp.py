"""SMTP delivery over one reused connection: TLS verified, replies classified (RFC 5321/3463)."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Literal

from campaign.domain.transport import Envelope
from campaign.errors import (
    PermanentFailure,
    TemporaryFailure,
    TransportUnavailable,
    UnknownOutcome,
)

Security = Literal["starttls", "ssl", "none"]


#: the most of a server's reply text kept in logs and the delivery log.
_REPLY_CHARS = 300


def _text(message: bytes | str) -> str:
    """A reply's text on one line (smtplib joins a multi-line reply with LF), shortened."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    text = " ".join(text.splitlines())
    return text if len(text) <= _REPLY_CHARS else text[:_REPLY_CHARS] + "..."


def _enhanced(message: str) -> str | None:
    first = message.split(" ", 1)[0]
    parts = first.split(".")
    return first if len(parts) == 3 and all(p.isdigit() for p in parts) else None


def classify(code: int, message: bytes | str, *, at_recipient: bool) -> Exception:
    """The error for a reply: 4xx temporary, 5xx permanent (a bounce if about the address)."""
    text = _text(message)
    enhanced = _enhanced(text)
    summary = f"{code} {text}".strip()
    if 400 <= code < 500:
        return TemporaryFailure(summary, smtp_code=code, enhanced_code=enhanced)
    if 500 <= code < 600:
        about_address = at_recipient or (enhanced or "").startswith(("5.1.", "5.2.1"))
        return PermanentFailure(
            summary, smtp_code=code, enhanced_code=enhanced, bounce=about_address
        )
    return TemporaryFailure(f"unexpected reply {summary}", smtp_code=code, enhanced_code=enhanced)


#: a dot that begins a line (after the first): what SMTP transparency doubles.
_LINE_DOT = re.compile(rb"\n\.")


def dot_stuffed(data: bytes) -> bytes:
    """RFC 5321 transparency (4.5.2): a '.' that begins a line is doubled.

    The same bytes as smtplib's `re.sub(rb"(?m)^\\.", b"..", data)`, at a tenth of its CPU
    (docs/performance.md, "Figures behind the code"): such lines are few, so finding them with
    a literal regex and joining the pieces between them beats rewriting every line break.
    """
    cuts = [match.start() + 1 for match in _LINE_DOT.finditer(data)]
    if data.startswith(b"."):
        cuts.insert(0, 0)
    if not cuts:
        return data
    # Every piece but the first starts with the dot to double; the join adds the other one.
    ends = [*cuts, len(data)]
    return b".".join([data[start:end] for start, end in zip([0, *cuts], ends, strict=True)])


#: an addr-spec with nothing to quote or strip: its SMTP path is simply <address>.
_PLAIN_ADDRESS = re.compile(r'[^\s<>()"\\,;:\[\]@]+@[^\s<>()"\\,;:\[\]@]+')


def smtp_path(address: str) -> str:
    """`<address>` for MAIL FROM and RCPT TO, as `smtplib.quoteaddr` makes it, without its
    full RFC 5322 parse (per address, per email) when the address is a plain addr-spec."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


#: RFC 5321 4.5.3.2.6: wait 10 minutes for the reply to the final dot. A shorter wait is how
#: copies get delivered (RFC 1047): the server may be storing the message meanwhile.
FINAL_REPLY_TIMEOUT = 600.0


# Not CampaignErrors: signals inside this transport, translated before they leave it
# (FinalReplyLost to UnknownOutcome, NoSMTPUTF8 to PermanentFailure), so they stay here.
class FinalReplyLost(smtplib.SMTPException):
    """The whole message was sent, but the reply to its final dot never came."""


class NoSMTPUTF8(Exception):
    """The server does not offer SMTPUTF8, which a non-ASCII local part needs."""


class _Client(smtplib.SMTP):
    """smtplib's client, with `data` quoting the message by `dot_stuffed`, and `deliver`:
    `sendmail` for one recipient that pipelines when the server allows it. The reply to the
    final dot has a wait of its own (`final_reply_timeout`), and its loss is FinalReplyLost."""

    final_reply_timeout = FINAL_REPLY_TIMEOUT

    def getreply(self) -> tuple[int, bytes]:
        # smtplib answers a reply line it cannot read whole (over 8 KiB) as if the server had
        # said "500 Line too long." and closes the connection: that is a lost connection,
        # not a rejection of the message.
        try:
            return super().getreply()
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 500 and self.sock is None:
                raise smtplib.SMTPServerDisconnected("a reply line too long to read") from exc
            raise

    #: the envelope (sender, recipient) whose MAIL, RCPT and DATA went out with the previous
    #: message's end and whose replies are not read yet: the session is mid-transaction.
    opened: tuple[str, str] | None = None
    #: send a message's end with the next message's envelope (one round trip per email);
    #: cleared for the rest of the session after any reply the group did not expect.
    groups_messages = True

    def groups(self) -> bool:
        """Whether a message's end may carry the next message's MAIL, RCPT and DATA."""
        return self.groups_messages and self.has_extn("pipelining")

    def deliver(
        self,
        sender: str,
        recipient: str,
        data: bytes,
        smtputf8: bool = False,
        then: tuple[Envelope, int] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Send `data` to `recipient`, raising what `sendmail` raises.

        When the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write and
        their three replies are read together: two round trips fewer per message. With
        `smtputf8` (a non-ASCII local part) MAIL carries SMTPUTF8 (RFC 6531), or
        NoSMTPUTF8 is raised before anything is written when the server does not offer it.

        `then` (the next message's envelope and size) goes out in the same write as this
        message's final dot, when the session groups: its replies are read by the next
        `deliver`, which must be that message's (`opened` says which is open). `meanwhile`
        runs while the server reads the message, before its reply is read (when pipelining).
        """
        self.ehlo_or_helo_if_needed()
        options = self._options(recipient, smtputf8)
        try:
            if self.opened is not None:
                if self.opened != (sender, recipient):
                    raise RuntimeError("the next message is not the one whose envelope is open")
                self.opened = None
                self._read_envelope_replies(sender, recipient)
            elif not self.has_extn("pipelining"):
                self.sendmail(sender, [recipient], data, mail_options=options)
                return
            else:
                self.send(self._envelope(sender, recipient, len(data), options, smtputf8))
                self._read_envelope_replies(sender, recipient)
            following = self._grouped(then)
            code, reply = self._end_data(data, following, meanwhile)
            if following and then is not None:
                self.opened = (then[0].sender, then[0].recipient)
            if code != 250:
                self.groups_messages = False
                if self.opened is None:
                    self._after_refusal(closing=code == 421)
                elif code == 421:
                    self.close()
                raise smtplib.SMTPDataError(code, reply)
        finally:
            self.command_encoding = "ascii"  # the next message may be plain ASCII

    def _options(self, recipient: str, smtputf8: bool) -> list[str]:
        if not smtputf8:
            return []
        if not self.has_extn("smtputf8"):
            raise NoSMTPUTF8(recipient)
        return ["SMTPUTF8", *(["BODY=8BITMIME"] if self.has_extn("8bitmime") else [])]

    def _envelope(
        self, sender: str, recipient: str, size: int, options: list[str], smtputf8: bool
    ) -> bytes:
        """MAIL, RCPT and DATA as one write."""
        if "\r" in sender + recipient or "\n" in sender + recipient:
            raise ValueError("an address contains a line break")  # as putcmd() refuses
        params = (f" SIZE={size}" if self.has_extn("size") else "") + "".join(
            [" " + option for option in options]
        )
        commands = (
            f"MAIL FROM:{smtp_path(sender)}{params}\r\nRCPT TO:{smtp_path(recipient)}\r\nDATA\r\n"
        )
        return commands.encode("utf-8" if smtputf8 else "ascii")

    def _grouped(self, then: tuple[Envelope, int] | None) -> bytes:
        """The next message's envelope to write with this one's end, or nothing: when the
        session does not group, or that envelope is not one this session can write (it
        fails on its own turn, as it would alone)."""
        if then is None or not self.groups():
            return b""
        envelope, size = then
        try:
            options = self._options(envelope.recipient, envelope.smtputf8)
            return self._envelope(
                envelope.sender, envelope.recipient, size, options, envelope.smtputf8
            )
        except (NoSMTPUTF8, ValueError):
            return b""

    def _read_envelope_replies(self, sender: str, recipient: str) -> None:
        """The replies to MAIL, RCPT and DATA, written together: raise what sendmail would."""
        failure: smtplib.SMTPException | None = None
        code = 0
        for stage, wanted in enumerate(((250,), (250, 251), (354,))):
            code, reply = self.getreply()
            if failure is None and code not in wanted:
                failure = _refusal(stage, code, reply, sender, recipient)
            if code == 421:  # the server is closing the connection: no more replies come
                self.close()
                raise failure or smtplib.SMTPResponseException(code, reply)
        if failure is not None:
            self.groups_messages = False
            if code == 354:  # DATA accepted with no recipient: end it empty (RFC 2920)
                self.send(".\r\n")
                self.getreply()
            self._after_refusal(closing=False)
            raise failure

    def _after_refusal(self, closing: bool) -> None:
        """As sendmail: a 421 closes the connection, anything else resets the transaction."""
        if closing:
            self.close()
            return
        with suppress(smtplib.SMTPServerDisconnected):
            self.rset()

    def _end_data(
        self, msg: bytes, following: bytes = b"", meanwhile: Callable[[], None] | None = None
    ) -> tuple[int, bytes]:
        """Write the message and its final dot (and `following`, the next envelope, in the
        same write), call `meanwhile`, and read the reply to the dot."""
        quoted = dot_stuffed(msg)
        # A failure while sending leaves the message unterminated: the server discards it.
        end = b".\r\n" if quoted.endswith(b"\r\n") else b"\r\n.\r\n"
        self.send(quoted + end + following)
        if meanwhile is not None:
            meanwhile()
        sock = self.sock
        if sock is not None:
            sock.settimeout(self.final_reply_timeout)
        try:
            reply = self.getreply()
        except smtplib.SMTPServerDisconnected as exc:  # a timeout, or the connection lost
            waited = f"{self.final_reply_timeout:g} s"
            raise FinalReplyLost(f"{exc}; waited up to {waited}") from exc
        if sock is not None and self.sock is sock:
            sock.settimeout(self.timeout)
        return reply

    def close(self) -> None:
        self.opened = None  # an open envelope ends with the connection: nothing is delivered
        super().close()

    def data(self, msg: bytes) -> tuple[int, bytes]:  # type: ignore[override]
        # smtplib.SMTP.data, less its debug output; sendmail() hands it bytes.
        self.putcmd("data")
        code, reply = self.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        return self._end_data(msg)


def _refusal(
    stage: int, code: int, reply: bytes, sender: str, recipient: str
) -> smtplib.SMTPException:
    """What sendmail raises for a refused MAIL (0), RCPT (1) or DATA (2)."""
    if stage == 0:
        return smtplib.SMTPSenderRefused(code, reply, sender)
    if stage == 1:
        return smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
    return smtplib.SMTPDataError(code, reply)


class _SSLClient(_Client, smtplib.SMTP_SSL):
    pass


class SMTPConnection:
    """A lazily (re)opened SMTP session; a dropped connection fails one message, not the pass."""

    def __init__(self, transport: SMTPTransport) -> None:
        self._transport = transport
        self._smtp: _Client | None = None

    def _connect(self) -> _Client:
        t = self._transport
        smtp: _Client | None = None
        stage = "connect"
        try:
            # Loading the CA store is slow: only for a connection that uses TLS. Loaded
            # per connection, so a replaced SMTP_CA_FILE counts from the next one.
            context = ssl.create_default_context(cafile=t.ca_file) if t.security != "none" else None
            if t.security == "ssl":
                smtp = _SSLClient(t.host, t.port, timeout=t.timeout, context=context)
            else:
                smtp = _Client(t.host, t.port, timeout=t.timeout)
            smtp.ehlo()
            if t.security == "starttls":
                # Fails closed: STARTTLS not offered or refused means no sending, never
                # cleartext AUTH.
                stage = "STARTTLS"
                smtp.starttls(context=context)
                smtp.ehlo()
            if t.username:
                stage = "AUTH"
                smtp.login(t.username, t.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            if smtp is not None:
                smtp.close()  # a session refused halfway: leave no socket behind
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                reason = f"authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}"
            elif isinstance(exc, smtplib.SMTPNotSupportedError):
                reason = f"server does not offer {stage}"
            elif isinstance(exc, smtplib.SMTPResponseException):
                reason = f"{stage} refused: {exc.smtp_code} {_text(exc.smtp_error)}"
            elif isinstance(exc, ssl.SSLCertVerificationError):
                reason = f"TLS certificate not accepted: {exc.verify_message}"
            elif isinstance(exc, ssl.SSLError):
                reason = f"TLS failed: {exc.reason or exc}"
            elif isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
                reason = f"no reply within {t.timeout:g} s ({stage})"
            else:
                reason = f"cannot connect: {exc}"
            raise TransportUnavailable(f"{t.description}: {reason}") from exc
        return smtp

    def groups(self) -> bool:
        """Whether the open session takes the next message's envelope with this one's end
        (PIPELINING offered, grouping not turned off, no surprise so far)."""
        return self._smtp is not None and self._smtp.groups()

    def send(
        self,
        envelope: Envelope,
        data: bytes,
        then: tuple[Envelope, int] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Send one message; with `then` (the next message's envelope and size, when the
        session groups) that message's MAIL, RCPT and DATA go with this one's final dot.
        `meanwhile` runs between writing the message and reading its reply, when the server
        pipelines (not at all otherwise)."""
        if self._smtp is not None and self._smtp.opened not in (
            None,
            (envelope.sender, envelope.recipient),
        ):
            self.close()  # an envelope opened for a message that is not coming: abandon it
        if self._smtp is None:
            self._smtp = self._connect()
            self._smtp.final_reply_timeout = self._transport.final_reply_timeout
            self._smtp.groups_messages = self._transport.group_messages
        try:
            self._smtp.deliver(
                envelope.sender, envelope.recipient, data, envelope.smtputf8, then, meanwhile
            )
        except NoSMTPUTF8 as exc:
            # The relay's limit, not the address's fault: not a bounce, nothing was sent.
            raise PermanentFailure(
                f"the relay does not offer SMTPUTF8, needed for {envelope.recipient}", bounce=False
            ) from exc
        except ValueError as exc:  # UnicodeEncodeError: raised before the command is written
            self._reset()
            raise PermanentFailure(
                f"cannot write this message's envelope in SMTP: {exc}", bounce=False
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            code, message = exc.recipients[envelope.recipient]
            self._reset()
            raise classify(code, message, at_recipient=True) from exc
        except smtplib.SMTPSenderRefused as exc:
            self._reset()
            if 400 <= exc.smtp_code < 500:
                raise classify(exc.smtp_code, exc.smtp_error, at_recipient=False) from exc
            raise TransportUnavailable(
                f"sender refused: {exc.smtp_code} {_text(exc.smtp_error)}"
            ) from exc
        except FinalReplyLost as exc:
            self.close()
            raise UnknownOutcome(f"no reply to the end of the message ({exc})") from exc
        except smtplib.SMTPResponseException as exc:
            # 421 and friends: the server is closing; reconnect for the next message.
            self.close()
            raise classify(exc.smtp_code, exc.smtp_error, at_recipient=False) from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self.close()
            raise TemporaryFailure(f"connection lost: {exc or type(exc).__name__}") from exc

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.close()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        if smtp.opened is not None:
            # Mid-transaction (DATA accepted, no content yet): a QUIT would be read as the
            # message. Closing the socket makes the server discard it.
            smtp.close()
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


class SMTPTransport:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        ca_file: str | None = None,
        final_reply_timeout: float = FINAL_REPLY_TIMEOUT,
        group_messages: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        #: the wait for the reply to a message's final dot (every other stage: `timeout`).
        self.final_reply_timeout = final_reply_timeout
        #: one round trip per email where the server pipelines (SMTP_GROUP_MESSAGES).
        self.group_messages = group_messages
        #: a PEM bundle trusted instead of the system's CA store (None: the system's).
        self.ca_file = ca_file
        self.description = f"smtp://{host}:{port} ({security})"

    @contextmanager
    def open(self) -> Iterator[SMTPConnection]:
        connection = SMTPConnection(self)
        try:
            yield connection
        finally:
            connection.close()
