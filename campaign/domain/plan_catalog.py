"""Every plan the engine runs: one plan file, or a folder whose `*.yaml` files are each a plan,
with the default plan a signup that names none joins. Loaded whole, validated across plans
(ids unique, `then:` chains that end), so a reload swaps all of them or none."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from campaign.domain.plan import Plan, load_plan
from campaign.domain.subscriber_fields import FieldDef
from campaign.errors import ConfigError, PlanError, PlanProblem


@dataclass(frozen=True)
class PlanCatalog:
    """The plans by id (in file order) and the id of the default one."""

    plans: Mapping[str, Plan]
    default_id: str
    #: PLAN_PATH names a folder: signups choose among its plans, which may run side by side
    #: (so the daily cap and per-plan unsubscribe links apply). With a plan file, the other
    #: plans are only those its `then:` chain reaches, and they run one after the other.
    folder: bool = False
    #: what is odd but runs: a plan file's `then:` naming no plan beside it (its graduates
    #: complete, as with no `then:`).
    warnings: tuple[PlanProblem, ...] = ()

    @property
    def side_by_side(self) -> bool:
        """Several plans may run for one person at once."""
        return self.folder and len(self.plans) > 1

    @property
    def default(self) -> Plan:
        return self.plans[self.default_id]

    def get(self, plan_id: str) -> Plan | None:
        return self.plans.get(plan_id)

    @property
    def declared_fields(self) -> dict[str, FieldDef]:
        """Every plan's custom fields by name (a field is the person's, whatever plan they are
        in; plans declaring one name declare it alike, see `field_conflicts`)."""
        found: dict[str, FieldDef] = {}
        for plan in self.plans.values():
            for name, definition in plan.declared_fields.items():
                found.setdefault(name, definition)
        return found

    def __iter__(self) -> Iterator[Plan]:
        return iter(self.plans.values())

    def __len__(self) -> int:
        return len(self.plans)


def plan_files(path: Path | str) -> list[Path]:
    """The plan files PLAN_PATH names: itself, or the `*.yaml` files of its folder, sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.glob("*.yaml") if p.is_file())
    return [path]


def load_catalog(
    path: Path | str,
    templates_dir: Path | str,
    assets_dir: Path | str | None = None,
    default_plan: str | None = None,
    *,
    require_default: bool = True,
) -> PlanCatalog:
    """Load every plan PLAN_PATH names; PlanError lists every problem of every file.

    The default plan is `default_plan` (DEFAULT_PLAN) when given, else the only plan; a folder
    of several plans without DEFAULT_PLAN is a ConfigError (unless not `require_default`:
    then the first), as is a DEFAULT_PLAN no file has.
    """
    path = Path(path)
    files = plan_files(path)
    folder = path.is_dir()
    if not files:
        raise PlanError([PlanProblem(str(path), None, "", "the folder holds no *.yaml plan")])
    problems: list[PlanProblem] = []
    plans: dict[str, Plan] = {}
    for file in files:
        try:
            plan = load_plan(file, templates_dir, assets_dir)
        except PlanError as exc:
            problems += exc.problems
            continue
        other = plans.get(plan.id)
        if other is not None:
            problems.append(
                plan.problem(
                    "id",
                    f"{plan.id!r} is already the id of {other.source}:{other.lines.get('id')}"
                    " (each plan needs its own id)",
                )
            )
            continue
        plans[plan.id] = plan
    problems += field_conflicts(plans.values())
    if problems:
        raise PlanError(problems)
    warnings: list[PlanProblem] = []
    if not folder:
        _add_chained(plans, path, templates_dir, assets_dir)
        # A plan file copied alone (a test, a tool) still runs: its chain just ends there.
        warnings = [p for p in chain_problems(plans) if _unknown(p)]
    problems += [p for p in chain_problems(plans) if folder or not _unknown(p)]
    if problems:
        raise PlanError(problems)
    if not folder:  # the file's own plan, whatever DEFAULT_PLAN says
        return PlanCatalog(plans, next(iter(plans)), warnings=tuple(warnings))
    if not require_default and not default_plan:
        return PlanCatalog(plans, next(iter(plans)), folder)
    return PlanCatalog(plans, _default_id(plans, default_plan, path), folder)


def field_conflicts(plans: Iterable[Plan]) -> list[PlanProblem]:
    """A custom field is stored once per person, so two plans declaring one name must declare
    it alike (type, choices, bounds, default): each other declaration is a problem at its line,
    naming the first."""
    first: dict[str, Plan] = {}
    problems: list[PlanProblem] = []
    for plan in plans:
        for name, definition in plan.declared_fields.items():
            other = first.setdefault(name, plan)
            if other is not plan and other.declared_fields[name] != definition:
                where = f"{other.source}:{other.lines.get(f'fields.{name}')}"
                problems.append(
                    plan.problem(
                        f"fields.{name}",
                        f"{name!r} is declared differently in {where}: a field is the "
                        "person's, so every plan must declare it alike",
                    )
                )
    return problems


def _unknown(problem: PlanProblem) -> bool:
    return problem.problem.startswith(_NO_PLAN)


_NO_PLAN = "no plan has id"


def _add_chained(
    plans: dict[str, Plan],
    path: Path,
    templates_dir: Path | str,
    assets_dir: Path | str | None,
) -> None:
    """A plan file's `then:` names a plan among the plan files beside it: load those the
    chain reaches (a sibling that fails to load is a problem only if the chain needs it)."""
    wanted = {p.then for p in plans.values() if p.then and p.then not in plans}
    if not wanted:
        return
    siblings: dict[str, Plan] = {}
    for sibling in plan_files(path.parent):
        if sibling.resolve() == path.resolve():
            continue
        try:
            plan = load_plan(sibling, templates_dir, assets_dir)
        except PlanError:
            continue
        siblings.setdefault(plan.id, plan)
    while wanted:
        plan_id = wanted.pop()
        found = siblings.get(plan_id)
        if found is None or plan_id in plans:
            continue
        plans[plan_id] = found
        if found.then and found.then not in plans:
            wanted.add(found.then)


def chain_problems(plans: Mapping[str, Plan]) -> list[PlanProblem]:
    """`then:` names a plan of the catalog, and following it never comes back (no cycle)."""
    problems: list[PlanProblem] = []
    for plan in plans.values():
        if plan.then is None or plan.then == plan.id:  # a self-reference: load_plan says so
            continue
        if plan.then not in plans:
            known = ", ".join(sorted(plans))
            problems.append(plan.problem("then", f"{_NO_PLAN} {plan.then!r} (plans: {known})"))
            continue
        seen = [plan.id]
        following: str | None = plan.then
        while following is not None and following in plans:
            if following in seen:
                loop = " -> ".join([*seen, following])
                problems.append(plan.problem("then", f"the chain comes back: {loop}"))
                break
            seen.append(following)
            following = plans[following].then
    return problems


def _default_id(plans: Mapping[str, Plan], default_plan: str | None, path: Path) -> str:
    if default_plan:
        if default_plan not in plans:
            known = ", ".join(sorted(plans))
            raise ConfigError(
                "DEFAULT_PLAN", f"has value {default_plan!r}, not a plan id in {path} ({known})"
            )
        return default_plan
    if len(plans) == 1:
        return next(iter(plans))
    raise ConfigError(
        "DEFAULT_PLAN",
        f"must name the plan a signup joins when it names none: {path} holds "
        f"{len(plans)} plans ({', '.join(sorted(plans))})",
    )
