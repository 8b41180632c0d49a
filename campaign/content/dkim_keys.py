"""DKIM keys: read a private key file (PEM RSA, PEM or raw Ed25519) into the form dkimpy signs
with, make a new key pair, and write the DNS TXT record that publishes its public half."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from campaign.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

KeyType = Literal["rsa", "ed25519"]
#: verifiers refuse shorter RSA keys (RFC 8301); 2048 is what keygen makes and Gmail expects.
MIN_RSA_BITS = 1024
RSA_BITS = 2048
#: a TXT record is made of strings of at most 255 characters each.
_TXT_STRING = 255


@dataclass(frozen=True)
class SigningKey:
    """A private key as dkimpy takes it: PKCS#1 PEM (RSA) or a base64 seed (Ed25519)."""

    kind: KeyType
    private: bytes = b""
    #: the `p=` of the DNS record: SubjectPublicKeyInfo (RSA) or the raw key (Ed25519), base64.
    public: str = ""

    def __repr__(self) -> str:  # the private key never reaches a log
        return f"SigningKey(kind={self.kind!r}, public={self.public[:16]!r}...)"

    @property
    def algorithm(self) -> bytes:
        return b"rsa-sha256" if self.kind == "rsa" else b"ed25519-sha256"


def read_signing_key(path: Path) -> SigningKey:
    """The key in `path`; ConfigError naming DKIM_PRIVATE_KEY_FILE if unreadable or not a key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("DKIM_PRIVATE_KEY_FILE", f"cannot read {path}: {exc.strerror}") from exc
    try:
        return parse_signing_key(data)
    except ValueError as exc:
        raise ConfigError("DKIM_PRIVATE_KEY_FILE", f"{path}: {exc}") from exc


def parse_signing_key(data: bytes) -> SigningKey:
    """An RSA or Ed25519 private key from PEM (PKCS#1 or PKCS#8, unencrypted), or an Ed25519
    seed in base64 as dkimpy's `dknewkey` writes it; ValueError saying what is wrong."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if b"-----BEGIN" not in data:
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except binascii.Error:
            seed = b""
        if len(seed) != 32:
            raise ValueError("not a PEM private key nor a base64 Ed25519 key")
        return _ed25519_key(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a readable unencrypted PEM private key ({exc})") from exc
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _ed25519_key(key)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key of {key.key_size} bits; DKIM needs {RSA_BITS}")
        return _rsa_key(key)
    raise ValueError(f"a {type(key).__name__}: DKIM signs with RSA or Ed25519 keys only")


def new_signing_key(kind: KeyType) -> tuple[bytes, SigningKey]:
    """A fresh key pair: the PEM to store (PKCS#8) and the key it holds."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, parse_signing_key(pem)


def dns_record(selector: str, domain: str, key: SigningKey) -> str:
    """The zone-file line to publish, the value cut into TXT strings of at most 255 characters."""
    value = f"v=DKIM1; k={key.kind}; p={key.public}"
    strings = [value[i : i + _TXT_STRING] for i in range(0, len(value), _TXT_STRING)]
    quoted = " ".join(f'"{s}"' for s in strings)
    return f"{selector}._domainkey.{domain}. IN TXT {quoted}"


def _rsa_key(key: rsa.RSAPrivateKey) -> SigningKey:
    from cryptography.hazmat.primitives import serialization

    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, what dkimpy parses
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey("rsa", private, base64.b64encode(public).decode("ascii"))


def _ed25519_key(key: ed25519.Ed25519PrivateKey) -> SigningKey:
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes_raw()  # RFC 8463: the raw 32 bytes
    return SigningKey("ed25519", base64.b64encode(seed), base64.b64encode(public).decode("ascii"))
