"""DKIM signing of composed messages: the signature is made over the exact bytes the
transport sends (CRLF lines; dot-stuffing is undone by the receiving server)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from campaign.content.dkim_keys import SigningKey, read_signing_key
from campaign.settings import Settings

log = logging.getLogger("campaign.dkim")

#: Signed when present, in this order: Gmail's one-click unsubscribe needs the List-Unsubscribe
#: pair signed, and signing the MIME headers keeps a relay from re-labelling the body.
SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
)
_SIGNED = {name.lower().encode("ascii"): name.encode("ascii") for name in SIGNED_HEADERS}
_CANONICALIZATION = (b"relaxed", b"relaxed")


@dataclass(frozen=True)
class DkimSigner:
    """Signs messages for `domain` with the key published at `selector._domainkey.domain`."""

    domain: str
    selector: str
    key: SigningKey

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header on top (relaxed/relaxed, rsa- or
        ed25519-sha256) covering those of SIGNED_HEADERS it carries, and its body."""
        import dkim

        signature: bytes = dkim.sign(
            message,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.key.private,
            canonicalize=_CANONICALIZATION,
            signature_algorithm=self.key.algorithm,
            include_headers=present_signed_headers(message),
            linesep=b"\r\n",
        )
        return signature + message


def present_signed_headers(message: bytes) -> list[bytes]:
    """The names of SIGNED_HEADERS that `message`'s header block holds, in SIGNED_HEADERS order."""
    head = message.split(b"\r\n\r\n", 1)[0]
    names = {
        line.split(b":", 1)[0].strip().lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in b" \t"
    }
    return [name for lower, name in _SIGNED.items() if lower in names]


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """The signer DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY_FILE describe, None when unset.

    Reads and parses the key now (ConfigError if it cannot), and warns once when the DKIM
    domain does not align with MAIL_FROM's: DMARC then passes on DKIM for no mailbox provider.
    """
    if not (settings.dkim_domain and settings.dkim_selector and settings.dkim_private_key_file):
        return None
    key = read_signing_key(settings.dkim_private_key_file)
    from_domain = settings.sender_address.rpartition("@")[2].lower()
    if not aligned(settings.dkim_domain, from_domain):
        log.warning(
            "DKIM_DOMAIN %s does not align with the From domain %s: DMARC will not pass on "
            "this signature (sign with %s or a parent domain of it)",
            settings.dkim_domain,
            from_domain,
            from_domain,
        )
    return DkimSigner(settings.dkim_domain, settings.dkim_selector, key)


def aligned(dkim_domain: str, from_domain: str) -> bool:
    """DMARC's relaxed alignment, approximately: the same domain, or one a subdomain of the
    other (the organisational domain would need the public suffix list)."""
    d, f = dkim_domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    return d == f or f.endswith("." + d) or d.endswith("." + f)
