"""DKIM signing of composed messages: the signature is made over the exact bytes the
transport sends (CRLF lines; dot-stuffing is undone by the receiving server).

dkimpy parses, canonicalizes and folds, and hashes the headers; OpenSSL (`cryptography`)
makes the signature over that hash with a key loaded once, where dkimpy would re-read the PEM
and do RSA in pure Python on every email (RSA-2048 now costs a fifth to a third of the CPU
it did: docs/performance.md section 11). The header is the one `dkim.sign` makes, byte for
byte (tests/unit/test_dkim_same_bytes.py).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from campaign.clock import Clock, SystemClock
from campaign.content.dkim_keys import SigningKey, read_signing_key
from campaign.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

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
_HEADER_NAME = b"DKIM-Signature"


@dataclass(frozen=True)
class DkimSigner:
    """Signs messages for `domain` with the key published at `selector._domainkey.domain`;
    `clock` gives the signature's timestamp (t=)."""

    domain: str
    selector: str
    key: SigningKey
    clock: Clock = field(default_factory=SystemClock, repr=False, compare=False)
    #: `key` as OpenSSL signs with it, loaded once here rather than once per email.
    _private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_private", _openssl_key(self.key))

    def sign(self, message: bytes) -> bytes:
        """`message` with a DKIM-Signature header on top (relaxed/relaxed, rsa- or
        ed25519-sha256) covering those of SIGNED_HEADERS it carries, and its body.

        The same bytes as `dkim.sign(message, selector, domain, key.private,
        canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=key.algorithm,
        include_headers=present_signed_headers(message))` at the same second: its steps
        (DKIM.sign, then DomainSigner.gen_header), with dkimpy's own helpers, but the signature
        made by OpenSSL. A message without From raises dkim.ParameterError, as dkim.sign does.
        """
        import dkim
        from dkim.canonicalization import CanonicalizationPolicy

        headers, body = dkim.rfc822_parse(message)
        include = tuple(name.lower() for name in present_signed_headers(message))
        if b"from" not in include:
            raise dkim.ParameterError("The From header field MUST be signed")
        policy = CanonicalizationPolicy.from_c_value(b"/".join(_CANONICALIZATION))
        body_hash = hashlib.sha256(policy.canonicalize_body(body)).digest()
        domain = self.domain.encode("ascii")
        fields = [
            (b"v", b"1"),
            (b"a", self.key.algorithm),
            (b"c", policy.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", self.selector.encode("ascii")),
            (b"t", str(int(self.clock.now().timestamp())).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(body_hash)),
            (b"b", b"0" * 60),  # dkimpy's placeholder: b= folds onto a line of its own
        ]
        # gen_header: hash the signed headers, then the signature header with b= empty.
        unsigned = dkim.fold(_joined(fields), namelen=len(_HEADER_NAME), linesep=b"\r\n")
        unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
        header_hash = hashlib.sha256()
        dkim.hash_headers(
            header_hash,
            policy,
            policy.canonicalize_headers(headers),
            include,
            (_HEADER_NAME, b" " + unsigned),
            dict(fields),
        )
        fields[-1] = (b"b", base64.b64encode(self._signature(header_hash.digest())))
        signed: bytes = dkim.fold(
            _joined(fields) + b"\r\n", namelen=len(_HEADER_NAME), linesep=b"\r\n"
        )
        return _HEADER_NAME + b": " + signed + message

    def _signature(self, digest: bytes) -> bytes:
        """rsa-sha256: RSASSA-PKCS1-v1_5 over the SHA-256 `digest`; ed25519-sha256: Ed25519
        over the digest itself (RFC 8463), as dkimpy's gen_header signs."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

        if isinstance(self._private, rsa.RSAPrivateKey):
            return self._private.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return self._private.sign(digest)


def _joined(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(tag) for tag in fields)


def _openssl_key(key: SigningKey) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """The private half of `key` as `cryptography` holds it (read_signing_key checked it)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if key.kind == "ed25519":
        return ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(key.private))
    private = load_pem_private_key(key.private, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"an RSA SigningKey holding a {type(private).__name__}")
    return private


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
