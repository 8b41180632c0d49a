"""CPU per email of DKIM signing (dkimpy), RSA-2048 against Ed25519, for a lesson and the welcome.

    .venv/bin/python bench/dkim_signing.py            # day01 and welcome; 500 emails each
    .venv/bin/python bench/dkim_signing.py --steps day15 --count 2000

Each figure is the median CPU time of this thread over `count` calls, each on a different
composed email (so the body hash is never of the same bytes), after compose_cpu's warm-up.
"key parse" is the part of an RSA signature spent re-reading the PEM key, which dkimpy does
on every call.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dkim.crypto

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.compose_cpu import NOW, make_composer, median_us, recipient  # noqa: E402 - after the path is set
from campaign.content.compose import Composer  # noqa: E402 - after the path is set
from campaign.content.dkim import DkimSigner  # noqa: E402 - after the path is set
from campaign.content.dkim_keys import new_signing_key  # noqa: E402 - after the path is set

WARM_UP = 50  # as compose_cpu's median_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", default=["day01", "welcome"])
    parser.add_argument("--count", type=int, default=500)
    args = parser.parse_args()

    composer = make_composer()
    signers = {
        kind: DkimSigner("example.org", "s1", new_signing_key(kind)[1])
        for kind in ("rsa", "ed25519")
    }
    print(f"median CPU us per email over {args.count} emails")
    print(f"{'step':8} {'size':>7} {'compose':>8} {'rsa-2048':>9} {'ed25519':>8} {'key parse':>9}")
    for key in args.steps:
        size, row = measure(composer, signers, key, args.count)
        print(
            f"{key:8} {size:>5}KiB {row['compose']:8.0f} {row['rsa']:9.0f} "
            f"{row['ed25519']:8.0f} {row['parse']:9.0f}"
        )
    print()
    print("compose   Composer.compose, unsigned (render, MIME, unsubscribe link)")
    print("rsa-2048  DkimSigner.sign: relaxed/relaxed, rsa-sha256 (dkimpy's pure-Python RSA)")
    print("ed25519   DkimSigner.sign: relaxed/relaxed, ed25519-sha256 (PyNaCl)")


def measure(
    composer: Composer, signers: dict[str, DkimSigner], key: str, count: int
) -> tuple[int, dict[str, float]]:
    """The email's size in KiB, and the median CPU of composing it and signing it each way."""
    step = composer.plan.step_by_key(key)
    if step is None:
        raise SystemExit(f"no step {key!r} in {composer.plan.source}")

    def compose(n: int) -> bytes:
        return composer.compose(step, recipient(n), message_id=f"<{n}@example.org>", now=NOW).data

    emails = [compose(n) for n in range(count + WARM_UP)]
    rsa, ed = signers["rsa"], signers["ed25519"]
    row = {
        "compose": median_us(compose, count),
        "rsa": median_us(lambda n: rsa.sign(emails[n]), count),
        "ed25519": median_us(lambda n: ed.sign(emails[n]), count),
        "parse": median_us(lambda n: dkim.crypto.parse_pem_private_key(rsa.key.private), count),
    }
    return len(emails[0]) // 1024, row


if __name__ == "__main__":
    main()
