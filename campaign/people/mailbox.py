"""Reading a mailbox over IMAP or POP3 (stdlib `imaplib`, `poplib`), TLS verified by default:
list the new messages, fetch one, then settle it (seen, deleted). The only module that speaks
these protocols; `bounce_mailbox` works through the `Mailbox` protocol."""

from __future__ import annotations

import imaplib
import poplib
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple, Protocol

from campaign.errors import MailboxUnavailable
from campaign.settings import MailboxAddress

#: A bounce report is a few kilobytes (with the original returned, some hundreds); anything
#: far larger is not one, and is neither fetched nor read into memory.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class Entry(NamedTuple):
    """One message waiting in the mailbox: its key (IMAP UID, POP3 number) and size."""

    key: str
    size: int


class Mailbox(Protocol):
    """A logged-in mailbox. Messages are settled one by one, after their outcome is stored."""

    def label(self, key: str) -> str:
        """How a message is named in what is said: `imaps://host:993/INBOX uid 7`."""
        ...

    def new_messages(self, limit: int | None) -> list[Entry]:
        """The first `limit` (None: all) messages to read, oldest first (IMAP: unseen; POP3:
        all)."""
        ...

    def fetch(self, key: str) -> bytes:
        """The whole message, without marking it read."""
        ...

    def settle(self, key: str, *, delete: bool) -> None:
        """Done with a message: IMAP flags it seen (and deleted, expunged, when `delete`);
        POP3 deletes it when `delete` (on a clean close) and otherwise leaves it."""
        ...

    def close(self) -> None:
        """Log out (POP3: this is when deletions take effect)."""
        ...


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate and host name verified, against `ca_file` or the system's store."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def open_mailbox(
    address: MailboxAddress, password: str, *, ca_file: Path | None, timeout: float
) -> Mailbox:
    """Connect and log in; MailboxUnavailable (naming the server and the problem) if not."""
    context = tls_context(ca_file)
    try:
        if address.protocol == "imap":
            return _ImapMailbox.connect(address, password, context, timeout)
        return _PopMailbox.connect(address, password, context, timeout)
    except MailboxUnavailable:
        raise
    except (OSError, imaplib.IMAP4.error, poplib.error_proto) as exc:
        raise MailboxUnavailable(str(address), _problem(exc)) from exc
    except UnicodeError as exc:
        # imaplib and poplib send the login as ASCII only.
        problem = "the user name or password has characters other than ASCII, which cannot be sent"
        raise MailboxUnavailable(str(address), problem) from exc


