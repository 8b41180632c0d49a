"""Jinja2 rendering of a plan's steps: compiled once per plan load, CSS inlined, text derived.

Inlining CSS and deriving the text cost far more than rendering, so they run once per step on a
render whose subscriber values are placeholders; each email fills its values in (`render_for`).
"""

from __future__ import annotations

import logging
import re
import secrets
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes
from markupsafe import escape

from campaign.content.mime import PartText, header_text
from campaign.content.plaintext import convert, html_to_text, spells_out
from campaign.content.sandbox import (
    TEMPLATE_FAILURES,
    file_templates,
    string_templates,
    unsafe_in_template,
    unsafe_uses,
)
from campaign.content.skeleton import SCHEMES, Fill, Skeleton, inert, regular, scheme
from campaign.content.template_flow import only_prints
from campaign.domain.plan import CONFIRMATION_INDEX, Plan, Step
from campaign.errors import PlanProblem, RenderError

log = logging.getLogger("campaign.render")

GREETING_FALLBACK = "there"


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


@dataclass(frozen=True)
class _CompiledStep:
    subject: Template
    preheader: Template
    html: Template
    text: Template | None
    #: the sanitised subject and preheader of templates that use no variable.
    fixed_subject: str | None = None
    fixed_preheader: str | None = None


def subscriber_context(email: str, first_name: str) -> dict[str, str]:
    """What templates see of a subscriber: plain strings, with a greeting fallback."""
    first = header_text(first_name, limit=100)
    return {"email": email, "first_name": first, "name": first or GREETING_FALLBACK}


