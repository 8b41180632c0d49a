"""Jinja2 rendering of a plan's steps: compiled once per plan load, CSS inlined, text derived."""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)

from campaign.errors import PlanProblem, RenderError
from campaign.message import header_text
from campaign.plaintext import html_to_text
from campaign.plan import CONFIRMATION_INDEX, Plan, Step

GREETING_FALLBACK = "there"


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    preheader: str
    html: str
    text: str


@dataclass(frozen=True)
class _CompiledStep:
    subject: Template
    preheader: Template
    html: Template
    text: Template | None


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
        self._files = Environment(
            loader=FileSystemLoader(self.templates_dir),
            autoescape=select_autoescape(["html", "htm"], default_for_string=False),
            undefined=StrictUndefined,
            auto_reload=False,
            keep_trailing_newline=True,
        )
        # Subjects and preheaders are header and preview text, not HTML: no escaping.
        self._strings = Environment(undefined=StrictUndefined, autoescape=False)  # noqa: S701
        self._inliner = css_inline.CSSInliner(keep_style_tags=True)
        self._compiled: dict[str, _CompiledStep] = {}
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
        try:
            subject = self._strings.from_string(step.subject)
        except TemplateSyntaxError as exc:
            self.problems.append(self.plan.problem(f"{where}.subject", exc.message or str(exc)))
            return None
        try:
            preheader = self._strings.from_string(step.preheader)
        except TemplateSyntaxError as exc:
            self.problems.append(self.plan.problem(f"{where}.preheader", exc.message or str(exc)))
            return None
        try:
            html = self._files.get_template(step.template)
            text_name = str(Path(step.template).with_suffix(".txt"))
            text = (
                self._files.get_template(text_name)
                if (self.templates_dir / text_name).is_file()
                else None
            )
        except TemplateSyntaxError as exc:
            location = f"{self.templates_dir / (exc.name or step.template)}:{exc.lineno}"
            self.problems.append(
                self.plan.problem(f"{where}.template", f"{location}: {exc.message}")
            )
            return None
        except TemplateError as exc:
            self.problems.append(self.plan.problem(f"{where}.template", str(exc)))
            return None
        return _CompiledStep(subject, preheader, html, text)

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
        compiled = self._compiled.get(step.key)
        if compiled is None:
            raise RenderError(step.key, "the template did not compile; run `campaign plan check`")
        try:
            subject = header_text(compiled.subject.render(context), limit=250)
            preheader = header_text(compiled.preheader.render(context), limit=250)
            full = {**context, "subject": subject, "preheader": preheader}
            raw_html = compiled.html.render(full)
            text = compiled.text.render(full) if compiled.text else html_to_text(raw_html)
            html = self._inliner.inline(raw_html)
        except TemplateError as exc:
            raise RenderError(step.key, _describe(exc, self.templates_dir)) from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise RenderError(step.key, str(exc)) from exc
        return RenderedEmail(subject, preheader, html, text)

    def check(self, samples: list[dict[str, Any]]) -> list[PlanProblem]:
        """Render every step for each sample context; every problem located by file:line."""
        problems = list(self.problems)
        for step in self._all_steps():
            if step.key not in self._compiled:
                continue
            for sample in samples:
                try:
                    extra = dict(sample["extra"])
                    if step.index == CONFIRMATION_INDEX:
                        # only the double opt-in email has a confirmation link to show.
                        extra["confirm_url"] = f"{self.shared.get('public_base_url', '')}/confirm/x"
                    self.render(step, self.context(step, sample["subscriber"], **extra))
                except RenderError as exc:
                    cause = exc.__cause__ or exc
                    message = _describe(cause, self.templates_dir) if cause is not exc else str(exc)
                    problems.append(self.plan.problem(f"{step.field_path}.template", message))
                    break
        return problems


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
