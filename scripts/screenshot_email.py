"""Screenshots of one email as a phone (375 px) and a desktop (800 px) show it.

    .venv/bin/python scripts/screenshot_email.py welcome --out docs/
    .venv/bin/python scripts/screenshot_email.py 3 --out /tmp/shots --dark

Renders the step for a sample subscriber with the current configuration (like
`campaign preview`) and drives Debian's Chromium with playwright. Writes
`<out>/<step>-375.png` and `<out>/<step>-800.png`; with `--dark` also
`<out>/<step>-375-dark.png` and `<out>/<step>-800-dark.png`, rendered as a mail app in dark
mode shows it (the page asks for a dark scheme, and Chromium darkens what does not answer).
Images under `/images/` are read from `templates/emails/images/`, so no server is needed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
#: Chromium's own "auto dark mode", as Gmail's apps invert an email that sets no dark colors.
FORCED_DARK = ["--force-dark-mode", "--enable-features=WebContentsForceDark"]
IMAGES = Path(__file__).resolve().parent.parent / "templates" / "emails" / "images"


def serve_images(route: Route) -> None:
    """Answer an email's image request from the content folder, as the web app would."""
    name = Path(urlsplit(route.request.url).path).name
    local = IMAGES / name
    if local.is_file() and local.parent == IMAGES:
        route.fulfill(path=str(local))
    else:
        route.fulfill(status=404, body="not found")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("step", help="a step key or a day number")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--dark", action="store_true", help="also take forced-dark shots")
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
            for dark in [False, True] if args.dark else [False]:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=ARGS + (FORCED_DARK if dark else [])
                )
                for width in (375, 800):
                    page = browser.new_page(
                        viewport={"width": width, "height": 900},
                        color_scheme="dark" if dark else "light",
                    )
                    page.route("**/images/*", serve_images)
                    page.goto(html.as_uri())
                    page.wait_for_load_state("networkidle")
                    suffix = "-dark" if dark else ""
                    target = args.out / f"{args.step}-{width}{suffix}.png"
                    page.screenshot(path=str(target), full_page=True)
                    print(target)
                    page.close()
                browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
