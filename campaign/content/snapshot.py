"""The plan and what renders it, built from settings as one immutable value: a reload swaps the
whole value, and a pass or a request reads it once, so no plan meets another plan's composer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path

from campaign.content.compose import Composer
from campaign.content.dkim import DkimSigner
from campaign.content.mime import address
from campaign.content.plan_check import shared_context
from campaign.content.render import Renderer
from campaign.domain.plan import Plan
from campaign.domain.plan_catalog import PlanCatalog, plan_files
from campaign.domain.verp import ReturnPaths
from campaign.settings import Settings


@dataclass(frozen=True)
class Content:
    """One loaded plan with the renderer and composer built for it."""

    plan: Plan
    renderer: Renderer
    composer: Composer


@dataclass(frozen=True)
class Contents:
    """Every running plan's content by plan id, and which plan is the default: swapped whole
    on a reload. A claim is rendered with `of(claim.plan_id)`, its own enrollment's plan."""

    by_id: Mapping[str, Content]
    default_id: str
    #: PLAN_PATH names a folder (see PlanCatalog.folder).
    folder: bool = False

    @property
    def default(self) -> Content:
        return self.by_id[self.default_id]

    def of(self, plan_id: str) -> Content | None:
        """The content of plan `plan_id` (None: no running plan has that id)."""
        return self.by_id.get(plan_id)

    def plan(self, plan_id: str) -> Plan | None:
        content = self.by_id.get(plan_id)
        return None if content is None else content.plan

    @property
    def catalog(self) -> PlanCatalog:
        plans = {i: c.plan for i, c in self.by_id.items()}
        return PlanCatalog(plans, self.default_id, self.folder)

    def __iter__(self) -> Iterator[Content]:
        return iter(self.by_id.values())

    def __len__(self) -> int:
        return len(self.by_id)


def contents_for(
    settings: Settings, catalog: PlanCatalog, dkim: DkimSigner | None = None
) -> Contents:
    """`content_for` each plan of `catalog`."""
    return Contents(
        {
            plan.id: content_for(settings, plan, dkim, several=catalog.side_by_side)
            for plan in catalog
        },
        catalog.default_id,
        catalog.folder,
    )


def content_for(
    settings: Settings, plan: Plan, dkim: DkimSigner | None = None, *, several: bool = False
) -> Content:
    """The plan with the renderer and composer `settings` ask for, signing with `dkim` if
    given (read once at start by `dkim.signer_from_settings`, kept across plan reloads).
    `several`: other plans run beside it (its footer's unsubscribe link names it)."""
    renderer = Renderer(plan, settings.templates_dir, shared_context(settings, plan))
    composer = Composer(
        plan=plan,
        renderer=renderer,
        sender=address(settings.sender_address, plan.sender_name or settings.sender_name),
        public_base_url=settings.public_base_url,
        secret_key=settings.secret_key.get_secret_value(),
        track_clicks=settings.track_clicks,
        return_paths=return_paths(settings),
        dkim=dkim,
        feedback_id_sender=settings.feedback_id_sender,
        plan_unsubscribe=several,
        reply_to=_reply_to(settings),
    )
    return Content(plan, renderer, composer)


def _reply_to(settings: Settings) -> Address | None:
    """REPLY_TO as the header's mailbox; None when unset (replies go to From)."""
    if not settings.reply_to:
        return None
    name, addr = parseaddr(settings.reply_to)
    return address(addr, name)


def return_paths(settings: Settings) -> ReturnPaths:
    """The VERP signer every email is sent with and every bounce report is checked against."""
    return ReturnPaths(settings.secret_key.get_secret_value(), settings.return_path_domain)


def plan_fingerprint(settings: Settings) -> tuple[tuple[str, int], ...]:
    """Names and modification times of the plan and its templates: changes on every save."""
    plan_path = Path(settings.plan_path)
    # A folder's own time changes when a plan file is added or removed.
    folder = [plan_path] if plan_path.is_dir() else []
    # A plan file's siblings too: its `then:` chain may name them.
    plans = plan_files(plan_path if folder else plan_path.parent)
    files = [plan_path, *plans, *sorted(Path(settings.templates_dir).rglob("*"))]
    stamps = [(str(f), f.stat().st_mtime_ns) for f in files if f.is_file()]
    return (*((str(d), d.stat().st_mtime_ns) for d in folder), *stamps)
