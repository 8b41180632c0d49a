#!/usr/bin/env python3
"""Run the campaign engine as a service: a sending pass every TICK_SECONDS until SIGTERM.

python run_scheduler.py            # run until stopped
python run_scheduler.py --once     # drain what is due now and exit (cron, tests)
python run_scheduler.py --once --now 2026-12-01T07:00:00+00:00
python run_scheduler.py --http 127.0.0.1:8000   # also serve the signup pages in this process
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from campaign.clock import Clock, FixedClock, SystemClock, parse_instant
from campaign.engine import Engine, make_service, require_plan_identity
from campaign.errors import CampaignError
from campaign.interfaces.admin import start_side_services
from campaign.interfaces.cli import configure_logging, load_settings
from campaign.interfaces.web import serve_in_thread


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8000)")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--once", action="store_true", help="drain what is due and exit")
    parser.add_argument("--now", type=_instant, help="act as if it were this ISO-8601 instant")
    parser.add_argument(
        "--http",
        type=_host_port,
        metavar="HOST:PORT",
        help="also serve the signup and unsubscribe pages and /healthz (/metrics: ADMIN_LISTEN)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        clock: Clock = FixedClock(args.now) if args.now else SystemClock()
        app = Engine.from_settings(settings, clock=clock)
        app.require_schema()
        require_plan_identity(app)
        service = make_service(app)
        with app.sending(), service:
            if args.once:
                result = service.run_once()
                return 1 if result.error else 0
            if args.http:
                server, thread = serve_in_thread(app, *args.http)
                side = start_side_services(app)
                try:
                    service.run_forever()
                finally:
                    server.should_exit = True
                    thread.join(timeout=10)
                    side.close()
            else:
                service.run_forever()
    except CampaignError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file or folder it needs (the SQLite folder): one line, no trace
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
