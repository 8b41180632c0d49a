"""The scheduler as a service: a sending pass every TICK_SECONDS until SIGTERM, optionally with
the signup pages in the same process. Shared by `campaign run` and run_scheduler.py."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime

from campaign.clock import Clock, FixedClock, SystemClock, parse_instant
from campaign.delivery.scheduler import Service
from campaign.engine import Engine, make_service, require_plan_identity
from campaign.errors import CampaignError
from campaign.interfaces.admin import start_side_services
from campaign.interfaces.cli.common import parse_host_port
from campaign.interfaces.web import serve_in_thread
from campaign.logs import configure_logging
from campaign.settings import Settings, load_environment

DESCRIPTION = (
    "Run the campaign engine as a service: a sending pass every TICK_SECONDS until SIGTERM."
)
HTTP_HELP = "also serve the signup and unsubscribe pages and /healthz (/metrics: ADMIN_LISTEN)"

log = logging.getLogger("campaign.scheduler")


def run(*, once: bool, now: datetime | None, http: tuple[str, int] | None) -> int:
    """Run the service; its exit code. Raises CampaignError or OSError for the caller to report."""
    settings = Settings.from_env(load_environment())
    configure_logging(settings.log_level, settings.log_format)
    for warning in settings.start_warnings():
        log.warning("%s", warning)
    clock: Clock = FixedClock(now) if now else SystemClock()
    app = Engine.from_settings(settings, clock=clock)
    app.require_schema()
    require_plan_identity(app)
    service = make_service(app)
    with app.sending(), service:
        if once:
            result = service.run_once()
            app.webhook_deliverer.deliver_due()  # after the pass: never before a send
            return 1 if result.error else 0
        app.webhook_deliverer.start()
        try:
            _serve(app, service, http)
        finally:
            app.webhook_deliverer.stop()
    return 0


def _serve(app: Engine, service: Service, http: tuple[str, int] | None) -> None:
    """Passes until stopped, with the pages (and the operators' side) when `http` is given."""
    if not http:
        service.run_forever()
        return
    server, thread = serve_in_thread(app, *http)
    side = start_side_services(app)
    try:
        service.run_forever()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        side.close()


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _host_port(text: str) -> tuple[str, int]:
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """run_scheduler.py: the same options and exit codes as `campaign run`."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--once", action="store_true", help="drain what is due and exit")
    parser.add_argument("--now", type=_instant, help="act as if it were this ISO-8601 instant")
    parser.add_argument("--http", type=_host_port, metavar="HOST:PORT", help=HTTP_HELP)
    args = parser.parse_args(argv)
    try:
        return run(once=args.once, now=args.now, http=args.http)
    except CampaignError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file or folder it needs (the SQLite folder): one line, no trace
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
