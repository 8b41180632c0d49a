"""VERP return paths: `bounces+<token>@<domain>`, where the token names the email (a delivery,
or a confirmation) and is signed together with the address it went to, so that a bounce report
is believed only for a message we sent to that very address. Pure: no database, no I/O."""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass

#: the local part before the "+": every return path is `bounces+TOKEN@domain`.
LOCAL_PART = "bounces"
#: what a token names: a delivery of a plan step, or a confirmation email (by subscriber).
DELIVERY, CONFIRMATION = "d", "c"
_KINDS = (DELIVERY, CONFIRMATION)
# 10 bytes (80 bits) of HMAC-SHA256: far beyond guessing one address's token by mailing reports.
_MAC_BYTES = 10
# Lowercase only (base36 id, base32 MAC of 16 characters): some MTAs change a local part's case.
_TOKEN = re.compile(r"([dc])([0-9a-z]{1,13})-([a-z2-7]{16})")
#: a return path anywhere in a header value; what follows "+" is checked by `parse`.
RETURN_PATH = re.compile(rf"(?<![\w.+-]){LOCAL_PART}\+([^@\s<>\"';,]{{1,64}})@", re.IGNORECASE)
_KEY_PURPOSE = b"campaign verp return path v1"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class TokenRef:
    """What a well-formed token claims (not yet verified): its kind, id and MAC."""

    kind: str
    ident: int
    mac: str


def canonical_address(address: str) -> str:
    """The form an address is signed in: lowercase, IDNA A-labels as Unicode, so that a report
    naming `x@xn--strae-oqa.de` matches a delivery to `x@straße.de`."""
    address = address.strip().lower()
    if "xn--" not in address:
        return address
    local, _, domain = address.rpartition("@")
    labels = []
    for label in domain.split("."):
        if label.startswith("xn--"):
            label = _unicode_label(label)
        labels.append(label)
    return f"{local}@{'.'.join(labels)}"


def _unicode_label(label: str) -> str:
    try:
        return label[4:].encode("ascii").decode("punycode")
    except UnicodeError:
        return label  # not valid punycode: compared as written


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if not number:
            return digits


class ReturnPaths:
    """Signs and checks VERP tokens with a key derived from SECRET_KEY for this purpose only:
    no VERP token is a link token (unsubscribe, confirm, click), and no link token a VERP one."""

    def __init__(self, secret_key: str, domain: str) -> None:
        self._key = hmac.digest(
            secret_key.encode("utf-8"), b"campaign verp return path v1", "sha256"
        )
        self.domain = domain

    def _mac(self, kind: str, ident: int, address: str) -> str:
        payload = f"{kind}.{ident}.{canonical_address(address)}".encode()
        digest = hmac.digest(self._key, payload, "sha256")[:_MAC_BYTES]
        return base64.b32encode(digest).decode("ascii").lower()

    def token(self, kind: str, ident: int, address: str) -> str:
        """`d1z-<mac>`: at most 31 characters of [0-9a-z-], a dot-atom in any local part."""
        if kind not in _KINDS or ident < 0:
            raise ValueError(f"no VERP token for {kind!r} {ident}")
        return f"{kind}{_base36(ident)}-{self._mac(kind, ident, address)}"

    def return_path(self, kind: str, ident: int, address: str) -> str:
        """The envelope sender for one email: `bounces+TOKEN@domain` (local part <= 40)."""
        return f"{LOCAL_PART}+{self.token(kind, ident, address)}@{self.domain}"

    def verifies(self, ref: TokenRef, address: str) -> bool:
        """Whether `ref` was signed by us for an email to `address` (constant-time compare)."""
        return hmac.compare_digest(ref.mac, self._mac(ref.kind, ref.ident, address))


def parse(token: str) -> TokenRef | None:
    """The claims of a token that has the right shape; None for anything else (truncated...)."""
    found = _TOKEN.fullmatch(token.strip().lower())
    if found is None:
        return None
    kind, ident, mac = found.groups()
    return TokenRef(kind, int(ident, 36), mac)


def tokens_in(text: str) -> list[str]:
    """Every `bounces+TOKEN@` token written in `text` (a header value), as written."""
    return RETURN_PATH.findall(text)
