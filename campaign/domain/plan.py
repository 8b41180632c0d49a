"""The plan: YAML parsed strictly, validated with a schema, and frozen into `Plan` and `Step`.

Every problem is reported as `file:line: field: problem`, all of them at once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from campaign.domain.confine import content_roots, escape_reason
from campaign.domain.plan_source import check_yaml_bounds, read_plan_text
from campaign.domain.subscriber_fields import FieldDef, FieldSpec, field_defs, field_problems
from campaign.domain.weekdays import EVERY_DAY, WeekdayName, days_from_names
from campaign.errors import PlanError, PlanProblem

Key = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=998)]
SEND_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
SendTime = Annotated[str, StringConstraints(pattern=SEND_TIME.pattern)]
SendDays = Annotated[list[WeekdayName], Field(min_length=1)]
#: how long after its send time a late step may still go out, unless the plan says.
DEFAULT_SEND_WINDOW = timedelta(hours=12)
#: A subject test compares at most this many subjects: the step's own and its `variants:`.
MAX_VARIANTS = 5
#: The names variants get by position when they name none: the step's own subject is `a`.
VARIANT_NAMES = "abcdefghij"
VariantName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,15}$")]


class _Strict(BaseModel):
    # strict: YAML's `no`, `12:30` or `010` never silently become another type.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class VariantSpec(_Strict):
    name: VariantName | None = None
    subject: Text
    #: None: the step's own preheader.
    preheader: str | None = None


class StepSpec(_Strict):
    key: Key
    day: int = Field(ge=0, le=3650)
    subject: Text
    preheader: str = ""
    template: Text
    attach: bool = False
    attachments: list[Text] = Field(default_factory=list)
    send_time: SendTime | None = None
    send_days: SendDays | None = None
    #: the name of the step's own subject in a subject test (default `a`).
    variant: VariantName | None = None
    #: other subjects (and preheaders) to test against the step's own.
    variants: list[VariantSpec] = Field(default_factory=list, max_length=MAX_VARIANTS - 1)


class SkipAfterSpec(_Strict):
    skip_after: int = Field(ge=1, le=24 * 30, description="hours")


class ConfirmationSpec(_Strict):
    subject: Text
    preheader: str = ""
    template: Text


class EbookSpec(_Strict):
    title: Text
    file: Text


class PlanSpec(_Strict):
    id: Key
    name: Text
    sender_name: Text | None = None
    send_time: SendTime
    send_days: SendDays | None = None
    send_window_hours: int = Field(default=12, ge=1, le=24)
    length_days: int | None = Field(default=None, ge=0, le=3650)
    ebook: EbookSpec | None = None
    confirmation: ConfirmationSpec | None = None
    catch_up: Literal["shift"] | SkipAfterSpec = "shift"
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    then: Key | None = None
    steps: list[StepSpec] = Field(min_length=1)


@dataclass(frozen=True)
class Variant:
    """One subject (and preheader) of a step's subject test, by its stable name."""

    name: str
    subject: str
    preheader: str
    #: where it is written: `steps[1]` for the step's own, `steps[1].variants[0]` for another.
    field_path: str
    #: the fields it writes itself (`subject`, and `preheader` unless it takes the step's).
    own: tuple[str, ...] = ("subject", "preheader")


@dataclass(frozen=True)
class Step:
    """One email of the plan: sent on local day `day` after enrolment (0 = at once)."""

    index: int
    key: str
    day: int
    subject: str
    preheader: str
    template: str
    attachments: tuple[Path, ...] = ()
    #: the ebook is among `attachments` because the step said `attach: true`.
    attaches_ebook: bool = False
    #: this step's own send time and weekdays (0 = Monday); None: the plan's (see
    #: `Plan.send_time_of`, `Plan.send_days_of`).
    send_time: time | None = None
    send_days: frozenset[int] | None = None
    #: a subject test: the step's own subject first, then its `variants:` (empty: no test).
    variants: tuple[Variant, ...] = ()
    #: the variant whose subject and preheader this step carries (`with_variant`); None: the
    #: step's own, outside any test.
    variant: str | None = None

    @property
    def field_path(self) -> str:
        """Where this step stands in the plan file, e.g. `steps[3]` (or `confirmation`)."""
        return "confirmation" if self.index == CONFIRMATION_INDEX else f"steps[{self.index}]"

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def header_path(self, name: str) -> str:
        """Where this step's `subject` or `preheader` is written: `steps[1].subject`, or for
        a variant that writes its own, `steps[1].variants[0].subject`."""
        chosen = next((v for v in self.variants if v.name == self.variant), None)
        if chosen is not None and name in chosen.own:
            return f"{chosen.field_path}.{name}"
        return f"{self.field_path}.{name}"

    def with_variant(self, name: str | None) -> Step:
        """This step with variant `name`'s subject and preheader; the step's own subject when
        it has no variant by that name (a test ended by editing the plan)."""
        chosen = next((v for v in self.variants if v.name == name), None)
        if chosen is None:
            return self if self.variant is None else replace(self, variant=None)
        return replace(self, subject=chosen.subject, preheader=chosen.preheader, variant=name)


