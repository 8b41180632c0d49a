"""The plan and what renders it, built from settings as one immutable value: a reload swaps the
whole value, and a pass or a request reads it once, so no plan meets another plan's composer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from campaign.content.compose import Composer
from campaign.content.dkim import DkimSigner
from campaign.content.mime import address
from campaign.content.plan_check import shared_context
from campaign.content.render import Renderer
from campaign.domain.plan import Plan
from campaign.domain.verp import ReturnPaths
from campaign.settings import Settings


@dataclass(frozen=True)
class Content:
    """One loaded plan with the renderer and composer built for it."""

    plan: Plan
    renderer: Renderer
    composer: Composer


def content_for(settings: Settings, plan: Plan, dkim: DkimSigner | None = None) -> Content:
    """The plan with the renderer and composer `settings` ask for, signing with `dkim` if
    given (read once at start by `dkim.signer_from_settings`, kept across plan reloads)."""
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
    )
    return Content(plan, renderer, composer)


def return_paths(settings: Settings) -> ReturnPaths:
    """The VERP signer every email is sent with and every bounce report is checked against."""
    return ReturnPaths(settings.secret_key.get_secret_value(), settings.return_path_domain)


def plan_fingerprint(settings: Settings) -> tuple[tuple[str, int], ...]:
    """Names and modification times of the plan and its templates: changes on every save."""
    files = [Path(settings.plan_path), *sorted(Path(settings.templates_dir).rglob("*"))]
    return tuple((str(f), f.stat().st_mtime_ns) for f in files if f.is_file())