class Renderer:
    """Renders the steps of one plan; every template is compiled when this is built."""

    def __init__(self, plan: Plan, templates_dir: Path | str, shared: Mapping[str, Any]) -> None:
        self.plan = plan
        self.templates_dir = Path(templates_dir)
        self.shared = dict(shared)
        # Marketers' input: rendered in Jinja's sandbox (campaign.sandbox), never trusted.
        self._files = file_templates(self.templates_dir)
        self._strings = string_templates()
        self._inliner = css_inline.CSSInliner(keep_style_tags=True)
        self._compiled: dict[str, _CompiledStep] = {}
        self._skeletons: dict[tuple[Any, ...], Skeleton | None] = {}
        # Placeholders no template can contain by chance.
        self._nonce = secrets.token_hex(6)
        self.problems: list[PlanProblem] = []
        for step in self._all_steps():
            compiled = self._compile(step)
            if compiled:
                self._compiled[step.key] = compiled

    def _all_steps(self) -> list[Step]:
        extra = [self.plan.confirmation] if self.plan.confirmation else []
        return [*self.plan.steps, *extra]

    def _compile(self, step: Step) -> _CompiledStep | None:
        where = step.field_path
        subject = self._compile_string(step, "subject", step.subject)
        preheader = self._compile_string(step, "preheader", step.preheader)
        if subject is None or preheader is None:
            return None
        try:
            html = self._files.get_template(step.template)
            text_name = str(Path(step.template).with_suffix(".txt"))
            text = (
                self._files.get_template(text_name)
                if (self.templates_dir / text_name).is_file()
                else None
            )
            unsafe = unsafe_in_template(self._files, step.template)
            if text is not None:
                unsafe += unsafe_in_template(self._files, text_name)
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
            location = f"{_relative(filename, self.templates_dir)}:{line}"
            self.problems.append(
                self.plan.problem(f"{where}.template", f"{location}: {what}; not allowed")
            )
        if unsafe:
            return None
        return _CompiledStep(
            subject,
            preheader,
            html,
            text,
            self._fixed(step.subject),
            self._fixed(step.preheader),
        )

    def _compile_string(self, step: Step, name: str, source: str) -> Template | None:
        """A subject or preheader, compiled; its problems are reported at its own line."""
        field_path = f"{step.field_path}.{name}"
        try:
            tree = self._strings.parse(source)
            compiled = self._strings.from_string(source)
        except TemplateSyntaxError as exc:
            self.problems.append(self.plan.problem(field_path, exc.message or str(exc)))
            return None
        unsafe = unsafe_uses(tree)
        for _, what in unsafe:
            self.problems.append(self.plan.problem(field_path, f"{what}; not allowed"))
        return None if unsafe else compiled

    def _fixed(self, source: str) -> str | None:
        """The sanitised text of a subject or preheader that holds no Jinja code at all."""
        body = self._strings.parse(source).body
        if all(
            isinstance(node, nodes.Output)
            and all(isinstance(part, nodes.TemplateData) for part in node.nodes)
            for node in body
        ):
            return header_text(self._strings.from_string(source).render(), limit=250)
        return None

    def context(self, step: Step, subscriber: Mapping[str, str], **extra: Any) -> dict[str, Any]:
        """The names a template may use."""
        return {
            **self.shared,
            "subscriber": dict(subscriber),
            "step": {"key": step.key, "day": step.day},
            "plan": {"id": self.plan.id, "name": self.plan.name, "total_days": self.plan.last_day},
            "day": step.day,
            "ebook": {"title": self.plan.ebook.title} if self.plan.ebook else None,
            "attached": step.attaches_ebook and self.plan.ebook is not None,
            **extra,
        }

    def render(self, step: Step, context: Mapping[str, Any]) -> RenderedEmail:
        """Subject, preheader, inlined HTML and plain text of one step for one subscriber."""
        compiled = self._compiled_step(step)
        try:
            subject, preheader, full, raw_html = self._render_html(compiled, context)
            text = compiled.text.render(full) if compiled.text else html_to_text(raw_html)
            html = self._inliner.inline(raw_html)
        except TemplateError as exc:
            raise RenderError(step.key, _describe(exc, self.templates_dir)) from exc
        except (*TEMPLATE_FAILURES, AttributeError) as exc:
            raise RenderError(step.key, str(exc)) from exc
        return RenderedEmail(subject, preheader, PartText(html), PartText(text))

    def render_for(self, step: Step, subscriber: Mapping[str, str], **extra: Any) -> RenderedEmail:
        """What `render(step, context(step, subscriber, **extra))` gives, at a fraction of the cost.

        The inlined HTML and the text are the step's placeholder render with this email's
        values in place, where that is proven to equal rendering: once per step for a template
        that only prints its values (`campaign.template_flow`), else by rendering the template
        for this email and comparing. Anything else takes the full path.
        """
        compiled = self._compiled_step(step)
        context = self.context(step, subscriber, **extra)
        try:
            subject, preheader, full = self._headers(compiled, context)
            values = [*subscriber.values(), subject, preheader, *extra.values()]
            shape = (tuple(subscriber), tuple(extra))
            rendered: list[str] = []  # the template's output for this email, once rendered

            def raw_html() -> str:
                if not rendered:
                    rendered.append(compiled.html.render(full))
                return rendered[0]

            filled = self._filled(step, compiled, shape, values, raw_html)
            html = filled[0] if filled else PartText(self._inliner.inline(raw_html()))
            if compiled.text:
                text = PartText(compiled.text.render(full))
            else:
                text = filled[1] if filled else PartText(html_to_text(raw_html()))
        except TemplateError as exc:
            raise RenderError(step.key, _describe(exc, self.templates_dir)) from exc
        except (*TEMPLATE_FAILURES, AttributeError) as exc:
            raise RenderError(step.key, str(exc)) from exc
        return RenderedEmail(subject, preheader, html, text)

    def _compiled_step(self, step: Step) -> _CompiledStep:
        compiled = self._compiled.get(step.key)
        if compiled is None:
            raise RenderError(step.key, "the template did not compile; run `campaign plan check`")
        return compiled

    def _render_html(
        self, compiled: _CompiledStep, context: Mapping[str, Any]
    ) -> tuple[str, str, dict[str, Any], str]:
        subject, preheader, full = self._headers(compiled, context)
        return subject, preheader, full, compiled.html.render(full)

    def _headers(
        self, compiled: _CompiledStep, context: Mapping[str, Any]
    ) -> tuple[str, str, dict[str, Any]]:
        """Subject, preheader, and the context the body templates see (which holds both)."""
        subject = compiled.fixed_subject
        if subject is None:
            subject = _header("subject", compiled.subject, context)
        preheader = compiled.fixed_preheader
        if preheader is None:
            preheader = _header("preheader", compiled.preheader, context)
        return subject, preheader, {**context, "subject": subject, "preheader": preheader}

    def _filled(
        self,
        step: Step,
        compiled: _CompiledStep,
        shape: tuple[tuple[str, ...], tuple[str, ...]],
        values: list[Any],
        raw_html: Callable[[], str],
    ) -> tuple[PartText, PartText] | None:
        """Inlined HTML and text from the step's skeleton, or None where that is not proven."""
        if not all(isinstance(value, str) for value in values):
            return None
        schemes = [scheme(value) if value.startswith(SCHEMES) else "" for value in values]
        key = (step.key, shape, tuple(schemes))
        if key not in self._skeletons:
            self._skeletons[key] = self._skeleton(step, compiled, shape, key[2])
        skeleton = self._skeletons[key]
        if skeleton is None:
            return None
        if not all(regular(values[i]) for i in skeleton.used):
            return None
        escaped = [escape(value) for value in values]
        if not skeleton.only_prints and skeleton.raw.fill(escaped) != raw_html():
            return None  # the template does more with a value than print it
        for href, text, spelled_out in skeleton.links:
            if spells_out(href.fill(values), text.fill(values)) != spelled_out:
                return None
        # As segments: the MIME builder encodes the template's share of each part once per step.
        html = PartText.joined(skeleton.html.segments(escaped))
        if skeleton.text is None:
            return html, PartText("")  # unused: the step's own text template gives the text
        return html, PartText.joined(skeleton.text.segments(values))

    def _skeleton(
        self,
        step: Step,
        compiled: _CompiledStep,
        shape: tuple[tuple[str, ...], tuple[str, ...]],
        schemes: tuple[str, ...],
    ) -> Skeleton | None:
        """The step rendered once with placeholders, if filling them in is proven to equal
        rendering; None sends every email of this kind down the full path."""
        if {"subscriber", "subject", "preheader"} & set(shape[1]):
            return None  # an extra value would shadow what the renderer itself provides
        names = [*(("subscriber", key) for key in shape[0]), "subject", "preheader", *shape[1]]
        placeholders = [f"{scheme}x{self._nonce}{i}x" for i, scheme in enumerate(schemes)]
        probes = [f"{scheme}Probe{i}z" for i, scheme in enumerate(schemes)]
        pattern = re.compile("(" + "|".join(map(re.escape, placeholders)) + ")")
        try:
            raw = self._placeholder_render(step, compiled, names, placeholders)
            if not inert(raw, pattern):
                log.debug("step %s: a value is used beyond plain text; rendered in full", step.key)
                return None
            html, conversion = self._inliner.inline(raw), convert(raw)
            # A canary: a full render with other values must give what the skeleton gives.
            probe_raw = self._placeholder_render(step, compiled, names, probes)
            probe_html, probe_text = self._inliner.inline(probe_raw), html_to_text(probe_raw)
        except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
            log.debug("step %s: placeholders do not render (%s); rendered in full", step.key, exc)
            return None  # the full path raises the error, if any, for each email
        index = {placeholder: i for i, placeholder in enumerate(placeholders)}

        def split(text: str) -> Fill:
            return Fill.split(text, pattern, index)

        skeleton = Skeleton(
            raw=split(raw),
            html=split(html),
            text=None if compiled.text else split(conversion.text),
            links=tuple(
                (split(href or ""), split(text), spells_out(href or "", text))
                for href, text in conversion.links
                if pattern.search(f"{href}{text}")
            ),
            used=tuple(i for i, placeholder in enumerate(placeholders) if placeholder in raw),
            only_prints=only_prints(
                self._files,
                step.template,
                ["subject", "preheader", *shape[1]],
                "subscriber",
                shape[0],
            ),
        )
        proven = (
            all(html.count(p) == raw.count(p) for p in placeholders)
            and skeleton.raw.fill(probes) == probe_raw
            and skeleton.html.fill(probes) == probe_html
            and (skeleton.text is None or skeleton.text.fill(probes) == probe_text)
        )
        if not proven:
            log.debug("step %s: placeholders did not survive inlining; rendered in full", step.key)
        return skeleton if proven else None

    def _placeholder_render(
        self, step: Step, compiled: _CompiledStep, names: list[Any], values: list[str]
    ) -> str:
        named = dict(zip(names, values, strict=True))
        subscriber = {name[1]: value for name, value in named.items() if isinstance(name, tuple)}
        extra = {
            name: value
            for name, value in named.items()
            if isinstance(name, str) and name not in ("subject", "preheader")
        }
        context = self.context(step, subscriber, **extra)
        return compiled.html.render(
            {**context, "subject": named["subject"], "preheader": named["preheader"]}
        )

    def check(self, samples: list[dict[str, Any]]) -> list[PlanProblem]:
        """Render every step for each sample context; every problem located by file:line."""
        problems = list(self.problems)
        for step in self._all_steps():
            if step.key not in self._compiled:
                continue
            for sample in samples:
                extra = dict(sample["extra"])
                if step.index == CONFIRMATION_INDEX:
                    # only the double opt-in email has a confirmation link to show.
                    extra["confirm_url"] = f"{self.shared.get('public_base_url', '')}/confirm/x"
                context = self.context(step, sample["subscriber"], **extra)
                header = self._header_problem(step, context)
                if header is not None:
                    problems.append(header)
                    break
                try:
                    self.render(step, context)
                except RenderError as exc:
                    cause = exc.__cause__ or exc
                    message = _describe(cause, self.templates_dir) if cause is not exc else str(exc)
                    problems.append(self.plan.problem(f"{step.field_path}.template", message))
                    break
        return problems

    def _header_problem(self, step: Step, context: Mapping[str, Any]) -> PlanProblem | None:
        """A subject or preheader that fails to render, at its own line of the plan."""
        compiled = self._compiled_step(step)
        for name, template in (("subject", compiled.subject), ("preheader", compiled.preheader)):
            try:
                template.render(context)
            except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
                message = getattr(exc, "message", None) or str(exc)
                return self.plan.problem(f"{step.field_path}.{name}", message)
        return None


def _header(name: str, template: Template, context: Mapping[str, Any]) -> str:
    """A rendered subject or preheader; a failure names the field, which has no file:line."""
    try:
        return header_text(template.render(context), limit=250)
    except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
        raise TemplateError(f"{name}: {getattr(exc, 'message', None) or exc}") from exc


def _describe(exc: BaseException, templates_dir: Path) -> str:
    """The template file:line where a render error happened, found in the traceback."""
    message = getattr(exc, "message", None) or str(exc)
    tb: types.TracebackType | None = exc.__traceback__
    location = None
    root = str(templates_dir.resolve())
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root) or filename.endswith((".html", ".txt")):
            location = f"{_relative(filename, templates_dir)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return f"{location}: {message}" if location else message


def _relative(filename: str, templates_dir: Path) -> str:
    path = Path(filename)
    try:
        return str(templates_dir / path.resolve().relative_to(templates_dir.resolve()))
    except ValueError:
        return filename
