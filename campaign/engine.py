"""The composition root and public API (`Engine`): the only place that picks concrete classes
(clock, database, transport), and what a program embedding the engine calls."""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from campaign.clock import Clock, FixedClock, SystemClock
from campaign.content.compose import Composer
from campaign.content.dkim import signer_from_settings
from campaign.content.plan_check import check_catalog
from campaign.content.plan_check import check_plan as check_plan
from campaign.content.plan_check import shared_context as shared_context
from campaign.content.snapshot import Content, Contents, contents_for, plan_fingerprint

# Re-exported (`x as x`): it builds content now, and its callers know it from here.
from campaign.content.snapshot import return_paths as return_paths
from campaign.delivery import resend
from campaign.delivery.dispatch import Dispatcher
from campaign.delivery.outbox import OutboxTransport
from campaign.delivery.passes import PassResult, SendPolicy
from campaign.delivery.resend import Resent
from campaign.delivery.scheduler import Service
from campaign.delivery.senders import PassRunner, SenderPool, connection_shares
from campaign.delivery.signup_mail import SignupMail
from campaign.delivery.smtp import SMTPTransport
from campaign.delivery.webhooks import WebhookDeliverer, WebhookEndpoints
from campaign.domain.plan import Plan
from campaign.domain.plan_catalog import PlanCatalog, load_catalog
from campaign.domain.transport import Transport
from campaign.errors import ConfigError, DatabaseError, PlanError, UnknownPlan
from campaign.insights import reports
from campaign.insights.metrics import Metrics
from campaign.logs import configure_logging
from campaign.people import plan_identity, subscriptions
from campaign.people.operators import COMMAND_LINE
from campaign.people.signups import Signups
from campaign.people.subscriptions import SubscribeResult
from campaign.settings import Settings, load_environment
from campaign.storage.db import Database, driver_problem, pool_size_for
from campaign.storage.locks import SenderLock

log = logging.getLogger("campaign.bootstrap")


@dataclass
class _Running:
    """What changes while an engine runs: its plans' content, swapped whole in one
    assignment, and this process's status for /healthz."""

    contents: Contents
    fingerprint: tuple[tuple[str, int], ...] = ()
    #: why this process's scheduler paused sending (None: it sends, or none runs here); for
    #: /healthz, since a database that refuses writes takes no heartbeat saying so.
    paused_reason: str | None = None
    #: why this process's last pass ended in an unexpected error (None: it did not); /healthz.
    pass_failure: str | None = None
    #: why the last saved edit of the plan was refused (None: the running plan is the saved
    #: one); for /healthz (reason plan-edit-refused) and the campaign_plan_edit_refused gauge.
    plan_edit_refused: str | None = None
    #: whether `run_pass` checked that no active enrollment runs under another plan id.
    identity_checked: bool = False


