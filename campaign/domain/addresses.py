"""Email addresses as SMTP carries them: the domain as its IDNA 2008 A-label, and whether the
local part needs SMTPUTF8 (RFC 6531). Pure: no I/O; the stored form is `people.person_fields`'."""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass

import idna

from campaign.errors import UnsendableAddress


@dataclass(frozen=True)
class WireAddress:
    """An address as the envelope (MAIL FROM, RCPT TO) and the To header write it."""

    local: str
    #: ASCII: an internationalised domain as its A-label (xn--...).
    domain: str

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def smtputf8(self) -> bool:
        """A non-ASCII local part: only a relay that offers SMTPUTF8 can take it."""
        return not self.local.isascii()


@functools.lru_cache(maxsize=4096)  # IDNA is slow per call, and subscribers share domains
def ascii_domain(domain: str) -> str:
    """`domain` as an SMTP envelope writes it: an internationalised one as its A-label under
    IDNA 2008 with UTS 46 mapping, non-transitional (straße.de is xn--strae-oqa.de, never
    strasse.de); an ASCII one (or an [IP] literal) as it is.

    Raise UnsendableAddress when the domain has no IDNA form.
    """
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:  # InvalidCodepoint and friends are IDNAErrors too
        raise UnsendableAddress(domain, f"the domain has no IDNA form ({exc})") from exc


def wire_address(email: str) -> WireAddress:
    """The address `email` (as stored) is sent to.

    Raise UnsendableAddress for what must not reach an SMTP command (stored bypassing the
    signup checks): no "@", an empty part, a control character or a line break, a local
    part that is not a dot-atom (quoting it would let a parser read another address out of
    it: `victim@x.test y@example.org`), or a domain with no IDNA form.
    """
    local, at, domain = email.rpartition("@")
    if not at or not local or not domain:
        raise UnsendableAddress(email, "it has no local part and domain around an @")
    if email.isascii() and email.isprintable() and _DOT_ATOM.fullmatch(local):
        return WireAddress(local, _checked_domain(email, domain))  # the common case
    if any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in email):
        raise UnsendableAddress(email, "it contains a control character or a line break")
    local = unicodedata.normalize("NFC", local)
    if not _DOT_ATOM.fullmatch(local):
        raise UnsendableAddress(email, "its local part would need quoting (spaces, quotes, @)")
    return WireAddress(local, _checked_domain(email, ascii_domain(domain)))


#: RFC 5322 dot-atom (with RFC 6531's UTF-8): no specials, no white space, no empty label.
_DOT_ATOM = re.compile(r'[^\s()<>\[\]:;@\\,."]+(?:\.[^\s()<>\[\]:;@\\,."]+)*')


def _checked_domain(email: str, domain: str) -> str:
    if not _DOT_ATOM.fullmatch(domain):
        raise UnsendableAddress(email, "its domain is not a host name")
    return domain


def email_hash(email: str) -> str:
    """The suppression key of an address: SHA-256 of its lowercase form."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()
