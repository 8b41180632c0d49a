"""One step's templates, compiled when the plan loads, and the full Jinja path that renders
them for one email: subject and preheader, HTML with its CSS inlined, and plain text."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import css_inline
from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes

from campaign.content.mime import PartText, header_text
from campaign.content.plaintext import html_to_text
from campaign.content.sandbox import (
    TEMPLATE_FAILURES,
    TemplateSandbox,
    unsafe_in_template,
    unsafe_uses,
)
from campaign.domain.plan import Plan, Step
from campaign.errors import PlanProblem, RenderError


@dataclass(frozen=True)
class RenderedEmail:
    """One step rendered for one subscriber; the parts keep the segments a skeleton joined."""

    subject: str
    preheader: str
    html_part: PartText
    text_part: PartText

    @property
    def html(self) -> str:
        return self.html_part.text

    @property
    def text(self) -> str:
        return self.text_part.text


class StepRenderer(Protocol):
    """Renders one step for one subscriber: what the full Jinja path gives for the template
    context of `subscriber` and `extra`, however it gets there."""

    def render(self, subscriber: Mapping[str, Any], extra: Mapping[str, Any]) -> RenderedEmail:
        """Subject, preheader, inlined HTML and plain text; RenderError if a template fails."""
        ...


def template_context(
    plan: Plan,
    shared: Mapping[str, Any],
    step: Step,
    subscriber: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The names a template may use."""
    return {
        **shared,
        "subscriber": dict(subscriber),
        "step": {"key": step.key, "day": step.day},
        "plan": {"id": plan.id, "name": plan.name, "total_days": plan.length},
        "day": step.day,
        "ebook": {"title": plan.ebook.title} if plan.ebook else None,
        "attached": step.attaches_ebook and plan.ebook is not None,
        **extra,
    }


@dataclass(frozen=True)
class CompiledStep:
    step: Step
    subject: Template
    preheader: Template
    html: Template
    text: Template | None
    #: the sanitised subject and preheader of templates that use no variable.
    fixed_subject: str | None = None
    fixed_preheader: str | None = None


class StepCompiler:
    """Compiles the steps of one plan, collecting each problem at its file:line or field."""

    def __init__(
        self, plan: Plan, templates_dir: Path, files: TemplateSandbox, strings: TemplateSandbox
    ) -> None:
        self.plan = plan
        self.templates_dir = templates_dir
        self.files = files
        self.strings = strings
        self.problems: list[PlanProblem] = []

    def compile(self, step: Step) -> CompiledStep | None:
        """The step's templates compiled and checked for unsafe uses; None if any problem."""
        where = step.field_path
        subject = self._compile_string(step, "subject", step.subject)
        preheader = self._compile_string(step, "preheader", step.preheader)
        if subject is None or preheader is None:
            return None
        try:
            html = self.files.get_template(step.template)
            text_name = str(Path(step.template).with_suffix(".txt"))
            text = (
                self.files.get_template(text_name)
                if (self.templates_dir / text_name).is_file()
                else None
            )
            unsafe = unsafe_in_template(self.files, step.template)
            if text is not None:
                unsafe += unsafe_in_template(self.files, text_name)
        except TemplateSyntaxError as exc:
            location = f"{self.templates_dir / (exc.name or step.template)}:{exc.lineno}"
            self.problems.append(
                self.plan.problem(f"{where}.template", f"{location}: {exc.message}")
            )
            return None
        except TemplateError as exc:
            self.problems.append(self.plan.problem(f"{where}.template", str(exc)))
            return None
        for filename, line, what in unsafe:
            location = f"{relative(filename, self.templates_dir)}:{line}"
            self.problems.append(
                self.plan.problem(f"{where}.template", f"{location}: {what}; not allowed")
            )
        if unsafe:
            return None
        return CompiledStep(
            step,
            subject,
            preheader,
            html,
            text,
            self._fixed(step.subject),
            self._fixed(step.preheader),
        )

    def _compile_string(self, step: Step, name: str, source: str) -> Template | None:
        """A subject or preheader, compiled; its problems are reported at its own line."""
        field_path = step.header_path(name)
        try:
            tree = self.strings.parse(source)
            compiled = self.strings.from_string(source)
        except TemplateSyntaxError as exc:
            self.problems.append(self.plan.problem(field_path, exc.message or str(exc)))
            return None
        unsafe = unsafe_uses(tree)
        for _, what in unsafe:
            self.problems.append(self.plan.problem(field_path, f"{what}; not allowed"))
        return None if unsafe else compiled

    def _fixed(self, source: str) -> str | None:
        """The sanitised text of a subject or preheader that holds no Jinja code at all."""
        body = self.strings.parse(source).body
        if all(
            isinstance(node, nodes.Output)
            and all(isinstance(part, nodes.TemplateData) for part in node.nodes)
            for node in body
        ):
            return header_text(self.strings.from_string(source).render(), limit=250)
        return None