def _problem(exc: BaseException) -> str:
    """What went wrong, in words: the server's own reply when it gave one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    text = exc.args[0] if exc.args else exc
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    shown = re.sub(r"[\x00-\x1f\x7f]", " ", str(text)).strip()
    shown = shown.removeprefix("b'").removeprefix('b"').rstrip("'\"")
    return f"the server said: {shown[:300]}" if shown else type(exc).__name__


class _ImapMailbox:
    def __init__(self, address: MailboxAddress, client: imaplib.IMAP4) -> None:
        self._address = address
        self._client = client
        self._uidplus = "UIDPLUS" in client.capabilities

    @classmethod
    def connect(
        cls, address: MailboxAddress, password: str, context: ssl.SSLContext, timeout: float
    ) -> _ImapMailbox:
        client: imaplib.IMAP4
        if address.security == "ssl":
            client = imaplib.IMAP4_SSL(
                address.host, address.port, ssl_context=context, timeout=timeout
            )
        else:
            client = imaplib.IMAP4(address.host, address.port, timeout=timeout)
        try:
            if address.security == "starttls":
                client.starttls(ssl_context=context)
            client.login(address.username, password)
            status, data = client.select(_quoted(address.folder))
            if status != "OK":
                raise MailboxUnavailable(str(address), f"no folder {address.folder!r}: {data}")
        except BaseException:
            _quietly(client.shutdown)
            raise
        return cls(address, client)

    def label(self, key: str) -> str:
        return f"{self._address}/{self._address.folder} uid {key}"

    def new_messages(self, limit: int | None) -> list[Entry]:
        with _speaking(self._address):
            data = self._ok(self._client.uid("SEARCH", "UNSEEN"))
            found = b" ".join(d for d in data if isinstance(d, bytes))
            uids = sorted({int(uid) for uid in found.split()})[:limit]
            if not uids:
                return []
            # One FETCH for every size: a few thousand waiting messages are one round trip.
            reply = self._ok(
                self._client.uid("FETCH", ",".join(map(str, uids)), "(UID RFC822.SIZE)")
            )
        sizes = {}
        for line in _flat(reply):
            uid = re.search(rb"UID (\d+)", line)
            size = re.search(rb"RFC822\.SIZE (\d+)", line)
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return [Entry(str(uid), sizes[uid]) for uid in uids if uid in sizes]

    def fetch(self, key: str) -> bytes:
        with _speaking(self._address):
            reply = self._ok(self._client.uid("FETCH", key, "(BODY.PEEK[])"))
        for item in reply:
            if isinstance(item, tuple) and len(item) == 2:
                return bytes(item[1])
        raise MailboxUnavailable(str(self._address), f"message uid {key} could not be fetched")

    def settle(self, key: str, *, delete: bool) -> None:
        flags = r"(\Seen \Deleted)" if delete else r"(\Seen)"
        with _speaking(self._address):
            self._ok(self._client.uid("STORE", key, "+FLAGS.SILENT", flags))
            if delete:
                # UID EXPUNGE removes only this message, not others someone flagged \Deleted.
                self._ok(
                    self._client.uid("EXPUNGE", key) if self._uidplus else self._client.expunge()
                )

    def close(self) -> None:
        _quietly(self._client.logout)

    def _ok(self, reply: tuple[str, list[object]]) -> list[object]:
        status, data = reply
        if status != "OK":
            raise MailboxUnavailable(str(self._address), _problem(imaplib.IMAP4.error(data)))
        return data


class _PopMailbox:
    def __init__(self, address: MailboxAddress, client: poplib.POP3) -> None:
        self._address = address
        self._client = client

    @classmethod
    def connect(
        cls, address: MailboxAddress, password: str, context: ssl.SSLContext, timeout: float
    ) -> _PopMailbox:
        client: poplib.POP3
        if address.security == "ssl":
            client = _POP3_SSL(address.host, address.port, context=context, timeout=timeout)
        else:
            client = _POP3(address.host, address.port, timeout=timeout)
        try:
            if address.security == "starttls":
                client.stls(context=context)
            client.user(address.username)
            client.pass_(password)
        except BaseException:
            _quietly(client.close)
            raise
        return cls(address, client)

    def label(self, key: str) -> str:
        return f"{self._address} message {key}"

    def new_messages(self, limit: int | None) -> list[Entry]:
        with _speaking(self._address):
            _, listing, _ = self._client.list()
        entries = []
        for line in listing[:limit]:
            number, _, size = line.partition(b" ")
            entries.append(Entry(number.decode(), int(size or 0)))
        return entries

    def fetch(self, key: str) -> bytes:
        with _speaking(self._address):
            _, lines, _ = self._client.retr(int(key))
        return b"\r\n".join(lines) + b"\r\n"

    def settle(self, key: str, *, delete: bool) -> None:
        if delete:
            with _speaking(self._address):
                self._client.dele(int(key))

    def close(self) -> None:
        # QUIT is what commits the DELEs: a failure here leaves every message for next time.
        with _speaking(self._address):
            self._client.quit()


def _read_line(self: poplib.POP3) -> tuple[bytes, int]:
    """poplib's own line reader, with room for a line as long as a message we read: its limit
    (2,048 bytes) fails the whole session on one long HTML line in a returned message, and
    that message would block the mailbox on every poll."""
    line = self.file.readline(MAX_MESSAGE_BYTES + 1)
    if len(line) > MAX_MESSAGE_BYTES:
        raise poplib.error_proto("line too long")
    if not line:
        raise poplib.error_proto("-ERR EOF")
    if line.endswith(b"\r\n"):
        return line[:-2], len(line)
    return line[:-1] if line.endswith(b"\n") else line, len(line)


class _POP3(poplib.POP3):
    _getline = _read_line


class _POP3_SSL(poplib.POP3_SSL):
    _getline = _read_line


@contextmanager
def _speaking(address: MailboxAddress) -> Iterator[None]:
    """A dropped connection or a refusal mid-session: MailboxUnavailable, naming the server."""
    try:
        yield
    except (OSError, imaplib.IMAP4.error, poplib.error_proto) as exc:
        raise MailboxUnavailable(str(address), _problem(exc)) from exc


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flat(reply: list[object]) -> list[bytes]:
    out: list[bytes] = []
    for item in reply:
        if isinstance(item, tuple):
            out.extend(bytes(part) for part in item if isinstance(part, bytes))
        elif isinstance(item, bytes):
            out.append(item)
    return out


def _quietly(close: Callable[[], object]) -> None:
    with suppress(OSError, imaplib.IMAP4.error, poplib.error_proto):
        close()
