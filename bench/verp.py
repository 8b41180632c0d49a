"""CPU per email of the VERP return path: the token alone, and a whole compose with and without it.

    .venv/bin/python bench/verp.py                 # day01, 5,000 subscribers
    .venv/bin/python bench/verp.py --count 20000

Medians of this thread's CPU time over `count` calls, each for a different subscriber, after
a warm-up (see bench/compose_cpu.py, whose composer and subscribers this reuses).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.compose_cpu import NOW, make_composer, median_us, recipient  # noqa: E402 - after the path is set
from campaign.content.compose import Composer  # noqa: E402 - after the path is set
from campaign.domain.verp import DELIVERY, ReturnPaths  # noqa: E402 - after the path is set

SECRET = "bench-secret-key-of-at-least-32-characters"  # noqa: S105 - a bench, no real mail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", default="day01")
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    paths = ReturnPaths(SECRET, "example.org")
    plain = make_composer()
    signed = make_composer()
    signed.return_paths = paths
    step = plain.plan.step_by_key(args.step)
    if step is None:
        raise SystemExit(f"no step {args.step!r}")
    people = [recipient(n) for n in range(args.count + 100)]
    idn = [replace(p, email=p.email.replace("example.org", "xn--strae-oqa.de")) for p in people]

    def token(n: int) -> str:
        return paths.return_path(DELIVERY, n + 1, people[n].email)

    def token_idn(n: int) -> str:
        return paths.return_path(DELIVERY, n + 1, idn[n].email)

    def compose_with(composer: Composer) -> Callable[[int], object]:
        def call(n: int) -> object:
            return composer.compose(
                step, people[n], message_id=f"<{n}@example.org>", now=NOW, delivery_id=n + 1
            )

        return call

    print(f"median CPU us per email over {args.count} subscribers, step {args.step}")
    print(f"return path alone        {median_us(token, args.count):8.2f}")
    print(f"return path, A-label      {median_us(token_idn, args.count):8.2f}")
    without = median_us(compose_with(plain), args.count)
    with_verp = median_us(compose_with(signed), args.count)
    print(f"compose, MAIL_FROM       {without:8.1f}")
    print(f"compose, VERP            {with_verp:8.1f}")


if __name__ == "__main__":
    main()