class JinjaStepRenderer:
    """The full path: every template rendered for this email, CSS inlined, text derived."""

    def __init__(
        self,
        compiled: CompiledStep,
        plan: Plan,
        shared: Mapping[str, Any],
        inliner: css_inline.CSSInliner,
        templates_dir: Path,
    ) -> None:
        self.compiled = compiled
        self.step = compiled.step
        self.plan = plan
        self.shared = shared
        self.inliner = inliner
        self.templates_dir = templates_dir

    def context(self, subscriber: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
        return template_context(self.plan, self.shared, self.step, subscriber, extra)

    def render(self, subscriber: Mapping[str, Any], extra: Mapping[str, Any]) -> RenderedEmail:
        return self.render_context(self.context(subscriber, extra))

    def render_context(self, context: Mapping[str, Any]) -> RenderedEmail:
        """Subject, preheader, inlined HTML and plain text for any template context."""
        compiled = self.compiled
        try:
            subject, preheader, full = self.headers(context)
            raw_html = compiled.html.render(full)
            text = compiled.text.render(full) if compiled.text else html_to_text(raw_html)
            html = self.inliner.inline(raw_html)
        except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
            raise self.render_error(exc) from exc
        return RenderedEmail(subject, preheader, PartText(html), PartText(text))

    def headers(self, context: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """Subject, preheader, and the context the body templates see (which holds both)."""
        compiled = self.compiled
        subject = compiled.fixed_subject
        if subject is None:
            subject = _header("subject", compiled.subject, context)
        preheader = compiled.fixed_preheader
        if preheader is None:
            preheader = _header("preheader", compiled.preheader, context)
        return subject, preheader, {**context, "subject": subject, "preheader": preheader}

    def render_error(self, exc: BaseException) -> RenderError:
        """The RenderError for a failed render, at the template's file:line where known."""
        if isinstance(exc, TemplateError):
            return RenderError(self.step.key, describe(exc, self.templates_dir))
        return RenderError(self.step.key, str(exc))

    def header_problem(self, context: Mapping[str, Any]) -> PlanProblem | None:
        """A subject or preheader that fails to render, at its own line of the plan."""
        compiled = self.compiled
        for name, template in (("subject", compiled.subject), ("preheader", compiled.preheader)):
            try:
                template.render(context)
            except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
                message = getattr(exc, "message", None) or str(exc)
                return self.plan.problem(self.step.header_path(name), message)
        return None


def _header(name: str, template: Template, context: Mapping[str, Any]) -> str:
    """A rendered subject or preheader; a failure names the field, which has no file:line."""
    try:
        return header_text(template.render(context), limit=250)
    except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
        raise TemplateError(f"{name}: {getattr(exc, 'message', None) or exc}") from exc


def describe(exc: BaseException, templates_dir: Path) -> str:
    """The template file:line where a render error happened, found in the traceback."""
    message = getattr(exc, "message", None) or str(exc)
    tb: types.TracebackType | None = exc.__traceback__
    location = None
    root = str(templates_dir.resolve())
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root) or filename.endswith((".html", ".txt")):
            location = f"{relative(filename, templates_dir)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return f"{location}: {message}" if location else message


def relative(filename: str, templates_dir: Path) -> str:
    """`filename` under `templates_dir` as the plan names it, if it lies there."""
    path = Path(filename)
    try:
        return str(templates_dir / path.resolve().relative_to(templates_dir.resolve()))
    except ValueError:
        return filename