@dataclass(frozen=True, eq=False)
class Engine:
    """The campaign engine: its collaborators, wired once (`from_settings`, `from_env`), and
    what a program embedding it calls: subscribe, unsubscribe, run_pass, stats, health."""

    settings: Settings
    clock: Clock
    db: Database
    transport: Transport
    dispatcher: Dispatcher
    signups: Signups
    metrics: Metrics
    #: sends what signups queued (confirmations) or woke (welcomes), off the request path.
    signup_mail: SignupMail
    _running: _Running
    #: delivers outgoing webhooks, in a thread of its own beside the passes (`campaign run`).
    webhook_deliverer: WebhookDeliverer

    @classmethod
    def from_settings(
        cls, settings: Settings, *, clock: Clock | None = None, transport: Transport | None = None
    ) -> Engine:
        """The engine `settings` describe, on the system clock and the configured mail server
        (SMTP_HOST, or the outbox folder) unless a clock or a transport is given."""
        return build(settings, clock=clock, transport=transport)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Engine:
        """The engine the environment describes: `environ`, or as the `campaign` command reads
        it (the process environment over the `.env` file of the working directory)."""
        return cls.from_settings(
            Settings.from_env(load_environment() if environ is None else environ)
        )

    @property
    def contents(self) -> Contents:
        """Every running plan and its composer now, by plan id: read it once."""
        return self._running.contents

    @property
    def catalog(self) -> PlanCatalog:
        """Every running plan by id, and the default one."""
        return self._running.contents.catalog

    @property
    def content(self) -> Content:
        """The default plan and its composer now: read it once and use that value throughout."""
        return self._running.contents.default

    @property
    def plan(self) -> Plan:
        """The default plan; for the plan and its composer together, read `content` once."""
        return self._running.contents.default.plan

    @property
    def composer(self) -> Composer:
        """The default plan's composer (see `plan`)."""
        return self._running.contents.default.composer

    def plan_named(self, plan_id: str | None) -> Plan:
        """The running plan a signup names (None or blank: the default plan); UnknownPlan
        (bad input) for an id no running plan has."""
        contents = self._running.contents
        if plan_id is None or not plan_id.strip():
            return contents.default.plan
        plan = contents.plan(plan_id.strip())
        if plan is None:
            raise UnknownPlan(plan_id, list(contents.by_id))
        return plan

    @property
    def webhooks(self) -> WebhookEndpoints:
        """Outgoing webhooks' endpoints: list, add, disable, enable, remove, attempts."""
        return WebhookEndpoints(self.db, self.clock)

    def subscribe(
        self,
        email: str,
        *,
        name: str | None = None,
        timezone: str | None = None,
        resubscribe: bool = False,
        now: datetime | None = None,
        fields: Mapping[str, object] | None = None,
        plan: str | None = None,
    ) -> SubscribeResult:
        """Add an active subscriber and enrol them in `plan` (an id; None: the default plan):
        the welcome is due on the next pass.

        Someone known is left as they are, unless `resubscribe` (they asked to come back), or
        they are active and not yet in `plan` (they join it). A bad address, time zone or
        plan id, or a suppressed address, raises a CampaignError; so does a custom field
        (`fields`) that plan does not declare, or a value that does not fit it.
        """
        return subscriptions.subscribe(
            self.db,
            self.plan_named(plan),
            email=email,
            first_name=name,
            timezone=timezone,
            now=now or self.clock.now(),
            source="api",
            resubscribe=resubscribe,
            fields=fields,
        )

    def unsubscribe(self, email: str, *, now: datetime | None = None) -> bool:
        """Stop all email to `email` at once; False if they had left already."""
        return subscriptions.unsubscribe(self.db, email=email, now=now or self.clock.now())

    def resend_welcome(
        self, subscriber_id: int, *, now: datetime | None = None, actor: str = COMMAND_LINE
    ) -> Resent:
        """Send the welcome again to an active subscriber, once, as a delivery of its own that
        never moves their plan (campaign.delivery.resend says what a resend is); audited."""
        when = now or self.clock.now()
        return resend.resend_welcome(
            self.db, self.contents, self.transport, subscriber_id, when, actor=actor
        )

    def run_pass(self, now: datetime | None = None) -> PassResult:
        """One sending pass at `now` (the clock's, by default), as `run_scheduler.py --once`
        runs it: the plan reloaded if edited, confirmations sent, everything due sent.

        The first pass of an engine refuses (OrphanedEnrollments) to start while active
        enrollments run under a plan id the plan file does not have.
        """
        if not self._running.identity_checked:
            require_plan_identity(self)
            self._running.identity_checked = True
        with self.sending(), make_service(self) as service:
            return service.run_once(now)

    def stats(self, plan: str | None = None) -> reports.Stats:
        """Subscribers by status and, per step of `plan` (an id; None: the default plan),
        what was sent: `campaign stats --json [--plan ID]`."""
        return reports.stats(self.db, self.plan_named(plan))

    def health(self) -> reports.Health:
        """This deployment's health as this process sees it (its scheduler, if one runs here)."""
        running = self._running
        return reports.health(
            self.db,
            self.clock.now(),
            tick_seconds=self.settings.tick_seconds,
            paused_here=running.paused_reason,
            pass_failed_here=running.pass_failure,
            plan_edit_refused_here=running.plan_edit_refused,
        )

    @property
    def plan_edit_refused(self) -> str | None:
        """Why the last saved edit of the plan was refused (None: the saved plan runs), as
        this process last looked (`reload_plan_if_changed`)."""
        return self._running.plan_edit_refused

    def reload_plan_if_changed(self) -> bool:
        """Switch to an edited plan if, and only if, it is valid; True when it switched.

        An invalid edit is logged with its file:line problems (once per save), shown by
        `plan_edit_refused` until a later save is good, and the last good plan keeps
        running. Steps are matched by key, so unsent emails take the new words, a removed
        step is not sent, and a moved one is never sent twice.
        """
        running = self._running
        current = plan_fingerprint(self.settings)
        if current == running.fingerprint:
            return False
        running.fingerprint = current
        old = running.contents.catalog
        try:
            catalog = check_catalog(self.settings)
        except PlanError as exc:
            for problem in exc.problems:
                log.error("plan edit refused, still sending the last good plan: %s", problem)
            more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
            self._refuse_plan_edit(f"{exc.problems[0]}{more}")
            return False
        except ConfigError as exc:  # DEFAULT_PLAN no longer names a plan of the folder
            log.error("plan edit refused, still sending the last good plans: %s", exc.message)
            self._refuse_plan_edit(exc.message)
            return False
        gone = [plan_id for plan_id in old.plans if plan_id not in catalog.plans]
        # The default plan's id must stay; another plan may go once nobody runs it.
        gone = [
            plan_id
            for plan_id in gone
            if plan_id == old.default_id or self._has_active_enrollments(plan_id)
        ]
        if gone:
            plan = catalog.default if len(catalog) == 1 else None
            before = old.plans[gone[0]]
            renamed = plan.id if plan is not None else "NEW_ID"
            log.error("plan edit refused: plan id %s is gone", gone[0])
            self._refuse_plan_edit(
                f"{(plan or before).source}: the plan id {gone[0]!r} is gone"
                + (f" (the plan id changed from {gone[0]!r} to {plan.id!r})" if plan else "")
                + f": put it back, or stop the service and run `campaign plan rename "
                f"{gone[0]} {renamed}`"
            )
            return False
        self._refuse_plan_edit(None)
        # One assignment: a pass or request reading `contents` gets the old plans or the new.
        running.contents = contents_for(
            self.settings, catalog, running.contents.default.composer.dkim
        )
        for plan in catalog:
            log.info("plan reloaded: %s, %d steps", plan.source, len(plan.steps))
        return True

    def _has_active_enrollments(self, plan_id: str) -> bool:
        """Whether someone runs `plan_id` (True when the database cannot say: keep it)."""
        try:
            return plan_id in plan_identity.orphans(self.db, self.plan)
        except Exception:  # any driver error: refuse the edit rather than orphan anyone
            return True

    def _refuse_plan_edit(self, reason: str | None) -> None:
        self._running.plan_edit_refused = reason
        self.metrics.plan_edit_refused.set(0 if reason is None else 1)

    def _note_pause(self, reason: str | None) -> None:
        self._running.paused_reason = reason

    def _note_pass_failure(self, reason: str | None) -> None:
        self._running.pass_failure = reason
        if reason is not None:
            self.metrics.pass_errors.inc()

    def close(self) -> None:
        """Close database connections."""
        self.db.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def sending(self) -> Iterator[None]:
        """Hold the right to run sending passes: on SQLite, one process per database file."""
        database_file = self.db.sqlite_file
        if database_file is None:
            yield
            return
        lock = SenderLock(database_file)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def upgrade_schema(self) -> None:
        """Create or migrate the database schema to this code's (`campaign db upgrade`)."""
        self.db.upgrade()

    def require_schema(self) -> None:
        """Refuse, with a clear message, a database whose schema is not this code's."""
        try:
            state = self.db.schema_state()
        except Exception as exc:  # any driver error means "cannot reach"
            raise DatabaseError(f"cannot reach the database: {driver_problem(exc)}") from exc
        if state == "missing":
            raise DatabaseError("the database has no schema yet: run `campaign db upgrade`")
        if state == "older":
            raise DatabaseError(
                "the database schema is older than this code: run `campaign db upgrade`"
            )
        if state == "newer":
            raise DatabaseError(
                "the database schema is newer than this code: deploy the newer code (an older "
                "engine must not write to it)"
            )


