"""A real Dovecot (IMAP and POP3, plain, STARTTLS and implicit TLS) on loopback ports, with one
user whose maildir lives in a scratch folder: started by the tests, stopped after each."""

from __future__ import annotations

import contextlib
import getpass
import imaplib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tests.smtp_server import free_port

USER = "bounces@example.org"
PASSWORD = "mailbox-password-0123"


def dovecot_binary() -> str | None:
    """Dovecot's master binary, if installed (Debian: dovecot-imapd, dovecot-pop3d)."""
    found = shutil.which("dovecot")
    if found:
        return found
    return "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None


def _users() -> tuple[str, str, int, int]:
    """(login user, internal user, mail uid, mail gid): as root, Dovecot's unprivileged users
    (it refuses to run mail as root); otherwise all of it as whoever runs the tests."""
    if os.geteuid() != 0:
        me = getpass.getuser()
        return me, me, os.getuid(), os.getgid()
    names = {entry.pw_name: entry for entry in pwd.getpwall()}
    login = "dovenull" if "dovenull" in names else "nobody"
    internal = "dovecot" if "dovecot" in names else "nobody"
    return login, internal, names["nobody"].pw_uid, names["nobody"].pw_gid


@dataclass
class Dovecot:
    """One Dovecot master process and its ports; `ca_file` is the CA its certificate is from."""

    binary: str
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dovecot-")))
    imap_port: int = field(default_factory=free_port)
    imaps_port: int = field(default_factory=free_port)
    pop3_port: int = field(default_factory=free_port)
    pop3s_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def start(self) -> None:
        # The mail processes run as an unprivileged user: the folder must be theirs to enter.
        login, internal, uid, gid = _users()
        self.folder.chmod(0o755)
        for sub in ("run", "state", "home", "Maildir"):
            (self.folder / sub).mkdir()
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        issued = ca.issue_cert("127.0.0.1", "localhost")
        issued.private_key_and_cert_chain_pem.write_to_path(str(self.folder / "server.pem"))
        (self.folder / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        for sub in ("home", "Maildir"):
            os.chown(self.folder / sub, uid, gid)
        f = self.folder
        (f / "dovecot.conf").write_text(
            f"""
protocols = imap pop3
listen = 127.0.0.1
base_dir = {f}/run
state_dir = {f}/state
log_path = {f}/dovecot.log
info_log_path = {f}/dovecot.log
ssl = yes
ssl_cert = <{f}/server.pem
ssl_key = <{f}/server.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = {login}
default_internal_user = {internal}
mail_location = maildir:{f}/Maildir
passdb {{
  driver = passwd-file
  args = {f}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={f}/home
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
  chroot =
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
  chroot =
}}
"""
        )
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(f / "dovecot.conf")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        for port in (self.imap_port, self.imaps_port, self.pop3_port, self.pop3s_port):
            while not _listening(port):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Dovecot did not start: {self.log()}")
                time.sleep(0.05)

    def log(self) -> str:
        output = b""
        if self.process and self.process.poll() is not None and self.process.stdout:
            output = self.process.stdout.read()
        path = self.folder / "dovecot.log"
        return output.decode(errors="replace") + (path.read_text() if path.exists() else "")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout:
            self.process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, scheme: str, *, port: int, query: str = "") -> str:
        """BOUNCE_MAILBOX_URL for this server."""
        return f"{scheme}://bounces%40example.org@127.0.0.1:{port}{query}"

    def deliver(self, *messages: bytes) -> None:
        """Put messages in the inbox, unseen, as the mail server's delivery agent would."""
        with self._imap() as client:
            for message in messages:
                status, data = client.append("INBOX", "", None, message)
                assert status == "OK", data

    def flags(self) -> list[set[str]]:
        """The \\Seen and \\Deleted flags of every message still in the inbox, in order."""
        with self._imap() as client:
            status, count = client.select("INBOX", readonly=True)
            assert status == "OK", count
            if count[0] == b"0":
                return []
            status, data = client.fetch("1:*", "(FLAGS)")
            assert status == "OK", data
        kept = {"\\Seen", "\\Deleted"}
        out = []
        for line in data:
            assert isinstance(line, bytes)
            flags = line.split(b"FLAGS (", 1)[1].split(b")", 1)[0].decode().split()
            out.append(kept & set(flags))
        return out

    @contextlib.contextmanager
    def _imap(self) -> contextlib.Generator[imaplib.IMAP4, None, None]:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        client.login(USER, PASSWORD)
        try:
            yield client
        finally:
            client.logout()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
