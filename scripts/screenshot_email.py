"""Screenshots of one email as a phone (375 px) and a desktop (800 px) show it.

    .venv/bin/python scripts/screenshot_email.py welcome --out docs/
    .venv/bin/python scripts/screenshot_email.py 3 --out /tmp/shots

Renders the step for a sample subscriber with the current configuration (like
`campaign preview`) and drives Debian's Chromium with playwright. Writes
`<out>/<step>-375.png` and `<out>/<step>-800.png`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("step", help="a step key or a day number")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        html = Path(scratch) / "email.html"
        # Our own CLI, with the step name as one argv item (no shell): nothing to inject into.
        rendered = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "campaign", "preview", args.step, "--out", str(html)],
            capture_output=True,
            text=True,
            check=False,
        )
        if rendered.returncode != 0:
            print(rendered.stderr, file=sys.stderr, end="")
            return rendered.returncode
        args.out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for width in (375, 800):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(html.as_uri())
                target = args.out / f"{args.step}-{width}.png"
                page.screenshot(path=str(target), full_page=True)
                print(target)
                page.close()
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