#: The double opt-in email is not a step of the plan; it uses this index.
CONFIRMATION_INDEX = -1


@dataclass(frozen=True)
class Ebook:
    """The free ebook the signup box promises: a title and a PDF file."""

    title: str
    file: Path


@dataclass(frozen=True)
class Plan:
    """A validated plan. `lines` maps a field path such as `steps[3].template` to its line."""

    id: str
    name: str
    sender_name: str | None
    send_time: time
    steps: tuple[Step, ...]
    source: Path
    ebook: Ebook | None = None
    #: the double opt-in email, sent before the plan starts (not one of `steps`).
    confirmation: Step | None = None
    #: catch_up: {skip_after: H}: a daily step more than this late is skipped, not sent.
    #: None is the default `shift`: late steps go at the next pass within their send window
    #: and the rest move later.
    skip_after: timedelta | None = None
    #: the weekdays (0 = Monday) daily steps go out on, unless a step names its own.
    send_days: frozenset[int] = EVERY_DAY
    #: a late step goes out only from its send time to this much later (and before that
    #: local day ends) on one of its sending days; otherwise it waits for the next such window.
    send_window: timedelta = DEFAULT_SEND_WINDOW
    #: `length_days:` as declared: no step may come later. None: the plan is as long as its
    #: last step's day (see `length`).
    length_days: int | None = None
    #: `fields:`: the custom subscriber fields templates see as `subscriber.fields.NAME`.
    fields: tuple[FieldDef, ...] = ()
    #: `then:` the id of the plan graduates are enrolled into when this one ends (None: none).
    then: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    #: the folders files named by the plan must resolve into: its own, TEMPLATES_DIR, ASSETS_DIR.
    content_roots: tuple[Path, ...] = field(default=(), compare=False, repr=False)

    def step(self, key_or_day: str) -> Step | None:
        """A step by key, or by day number (`3`, `day03`)."""
        for step in self.steps:
            if step.key == key_or_day:
                return step
        if key_or_day.isascii() and key_or_day.isdigit():
            for step in self.steps:
                if step.day == int(key_or_day):
                    return step
        return None

    def step_by_key(self, key: str) -> Step | None:
        return next((step for step in self.steps if step.key == key), None)

    def send_time_of(self, step: Step) -> time:
        """The local time `step` goes out: its own `send_time`, else the plan's."""
        return self.send_time if step.send_time is None else step.send_time

    def send_days_of(self, step: Step) -> frozenset[int]:
        """The weekdays `step` may go out on: its own `send_days`, else the plan's."""
        return self.send_days if step.send_days is None else step.send_days

    @property
    def declared_fields(self) -> dict[str, FieldDef]:
        """The custom subscriber fields by name, in the plan's order."""
        return {field.name: field for field in self.fields}

    def problem(self, field_path: str, message: str) -> PlanProblem:
        """A problem located at a field of this plan's file."""
        return PlanProblem(str(self.source), self.lines.get(field_path), field_path, message)

    @property
    def last_day(self) -> int:
        return self.steps[-1].day

    @property
    def length(self) -> int:
        """The plan's length in days: `length_days` if declared, else the last step's day."""
        return self.last_day if self.length_days is None else self.length_days


