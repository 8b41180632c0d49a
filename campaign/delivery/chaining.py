"""`then:`, pure: where a graduate of a plan goes next, and when that plan's first step after
day 0 is due for them (the chained plan's day 0 is skipped: the welcome goes once)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from campaign.delivery.timing import zone_or_utc
from campaign.domain import schedule
from campaign.domain.plan_catalog import PlanCatalog

if TYPE_CHECKING:  # plain values; their module brings the database along
    from campaign.storage.store import Chain, Claim


def chain_for(plans: PlanCatalog, claim: Claim, at: datetime) -> Chain | None:
    """The chain for `claim`'s enrollment if its plan says `then:` (None: it does not, or the
    next plan has no step after day 0), its last step settled at `at`."""

    return chain_after(plans, claim.plan_id, claim.timezone, at)


def chain_after(plans: PlanCatalog, plan_id: str, timezone: str, at: datetime) -> Chain | None:
    """The chain for a graduate of `plan_id` in `timezone` whose enrollment ended at `at`."""
    from campaign.storage.store import Chain

    plan = plans.get(plan_id)
    following = None if plan is None or plan.then is None else plans.get(plan.then)
    if following is None:
        return None
    start = schedule.chained_start(following, at, zone_or_utc(timezone))
    return None if start is None else Chain(following.id, start[1])
