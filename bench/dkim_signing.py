"""CPU per email of DKIM signing, dkimpy alone (before) against DkimSigner (after: dkimpy
canonicalizes and hashes, OpenSSL signs), RSA-2048 and Ed25519, for a lesson and the welcome.

    .venv/bin/python bench/dkim_signing.py            # day01 and welcome; 500 emails each
    .venv/bin/python bench/dkim_signing.py --steps day15 --count 2000

Each figure is the median CPU time of this thread over `count` calls, each on a different
composed email (so the body hash is never of the same bytes), after compose_cpu's warm-up.
"before" is `dkim.sign` as DkimSigner called it until then: it re-reads the PEM key on every
call and does RSA in pure Python (Ed25519 through PyNaCl).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dkim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.compose_cpu import NOW, make_composer, median_us, recipient  # noqa: E402 - after the path is set
from campaign.content.compose import Composer  # noqa: E402 - after the path is set
from campaign.content.dkim import DkimSigner, present_signed_headers  # noqa: E402 - after the path is set
from campaign.content.dkim_keys import KeyType, new_signing_key  # noqa: E402 - after the path is set

WARM_UP = 50  # as compose_cpu's median_us
KINDS: tuple[KeyType, ...] = ("rsa", "ed25519")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", default=["day01", "welcome"])
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()

    composer = make_composer()
    signers = {kind: DkimSigner("example.org", "s1", new_signing_key(kind)[1]) for kind in KINDS}
    print(f"median CPU us per email over {args.count} emails")
    print(
        f"{'step':8} {'size':>7} {'compose':>8} {'rsa before':>11} {'rsa after':>10} "
        f"{'ed before':>10} {'ed after':>9}"
    )
    for key in args.steps:
        size, row = measure(composer, signers, key, args.count)
        print(
            f"{key:8} {size:>5}KiB {row['compose']:8.0f} {row['rsa before']:11.0f} "
            f"{row['rsa after']:10.0f} {row['ed25519 before']:10.0f} {row['ed25519 after']:9.0f}"
        )
    print()
    print("compose   Composer.compose, unsigned (render, MIME, unsubscribe link)")
    print("before    dkim.sign: relaxed/relaxed; RSA in pure Python, Ed25519 through PyNaCl")
    print("after     DkimSigner.sign: dkimpy's canonicalization and hashing, OpenSSL's signature")


def dkimpy_sign(signer: DkimSigner, message: bytes) -> bytes:
    """The signed message as DkimSigner made it before: dkimpy does everything."""
    header: bytes = dkim.sign(
        message,
        signer.selector.encode("ascii"),
        signer.domain.encode("ascii"),
        signer.key.private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=signer.key.algorithm,
        include_headers=present_signed_headers(message),
        linesep=b"\r\n",
    )
    return header + message


def measure(
    composer: Composer, signers: dict[KeyType, DkimSigner], key: str, count: int
) -> tuple[int, dict[str, float]]:
    """The email's size in KiB, and the median CPU of composing it and signing it each way."""
    step = composer.plan.step_by_key(key)
    if step is None:
        raise SystemExit(f"no step {key!r} in {composer.plan.source}")

    def compose(n: int) -> bytes:
        return composer.compose(step, recipient(n), message_id=f"<{n}@example.org>", now=NOW).data

    emails = [compose(n) for n in range(count + WARM_UP)]
    row = {"compose": median_us(compose, count)}
    for kind in KINDS:
        signer = signers[kind]
        row[f"{kind} before"] = median_us(lambda n: dkimpy_sign(signer, emails[n]), count)  # noqa: B023 - called at once
        row[f"{kind} after"] = median_us(lambda n: signer.sign(emails[n]), count)  # noqa: B023 - called at once
    return len(emails[0]) // 1024, row


if __name__ == "__main__":
    main()