def load_plan(
    path: Path | str, templates_dir: Path | str, assets_dir: Path | str | None = None
) -> Plan:
    """Read, validate and freeze a plan; raise PlanError listing every problem with file:line.

    Files the plan names must resolve into its own folder, `templates_dir` or `assets_dir`
    (by default the `assets` folder beside the plan's, as in `plans/` and `assets/`).
    """
    path = Path(path)
    templates_dir = Path(templates_dir)
    text = read_plan_text(path)
    tree = _parse_yaml(text, path)
    lines = _field_lines(tree)
    try:
        spec = PlanSpec.model_validate(_plain(tree))
    except ValidationError as exc:
        problems = [_schema_problem(path, lines, error) for error in exc.errors()]
        raise PlanError(problems) from exc
    repeated = _repeated_weekdays(spec, path, lines)
    if repeated:
        raise PlanError(repeated)
    ebook = Ebook(spec.ebook.title, _beside(path, spec.ebook.file)) if spec.ebook else None
    bad_fields = field_problems(spec.fields)
    plan = Plan(
        id=spec.id,
        name=spec.name,
        sender_name=spec.sender_name,
        send_time=_parse_send_time(spec.send_time),
        send_days=EVERY_DAY if spec.send_days is None else days_from_names(spec.send_days),
        send_window=timedelta(hours=spec.send_window_hours),
        steps=tuple(_step(i, s, ebook, path) for i, s in enumerate(spec.steps)),
        source=path,
        ebook=ebook,
        skip_after=(
            timedelta(hours=spec.catch_up.skip_after)
            if isinstance(spec.catch_up, SkipAfterSpec)
            else None
        ),
        confirmation=(
            Step(
                CONFIRMATION_INDEX,
                "confirmation",
                0,
                spec.confirmation.subject,
                spec.confirmation.preheader,
                spec.confirmation.template,
            )
            if spec.confirmation
            else None
        ),
        length_days=spec.length_days,
        fields=() if bad_fields else field_defs(spec.fields),
        then=spec.then,
        lines=lines,
        content_roots=content_roots(
            path.parent, templates_dir, assets_dir or path.parent.parent / "assets"
        ),
    )
    problems = [plan.problem(where, message) for where, message in bad_fields]
    problems += _consistency_problems(plan, templates_dir)
    problems += [
        plan.problem(f"steps[{i}].variant", "names the step's subject in a test: add `variants:`")
        for i, step in enumerate(spec.steps)
        if step.variant is not None and not step.variants
    ]
    if problems:
        raise PlanError(problems)
    return plan


def _beside(plan_path: Path, written: str) -> Path:
    """A path written in the plan, relative to the plan file's folder (not to where we run)."""
    return Path(os.path.normpath(plan_path.parent / written))


def _step(index: int, spec: StepSpec, ebook: Ebook | None, plan_path: Path) -> Step:
    attachments = tuple(_beside(plan_path, a) for a in spec.attachments)
    if spec.attach and ebook is not None:
        attachments = (ebook.file, *attachments)
    return Step(
        index,
        spec.key,
        spec.day,
        spec.subject,
        spec.preheader,
        spec.template,
        attachments,
        spec.attach,
        None if spec.send_time is None else _parse_send_time(spec.send_time),
        None if spec.send_days is None else days_from_names(spec.send_days),
        _variants(index, spec),
    )


def _repeated_weekdays(spec: PlanSpec, path: Path, lines: Mapping[str, int]) -> list[PlanProblem]:
    """A weekday named twice in a send_days list: a typo for another day, most likely."""
    lists = [("send_days", spec.send_days)]
    lists += [(f"steps[{i}].send_days", step.send_days) for i, step in enumerate(spec.steps)]
    problems = []
    for where, names in lists:
        for i, name in enumerate(names or ()):
            if name in (names or ())[:i]:
                field_path = f"{where}[{i}]"
                message = f"{name!r} is listed twice"
                problems.append(PlanProblem(str(path), lines.get(field_path), field_path, message))
    return problems


def _variants(index: int, spec: StepSpec) -> tuple[Variant, ...]:
    """The step's own subject (`a`, or its `variant:` name) and its `variants:` (b, c, ... by
    position, or each one's `name:`); none when the step tests no subject."""
    if not spec.variants:
        return ()
    where = f"steps[{index}]"
    own = Variant(spec.variant or VARIANT_NAMES[0], spec.subject, spec.preheader, where)
    others = tuple(
        Variant(
            variant.name or VARIANT_NAMES[i + 1],
            variant.subject,
            spec.preheader if variant.preheader is None else variant.preheader,
            f"{where}.variants[{i}]",
            ("subject",) if variant.preheader is None else ("subject", "preheader"),
        )
        for i, variant in enumerate(spec.variants)
    )
    return (own, *others)


