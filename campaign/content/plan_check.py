"""The plan checked the way it will be sent: loaded, and every step rendered for sample
subscribers with the names every template sees. Needs no database, so `plan check` runs
without one (and without loading SQLAlchemy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from campaign.content.render import Renderer, subscriber_context
from campaign.domain.plan import Plan
from campaign.domain.plan_catalog import PlanCatalog, load_catalog
from campaign.domain.subscriber_fields import with_defaults
from campaign.errors import PlanError, PlanProblem
from campaign.settings import Settings


def shared_context(settings: Settings, plan: Plan) -> dict[str, Any]:
    """Names every template sees, the same for every subscriber."""
    return {
        "sender_name": plan.sender_name or settings.sender_name,
        "postal_address": settings.postal_address,
        "public_base_url": settings.public_base_url,
        "sender_address": settings.sender_address,
        # Where "reply and tell me" buttons write to: REPLY_TO, else MAIL_FROM.
        "reply_address": settings.reply_to_address,
        "ebook_url": settings.ebook_url or ebook_path(settings.public_base_url, plan),
    }


def ebook_path(public_base_url: str, plan: Plan) -> str:
    """Where the app serves the plan's ebook: PUBLIC_BASE_URL/ebook/<file name>."""
    name = plan.ebook.file.name if plan.ebook else "ebook.pdf"
    return f"{public_base_url}/ebook/{name}"


def check_plan(settings: Settings, plan_path: Path | None = None) -> Plan:
    """The default plan of `check_catalog` (the one plan, for a plan file)."""
    return check_catalog(settings, plan_path).default


def check_catalog(settings: Settings, plan_path: Path | None = None) -> PlanCatalog:
    """Load every plan and render every step for sample subscribers; PlanError lists every
    problem of every plan. A `plan_path` named on the command line needs no DEFAULT_PLAN."""
    catalog = load_catalog(
        plan_path or settings.plan_path,
        settings.templates_dir,
        settings.assets_dir,
        settings.default_plan,
        require_default=plan_path is None,
    )
    problems: list[PlanProblem] = []
    for plan in catalog:
        problems += _render_problems(settings, plan)
    if problems:
        raise PlanError(problems)
    return catalog


def _render_problems(settings: Settings, plan: Plan) -> list[PlanProblem]:
    renderer = Renderer(plan, settings.templates_dir, shared_context(settings, plan))
    # Custom fields as someone who gave none sees them: each field's default.
    fields = with_defaults(plan.declared_fields, {}) if plan.fields else None
    samples = [
        {
            "subscriber": subscriber_context("ann@example.com", name, fields),
            "extra": {
                "unsubscribe_url": f"{settings.public_base_url}/unsubscribe/sample",
                "view_url": f"{settings.public_base_url}/view/sample/welcome",
                "lesson_base": f"{settings.public_base_url}/view/sample/",
            },
        }
        for name in ("Ann", "")
    ]
    return renderer.check(samples)