#: The name internal callers knew the composition root by.
App = Engine


def require_plan_identity(app: App) -> None:
    """Refuse to send (exit 2, saying how to fix it) while active enrollments run under a
    plan id the plan file does not have: they would silently get nothing more."""
    plan_identity.require_plan_identity(app.db, app.catalog)


def make_service(app: App) -> Service:
    """The scheduler for `app`: purges stale pending signups, times each pass for /metrics."""

    def housekeeping(now: datetime) -> None:
        app.reload_plan_if_changed()
        # Confirmations queued by an instance that went away before sending them.
        app.signup_mail.send_confirmations(now)
        purged = app.signups.purge_pending(now, app.settings.pending_purge_days)
        if purged:
            log.info("purged %d signup(s) never confirmed", purged)

    settings = app.settings
    others = connection_shares(settings.smtp_connections, settings.sender_processes)[1:]
    fixed = isinstance(app.clock, FixedClock)
    senders = (
        SenderPool(
            app.dispatcher,
            [functools.partial(sender_process, _alone(settings, n), fixed) for n in others],
        )
        if others
        else None
    )
    return Service(
        app.dispatcher,
        app.clock,
        settings.tick_seconds,
        housekeeping=housekeeping,
        on_pass=functools.partial(_count_pass, app.metrics),
        on_pause=app._note_pause,
        on_pass_failure=app._note_pass_failure,
        senders=senders,
    )


