"""Plan identity: enrollments are keyed by the plan `id`, so an edited id must never silently
orphan the subscribers running under the old one. Found before sending, fixed by a rename."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from campaign.domain.plan import Key, Plan
from campaign.domain.plan_catalog import PlanCatalog
from campaign.errors import OrphanedEnrollments, RenameRefused

if TYPE_CHECKING:
    from campaign.storage.db import Database

# The storage modules (and SQLAlchemy under them) are imported by the functions that query:
# `campaign plan check` uses this module without a database and must start at once.


def orphaned_message(plans: Plan | PlanCatalog, orphans: dict[str, int]) -> str:
    """What is wrong and how to fix it, naming each old id and its count."""
    if isinstance(plans, PlanCatalog) and len(plans) > 1:
        counts = ", ".join(f"{count} under {old!r}" for old, count in sorted(orphans.items()))
        known = ", ".join(sorted(plans.plans))
        return (
            f"{sum(orphans.values())} active enrollment(s) run under a plan id that no plan "
            f"has (plans: {known}) ({counts}): sending now would leave them with no further "
            "email. If a plan was renamed, run `campaign plan rename OLD NEW`; otherwise put "
            "the old `id:` back in its plan file"
        )
    plan = plans.default if isinstance(plans, PlanCatalog) else plans
    counts = ", ".join(f"{count} under {old!r}" for old, count in sorted(orphans.items()))
    fixes = " or ".join(f"`campaign plan rename {old} {plan.id}`" for old in sorted(orphans))
    total = sum(orphans.values())
    return (
        f"{total} active enrollment(s) run under a plan id that {plan.source} (id {plan.id!r}) "
        f"does not have ({counts}): sending now would leave them with no further email. If the "
        f"plan was renamed, run {fixes}; otherwise put the old `id:` back in the plan file"
    )


def orphans(db: Database, plans: Plan | PlanCatalog) -> dict[str, int]:
    """Active enrollments under plan ids that no plan has, by id."""
    from campaign.storage import store

    known = set(plans.plans) if isinstance(plans, PlanCatalog) else {plans.id}
    with db.read() as session:
        by_plan = store.active_enrollments_by_plan(session)
    return {plan_id: count for plan_id, count in by_plan.items() if plan_id not in known}


def require_plan_identity(db: Database, plans: Plan | PlanCatalog) -> None:
    """Raise OrphanedEnrollments while active enrollments point at a plan id no plan has."""
    found = orphans(db, plans)
    if found:
        raise OrphanedEnrollments(orphaned_message(plans, found), found)


def rename_plan(db: Database, old: str, new: str) -> int:
    """Move every enrollment of plan `old` to `new`, in one transaction; how many moved.

    Refused (RenameRefused, nothing changed) when `new` is not a valid id, `old` has no
    enrollments, or `new` already has some: merging two plans' histories is not a rename.
    """
    if not _valid_id(new):
        raise RenameRefused(
            f"{new!r} is not a valid plan id (lowercase letters, digits, - and _, up to 64)"
        )
    if old == new:
        raise RenameRefused(f"the old and new plan ids are both {old!r}")
    from campaign.storage import store

    with db.transaction() as session:
        if store.count_enrollments(session, old) == 0:
            raise RenameRefused(f"no enrollments under plan id {old!r}: nothing to rename")
        taken = store.count_enrollments(session, new)
        if taken:
            raise RenameRefused(
                f"plan id {new!r} already has {taken} enrollment(s): refusing to merge two "
                "plans' subscribers"
            )
        return store.move_enrollments(session, old, new)


def _valid_id(value: str) -> bool:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(Key).validate_python(value)
    except ValidationError:
        return False
    return True


def _no_sqlite_file(database_url: str) -> bool:
    """True for a SQLite URL whose file does not exist (or an in-memory one): told without
    SQLAlchemy, so that `plan check` without a database never loads it."""
    if not database_url.startswith("sqlite:"):
        return False
    # sqlite:///relative.db, sqlite:////absolute.db, sqlite:// (memory); a query may follow.
    path = database_url.removeprefix("sqlite:").removeprefix("//").split("?", 1)[0]
    path = unquote(path.removeprefix("/"))
    return not (path and Path(path).exists())


def orphans_in(database_url: str, plan: Plan | PlanCatalog) -> dict[str, int] | None:
    """`orphans` in the database at `database_url`; None when there is no migrated database
    to ask (plan check and diff work without one)."""
    if _no_sqlite_file(database_url):
        return None  # never create a database file just to look into it
    from sqlalchemy.engine import make_url

    from campaign.storage.db import Database

    url = make_url(database_url)
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": "5"})  # a check must not hang
    db = Database(url.render_as_string(hide_password=False))
    try:
        if db.schema_state() == "missing":
            return None
        return orphans(db, plan)
    except Exception:  # unreachable: the check goes on without the database
        return None
    finally:
        db.dispose()
