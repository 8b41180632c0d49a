"""The fast render path behind `StepRenderer`: each email's values filled into its step's
skeleton (`campaign.content.skeleton`) where that is proven to equal rendering, so CSS is
inlined and the text derived once per step, not once per email."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Environment, TemplateError
from markupsafe import escape

from campaign.content.mime import PartText
from campaign.content.plaintext import convert, html_to_text, spells_out
from campaign.content.sandbox import TEMPLATE_FAILURES
from campaign.content.skeleton import SCHEMES, Fill, Skeleton, inert, regular, scheme
from campaign.content.step_render import JinjaStepRenderer, RenderedEmail
from campaign.content.template_flow import only_prints

log = logging.getLogger("campaign.render")

#: The names a kind of email gives: the subscriber's keys and the extra names, in order.
_Shape = tuple[tuple[str, ...], tuple[str, ...]]
#: How a custom field (`subscriber.fields.NAME`) is named among the subscriber's values.
_FIELD = "fields."


def _flattened(subscriber: Mapping[str, Any]) -> dict[str, Any]:
    """The subscriber's values with custom fields as `fields.NAME` values of their own, a
    number or yes/no as Jinja prints it: a template that does more with one than print it is
    compared with a real render for each email (it is never proven to only print them)."""
    fields = subscriber.get("fields")
    if not isinstance(fields, Mapping):
        return dict(subscriber)
    flat = {key: value for key, value in subscriber.items() if key != "fields"}
    for name, value in fields.items():
        flat[_FIELD + name] = str(value) if isinstance(value, int) else value
    return flat


class SkeletonStepRenderer:
    """Renders a step by filling each email's values into the step's skeleton, where that is
    proven to equal rendering: once per kind of email for a template that only prints its
    values (`campaign.content.template_flow`), else by rendering the template for this email
    and comparing. Any other email takes the full path, `full`."""

    def __init__(self, full: JinjaStepRenderer, files: Environment) -> None:
        self.full = full
        self.files = files
        # One skeleton per kind of email: its names, and the scheme each value starts with.
        self._skeletons: dict[tuple[_Shape, tuple[str, ...]], Skeleton | None] = {}
        # Placeholders no template can contain by chance.
        self._nonce = secrets.token_hex(6)

    def render(self, subscriber: Mapping[str, Any], extra: Mapping[str, Any]) -> RenderedEmail:
        full, compiled = self.full, self.full.compiled
        context = full.context(subscriber, extra)
        try:
            subject, preheader, names = full.headers(context)
            flat = _flattened(subscriber)
            values = [*flat.values(), subject, preheader, *extra.values()]
            shape = (tuple(flat), tuple(extra))
            rendered: list[str] = []  # the template's output for this email, once rendered

            def raw_html() -> str:
                if not rendered:
                    rendered.append(compiled.html.render(names))
                return rendered[0]

            filled = self._filled(shape, values, raw_html)
            html = filled[0] if filled else PartText(full.inliner.inline(raw_html()))
            if compiled.text:
                text = PartText(compiled.text.render(names))
            else:
                text = filled[1] if filled else PartText(html_to_text(raw_html()))
        except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
            raise full.render_error(exc) from exc
        return RenderedEmail(subject, preheader, html, text)

    def _filled(
        self, shape: _Shape, values: list[Any], raw_html: Callable[[], str]
    ) -> tuple[PartText, PartText] | None:
        """Inlined HTML and text from the step's skeleton, or None where that is not proven."""
        if not all(isinstance(value, str) for value in values):
            return None
        schemes = tuple([scheme(value) if value.startswith(SCHEMES) else "" for value in values])
        key = (shape, schemes)
        if key not in self._skeletons:
            self._skeletons[key] = self._skeleton(shape, schemes)
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

    def _skeleton(self, shape: _Shape, schemes: tuple[str, ...]) -> Skeleton | None:
        """The step rendered once with placeholders, if filling them in is proven to equal
        rendering; None sends every email of this kind down the full path."""
        step, inliner = self.full.step, self.full.inliner
        if {"subscriber", "subject", "preheader"} & set(shape[1]):
            return None  # an extra value would shadow what the renderer itself provides
        names = [*(("subscriber", key) for key in shape[0]), "subject", "preheader", *shape[1]]
        placeholders = [f"{scheme}x{self._nonce}{i}x" for i, scheme in enumerate(schemes)]
        probes = [f"{scheme}Probe{i}z" for i, scheme in enumerate(schemes)]
        pattern = re.compile("(" + "|".join(map(re.escape, placeholders)) + ")")
        try:
            raw = self._placeholder_render(names, placeholders)
            if not inert(raw, pattern):
                log.debug("step %s: a value is used beyond plain text; rendered in full", step.key)
                return None
            html, conversion = inliner.inline(raw), convert(raw)
            # A canary: a full render with other values must give what the skeleton gives.
            probe_raw = self._placeholder_render(names, probes)
            probe_html, probe_text = inliner.inline(probe_raw), html_to_text(probe_raw)
        except (TemplateError, *TEMPLATE_FAILURES, AttributeError) as exc:
            log.debug("step %s: placeholders do not render (%s); rendered in full", step.key, exc)
            return None  # the full path raises the error, if any, for each email
        index = {placeholder: i for i, placeholder in enumerate(placeholders)}

        def split(text: str) -> Fill:
            return Fill.split(text, pattern, index)

        skeleton = Skeleton(
            raw=split(raw),
            html=split(html),
            text=None if self.full.compiled.text else split(conversion.text),
            links=tuple(
                (split(href or ""), split(text), spells_out(href or "", text))
                for href, text in conversion.links
                if pattern.search(f"{href}{text}")
            ),
            used=tuple(i for i, placeholder in enumerate(placeholders) if placeholder in raw),
            only_prints=only_prints(
                self.files,
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

    def _placeholder_render(self, names: list[Any], values: list[str]) -> str:
        named = dict(zip(names, values, strict=True))
        flat = {name[1]: value for name, value in named.items() if isinstance(name, tuple)}
        subscriber: dict[str, Any] = {}
        for key, value in flat.items():
            if key.startswith(_FIELD):
                subscriber.setdefault("fields", {})[key.removeprefix(_FIELD)] = value
            else:
                subscriber[key] = value
        extra = {
            name: value
            for name, value in named.items()
            if isinstance(name, str) and name not in ("subject", "preheader")
        }
        context = self.full.context(subscriber, extra)
        return self.full.compiled.html.render(
            {**context, "subject": named["subject"], "preheader": named["preheader"]}
        )
