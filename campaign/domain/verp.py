"""VERP return paths: `bounces+<token>@<domain>`, where the token names the email (a delivery,
or a confirmation) and is signed together with the address it went to, so that a bounce report
is believed only for a message we sent to that very address. Pure: no database, no I/O."""

from __future__ import annotations

import hashlib
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
# Lowercase hex only (the id, then 20 digits of MAC): some MTAs change a local part's case.
_TOKEN = re.compile(r"([dc])([0-9a-f]{1,16})-([0-9a-f]{20})")
#: a return path anywhere in a header value; what follows "+" is checked by `parse`.
RETURN_PATH = re.compile(rf"(?<![\w.+-]){LOCAL_PART}\+([^@\s<>\"';,]{{1,64}})@", re.IGNORECASE)
_KEY_PURPOSE = b"campaign verp return path v1"


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


class ReturnPaths:
    """Signs and checks VERP tokens with a key derived from SECRET_KEY for this purpose only:
    no VERP token is a link token (unsubscribe, confirm, click), and no link token a VERP one."""

    def __init__(self, secret_key: str, domain: str) -> None:
        key = hmac.digest(secret_key.encode("utf-8"), _KEY_PURPOSE, "sha256")
        # Keyed once: each email then costs one copy and one SHA-256 of a short text.
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self.domain = domain

    def _mac(self, kind: str, ident: int, address: str) -> str:
        mac = self._keyed.copy()
        mac.update(f"{kind}.{ident}.{canonical_address(address)}".encode())
        return mac.digest()[:_MAC_BYTES].hex()

    def token(self, kind: str, ident: int, address: str) -> str:
        """`d1f-<20 hex digits>`: at most 38 characters of [0-9a-f-], a dot-atom anywhere."""
        if kind not in _KINDS or not 0 <= ident < 16**16:
            raise ValueError(f"no VERP token for {kind!r} {ident}")
        return f"{kind}{ident:x}-{self._mac(kind, ident, address)}"

    def return_path(self, kind: str, ident: int, address: str) -> str:
        """The envelope sender for one email: `bounces+TOKEN@domain` (local part <= 46)."""
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
    return TokenRef(kind, int(ident, 16), mac)


def tokens_in(text: str) -> list[str]:
    """Every `bounces+TOKEN@` token written in `text` (a header value), as written."""
    return RETURN_PATH.findall(text)