def _count_pass(metrics: Metrics, result: PassResult, seconds: float) -> None:
    metrics.pass_seconds.observe(seconds)
    metrics.observe_welcomes(result.welcome_seconds)
    metrics.claims_lost.inc(result.lost)
    metrics.unknown_outcomes.inc(result.unknown)


def _alone(settings: Settings, connections: int) -> Settings:
    """A sender process's settings: its share of the connections, all in that process."""
    return settings.model_copy(update={"smtp_connections": connections, "sender_processes": 1})


def sender_process(settings: Settings, fixed_clock: bool) -> PassRunner:
    """The engine of a sender process (run there): its share of each pass, on the plan as
    last saved; a fixed clock (`--now`) stands at each pass's instant."""
    configure_logging(settings.log_level, settings.log_format)
    clock: Clock = FixedClock(datetime.fromtimestamp(0, UTC)) if fixed_clock else SystemClock()
    app = build(settings, clock=clock)

    def run_pass(now: datetime, stop: threading.Event) -> PassResult:
        if isinstance(clock, FixedClock):
            clock.set(now)
        app.reload_plan_if_changed()
        return app.dispatcher.run_pass(now, stop)

    return run_pass


def make_transport(settings: Settings) -> Transport:
    if settings.uses_dev_sink:
        return OutboxTransport(settings.outbox_dir)
    return SMTPTransport(
        settings.smtp_host or "",
        settings.effective_smtp_port,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.smtp_timeout,
        final_reply_timeout=settings.smtp_final_reply_timeout,
        group_messages=settings.smtp_group_messages,
        ca_file=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
    )


def owner_id() -> str:
    """Who holds a claim: host, process and a random part, unique per running engine."""
    # At most 60 characters: a pass adds its number, and the column holds 100.
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    transport: Transport | None = None,
    plan_path: Path | None = None,
    lease_clock: Clock | None = None,
) -> Engine:
    """Wire the engine from settings; tests pass a fixed clock or their own transport.

    Leases are measured by the database's clock, whatever `clock` says (the `--now` of the
    command line included); tests that walk simulated time pass a `lease_clock` too.
    """
    clock = clock or SystemClock()
    catalog = load_catalog(
        plan_path or settings.plan_path,
        settings.templates_dir,
        settings.assets_dir,
        # A single plan file named by a test or a tool is its own default.
        None if plan_path is not None and Path(plan_path).is_file() else settings.default_plan,
    )
    for warning in catalog.warnings:
        log.warning("plan warning: %s: its graduates complete there", warning)
    contents = contents_for(settings, catalog, signer_from_settings(settings))
    plan = catalog.default
    for content in contents:
        for problem in content.renderer.problems:
            log.error("plan problem (steps affected are retried until fixed): %s", problem)
    transport = transport or make_transport(settings)
    db = Database(settings.database_url, pool_size=pool_size_for(settings.smtp_connections))
    policy = SendPolicy(
        batch_size=settings.batch_size,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        retry_base_seconds=settings.retry_base_seconds,
        rate_per_second=settings.send_rate_per_second,
        rate_per_hour=settings.send_rate_per_hour,
        # this process's share; the rest go to sender processes (make_service)
        connections=connection_shares(settings.smtp_connections, settings.sender_processes)[0],
        soft_bounce_limit=settings.soft_bounce_limit,
        unknown_outcome_retries=settings.unknown_outcome_retries,
        max_per_day=settings.max_per_day,
    )
    running = _Running(contents, plan_fingerprint(settings))
    dispatcher = Dispatcher(
        db,
        lambda: running.contents,
        transport,
        clock,
        owner_id(),
        policy,
        lease_clock=lease_clock,
    )
    signups = Signups(
        db,
        plan.id,
        transport,
        settings.secret_key.get_secret_value(),
        double_opt_in=settings.double_opt_in,
        confirm_token_days=settings.confirm_token_days,
    )
    if settings.double_opt_in and plan.confirmation is None:
        # Every signup's confirmation email is the default plan's, whichever plan it names.
        raise PlanError(
            [plan.problem("confirmation", "DOUBLE_OPT_IN is on but the plan has no confirmation:")]
        )
    metrics = Metrics()
    signup_mail = SignupMail(
        signups, dispatcher, clock, owner_id(), on_welcome=metrics.observe_welcomes
    )
    deliverer = WebhookDeliverer(db, clock, owner_id())
    return Engine(
        settings,
        clock,
        db,
        transport,
        dispatcher,
        signups,
        metrics,
        signup_mail,
        running,
        deliverer,
    )
