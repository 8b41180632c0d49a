"""A plan's steps rendered for subscribers: every template compiled when the plan loads, each
step given its `StepRenderer` there, and `check` rendering every step for sample subscribers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import css_inline

from campaign.content.illustrations import Illustrations
from campaign.content.mime import header_text
from campaign.content.sandbox import file_templates, string_templates
from campaign.content.skeleton_render import SkeletonStepRenderer
from campaign.content.step_render import (
    JinjaStepRenderer,
    RenderedEmail,
    StepCompiler,
    StepRenderer,
    describe,
    template_context,
)
from campaign.content.template_flow import reads_key
from campaign.content.template_lint import expander, template_findings
from campaign.domain.plan import CONFIRMATION_INDEX, Plan, Step
from campaign.domain.subscriber_fields import FieldValue
from campaign.errors import PlanProblem, RenderError

GREETING_FALLBACK = "there"


def subscriber_context(
    email: str, first_name: str, fields: Mapping[str, FieldValue] | None = None
) -> dict[str, Any]:
    """What templates see of a subscriber: plain strings, with a greeting fallback, and
    `fields` (every declared custom field, defaults filled in) when the plan declares any."""
    first = header_text(first_name, limit=100)
    seen: dict[str, Any] = {"email": email, "first_name": first, "name": first or GREETING_FALLBACK}
    if fields is not None:
        # Only then: a value that is not text sends the email down the full render path.
        seen["fields"] = dict(fields)
    return seen


class Renderer:
    """Renders the steps of one plan; every template is compiled when this is built."""

    def __init__(self, plan: Plan, templates_dir: Path | str, shared: Mapping[str, Any]) -> None:
        self.plan = plan
        self.templates_dir = Path(templates_dir)
        self.shared = dict(shared)
        # Marketers' input: rendered in Jinja's sandbox (campaign.content.sandbox), never trusted.
        self._files = file_templates(self.templates_dir)
        self._files.globals["illustration"] = Illustrations(
            self.templates_dir, str(self.shared.get("public_base_url", ""))
        )
        compiler = StepCompiler(plan, self.templates_dir, self._files, string_templates())
        inliner = css_inline.CSSInliner(keep_style_tags=True)
        # By step key and variant: each subject of a subject test compiled as a step of its own.
        self._full: dict[tuple[str, str | None], JinjaStepRenderer] = {}
        self._renderers: dict[tuple[str, str | None], StepRenderer] = {}
        #: steps (and variants) whose templates never read `subscriber.fields`: rendered
        #: without them.
        self._no_fields: set[tuple[str, str | None]] = set()
        for step in self._all_steps():
            compiled = compiler.compile(step)
            if compiled:
                full = JinjaStepRenderer(compiled, plan, self.shared, inliner, self.templates_dir)
                self._full[_key(step)] = full
                self._renderers[_key(step)] = self._step_renderer(full)
                if plan.fields and not self._reads_fields(step, compiled.text is not None):
                    self._no_fields.add(_key(step))
        self.problems: list[PlanProblem] = compiler.problems

    def gives_fields(self, step: Step) -> bool:
        """Whether the step's emails are rendered with `subscriber.fields`: only where the
        plan declares fields and the step's templates, subject or preheader may read them."""
        return bool(self.plan.fields) and _key(step) not in self._no_fields

    def _reads_fields(self, step: Step, has_text: bool) -> bool:
        names = [step.template]
        if has_text:
            names.append(str(Path(step.template).with_suffix(".txt")))
        return reads_key(self._files, names, [step.subject, step.preheader], "fields")

    def _step_renderer(self, full: JinjaStepRenderer) -> StepRenderer:
        """How a step renders for each email, chosen once, here: through its skeleton, which
        proves for each kind of email (its names, the schemes its values start with) that
        filling values in equals rendering, and renders in full where it cannot."""
        return SkeletonStepRenderer(full, self._files)

    def _all_steps(self) -> list[Step]:
        """Every step, each variant of a subject test, and the confirmation email."""
        extra = [self.plan.confirmation] if self.plan.confirmation else []
        variants = [
            step.with_variant(name) for step in self.plan.steps for name in step.variant_names
        ]
        return [*self.plan.steps, *variants, *extra]

    def context(self, step: Step, subscriber: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        """The names a template may use."""
        return template_context(self.plan, self.shared, step, subscriber, extra)

    def body_context(
        self, step: Step, subscriber: Mapping[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """Every name the step's body templates see: `context` with the rendered subject and
        preheader added, as the full render path builds it."""
        full = self._full.get(_key(step))
        if full is None:
            raise _not_compiled(step)
        return full.headers(self.context(step, subscriber, **extra))[2]

    def render(self, step: Step, context: Mapping[str, Any]) -> RenderedEmail:
        """Subject, preheader, inlined HTML and plain text of one step for any context, in full."""
        full = self._full.get(_key(step))
        if full is None:
            raise _not_compiled(step)
        return full.render_context(context)

    def render_for(self, step: Step, subscriber: Mapping[str, Any], **extra: Any) -> RenderedEmail:
        """What `render(step, context(step, subscriber, **extra))` gives, by the step's renderer."""
        renderer = self._renderers.get(_key(step))
        if renderer is None:
            raise _not_compiled(step)
        if _key(step) in self._no_fields and "fields" in subscriber:
            # Unread, so unseen: without them every value is text and the skeleton path holds.
            subscriber = {k: v for k, v in subscriber.items() if k != "fields"}
        return renderer.render(subscriber, extra)

    def check(self, samples: list[dict[str, Any]]) -> list[PlanProblem]:
        """Render every step for each sample context; every problem located by file:line."""
        problems = list(self.problems)
        seen: set[tuple[str, int, str]] = set()
        for step in self._all_steps():
            full = self._full.get(_key(step))
            if full is None:
                continue
            for sample in samples:
                extra = dict(sample["extra"])
                if step.index == CONFIRMATION_INDEX:
                    # only the double opt-in email has a confirmation link to show.
                    extra["confirm_url"] = f"{self.shared.get('public_base_url', '')}/confirm/x"
                context = self.context(step, sample["subscriber"], **extra)
                header = full.header_problem(context)
                if header is not None:
                    problems.append(header)
                    break
                if sample is samples[0]:
                    problems += self._lint(step, full.headers(context)[2], seen)
                try:
                    full.render_context(context)
                except RenderError as exc:
                    cause = exc.__cause__ or exc
                    message = describe(cause, self.templates_dir) if cause is not exc else str(exc)
                    problems.append(self.plan.problem(f"{step.field_path}.template", message))
                    break
        # A step's template, rendered once per variant of its subject, fails once.
        unique = {str(problem): problem for problem in problems}
        return list(unique.values())

    def _lint(
        self, step: Step, context: Mapping[str, Any], seen: set[tuple[str, int, str]]
    ) -> list[PlanProblem]:
        """Unknown blocks, empty templates and relative links, each file:line reported once."""
        found = []
        expand = expander(self._files, context)
        for finding in template_findings(self._files, step.template, self.templates_dir, expand):
            if finding not in seen:
                seen.add(finding)
                where, line, message = finding
                found.append(
                    self.plan.problem(f"{step.field_path}.template", f"{where}:{line}: {message}")
                )
        return found


def _key(step: Step) -> tuple[str, str | None]:
    """A step's renderer: its key, and the variant whose subject it carries."""
    return (step.key, step.variant)


def _not_compiled(step: Step) -> RenderError:
    return RenderError(step.key, "the template did not compile; run `campaign plan check`")