def _parse_yaml(text: str, path: Path) -> Any:
    for number, source_line in enumerate(text.splitlines(), start=1):
        if "\t" in source_line:
            raise PlanError(
                [PlanProblem(str(path), number, "", "tab character; indent with spaces")]
            )
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    check_yaml_bounds(yaml, text, path)
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line: int | None = mark.line + 1 if mark else None
        described = " ".join(str(p) for p in (exc.context, exc.problem) if p).strip()
        described = described.split("\n")[0] if described else "not valid YAML"
        if "duplicate key" in str(exc):
            described = re.sub(r"\s+with value .*", "", str(exc.problem)) + " (each key once)"
        raise PlanError([PlanProblem(str(path), line, "", described)]) from exc
    except YAMLError as exc:
        raise PlanError([PlanProblem(str(path), None, "", f"not valid YAML: {exc}")]) from exc
    if not isinstance(tree, CommentedMap):
        raise PlanError([PlanProblem(str(path), 1, "", "must be a mapping with id, name, steps")])
    return tree


def _plain(node: Any) -> Any:
    """ruamel's round-trip types as plain Python values, so strict validation sees real types."""
    if isinstance(node, dict):
        return {str(k) if isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _field_lines(tree: Any, prefix: str = "") -> dict[str, int]:
    """Map `steps[3].template`-style paths to 1-based line numbers in the YAML source."""
    lines: dict[str, int] = {}
    if isinstance(tree, CommentedMap):
        for key in tree:
            path = f"{prefix}.{key}" if prefix else str(key)
            lines[path] = tree.lc.key(key)[0] + 1
            lines.update(_field_lines(tree[key], path))
    elif isinstance(tree, CommentedSeq):
        for i, item in enumerate(tree):
            path = f"{prefix}[{i}]"
            lines[path] = tree.lc.item(i)[0] + 1
            lines.update(_field_lines(item, path))
    return lines


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_FRIENDLY = {
    "string_type": "must be text; put it in quotes",
    "bool_type": "must be true or false (YAML 1.2: yes/no/on/off are text)",
    "int_type": "must be a whole number",
    "extra_forbidden": "unknown field (check its spelling)",
    "missing": "is required",
}


def _schema_problem(path: Path, lines: Mapping[str, int], error: Mapping[str, Any]) -> PlanProblem:
    loc = tuple(error["loc"])
    field_path = _loc_path(loc)
    line = lines.get(field_path)
    parent = loc
    while line is None and parent:
        parent = parent[:-1]
        line = lines.get(_loc_path(parent), 1 if not parent else None)
    message = _FRIENDLY.get(error["type"], error["msg"])
    if (
        error["loc"]
        and error["loc"][-1] == "send_time"
        and error["type"] == "string_pattern_mismatch"
    ):
        message = 'must be a local time such as "07:00"'
    elif error["type"] == "string_pattern_mismatch":
        message = "must be lowercase letters, digits, - or _ (a stable identifier)"
    elif loc[-1:] == ("send_window_hours",) and error["type"].endswith("_equal"):
        message = "must be from 1 to 24 hours"
    elif "send_days" in loc and error["type"] in _SEND_DAYS:
        message = _SEND_DAYS[error["type"]]
        if error["type"] == "literal_error":  # names the bad value itself
            return PlanProblem(str(path), line, field_path, message.format(error["input"]))
    elif error["loc"] and error["loc"][-1] == "variants" and error["type"] == "too_long":
        message = (
            f"at most {MAX_VARIANTS - 1} variants besides the step's own subject"
            f" ({MAX_VARIANTS} subjects in one test)"
        )
        return PlanProblem(str(path), line, field_path, message)
    if error["type"] not in ("missing", "extra_forbidden"):
        message += f" (got {error['input']!r})"
    return PlanProblem(str(path), line, field_path, message)


_SEND_DAYS = {
    "literal_error": "{!r} is not a weekday (mon..sun)",
    "too_short": "must name at least one weekday, e.g. [mon, tue, wed, thu, fri]",
    "list_type": "must be a list of weekdays, e.g. [mon, tue, wed, thu, fri]",
}


def _parse_send_time(text: str) -> time:
    hours, minutes = text.split(":")  # the schema checked the HH:MM pattern
    return time(int(hours), int(minutes))


def _consistency_problems(plan: Plan, templates_dir: Path) -> list[PlanProblem]:
    problems: list[PlanProblem] = []
    if plan.then == plan.id:
        problems.append(plan.problem("then", f"{plan.id!r} is this plan itself (a loop)"))
    if plan.ebook is not None:
        problems += _content_file_problems(plan, "ebook.file", plan.ebook.file)
    seen_keys: dict[str, int] = {}
    seen_days: dict[int, int] = {}
    previous_day = -1
    for step in plan.steps:
        where = f"steps[{step.index}]"
        if step.key in seen_keys:
            problems.append(
                plan.problem(
                    f"{where}.key", f"{step.key!r} is already used by steps[{seen_keys[step.key]}]"
                )
            )
        seen_keys.setdefault(step.key, step.index)
        if step.day in seen_days:
            problems.append(
                plan.problem(
                    f"{where}.day",
                    f"day {step.day} is already used by steps[{seen_days[step.day]}]"
                    " (one email a day)",
                )
            )
        elif step.day < previous_day:
            problems.append(
                plan.problem(
                    f"{where}.day",
                    f"day {step.day} comes after day {previous_day}: keep steps in order",
                )
            )
        if plan.length_days is not None and step.day > plan.length_days:
            problems.append(
                plan.problem(
                    f"{where}.day",
                    f"day {step.day} is beyond the plan's length (length_days: "
                    f"{plan.length_days}): raise length_days or move the step",
                )
            )
        seen_days.setdefault(step.day, step.index)
        previous_day = max(previous_day, step.day)
        problems += _variant_problems(plan, step)
        problems += _template_problems(plan, f"{where}.template", step.template, templates_dir)
        own = step.attachments  # (template checks for the confirmation email are below)
        if step.attaches_ebook:
            if plan.ebook is None:
                problems.append(
                    plan.problem(f"{where}.attach", "the plan declares no ebook to attach")
                )
            else:
                own = own[1:]  # the ebook itself is checked once, at ebook.file
        for i, attachment in enumerate(own):
            problems += _content_file_problems(plan, f"{where}.attachments[{i}]", attachment)
    if plan.confirmation is not None:
        problems += _template_problems(
            plan, "confirmation.template", plan.confirmation.template, templates_dir
        )
    return problems


def _variant_problems(plan: Plan, step: Step) -> list[PlanProblem]:
    """A subject test compares different subjects under different names."""
    problems: list[PlanProblem] = []
    names: dict[str, str] = {}
    subjects: dict[str, str] = {}
    for variant in step.variants:
        if not variant.subject.strip():
            problems.append(plan.problem(f"{variant.field_path}.subject", "is empty"))
        if variant.name in names:
            where = names[variant.name]
            field_path = f"{variant.field_path}.name"
            problems.append(plan.problem(field_path, f"{variant.name!r} is already {where}'s name"))
        names.setdefault(variant.name, variant.field_path)
        subject = " ".join(variant.subject.split())
        if subject in subjects:
            problems.append(
                plan.problem(
                    f"{variant.field_path}.subject",
                    f"the same subject as {subjects[subject]}: a test compares different ones",
                )
            )
        subjects.setdefault(subject, variant.field_path)
    return problems


def _template_problems(
    plan: Plan, field_path: str, written: str, templates_dir: Path
) -> list[PlanProblem]:
    """A step's template: a file inside the templates folder once symlinks are resolved."""
    template = templates_dir / written
    inside = "must be a file inside the templates folder"
    if Path(written).is_absolute() or ".." in Path(written).parts:
        return [plan.problem(field_path, inside)]
    reason = escape_reason(template, content_roots(templates_dir))
    if reason:
        return [plan.problem(field_path, f"{inside}: {written} {reason}")]
    if not template.is_file():
        return [plan.problem(field_path, f"{template} does not exist")]
    return []


def _content_file_problems(plan: Plan, field_path: str, file: Path) -> list[PlanProblem]:
    """An ebook or attachment: an existing file inside the content folders."""
    reason = escape_reason(file, plan.content_roots)
    if reason:
        return [plan.problem(field_path, f"{file} {reason}")]
    if not file.is_file():
        return [plan.problem(field_path, f"{file} does not exist")]
    return []
