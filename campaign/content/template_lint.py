"""What a template can get wrong and still render: a `{% block %}` its base template does not
define (its content silently never shows), an empty file, and a relative link (a mail client
has no page to resolve it against). Each finding is located at the template's file:line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, TemplateError, nodes

from campaign.content.sandbox import TEMPLATE_FAILURES, LoadedTemplate, template_graph
from campaign.content.step_render import relative

# href and src attributes in a template's source, quoted as HTML allows.
_LINK = re.compile(r"""\b(href|src)\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
# an absolute URL: a scheme (https:, mailto:, tel:, cid:...) before anything else.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def template_findings(
    environment: Environment,
    name: str,
    templates_dir: Path,
    expand: Callable[[str], str | None],
) -> Iterator[tuple[str, int, str]]:
    """`(file, line, problem)` for `name` and every template it reaches; `expand` renders an
    attribute value holding template code for a sample subscriber (None: it cannot say)."""
    try:
        graph = {loaded.name: loaded for loaded in template_graph(environment, name)}
    except TemplateError:
        return  # the compiler reports templates that do not load or parse
    for loaded in graph.values():
        where = relative(loaded.filename, templates_dir)
        source = _source(loaded)
        if source is not None and not source.strip():
            yield where, 1, "the template is empty"
            continue
        yield from _unknown_blocks(loaded, where, graph)
        if source is not None:
            yield from _relative_links(source, where, expand)


def _source(loaded: LoadedTemplate) -> str | None:
    try:
        return Path(loaded.filename).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _defined_blocks(name: str, graph: Mapping[str, LoadedTemplate], seen: set[str]) -> set[str]:
    """Blocks `name` defines, with those of every template it extends."""
    loaded = graph.get(name)
    if loaded is None or name in seen:
        return set()
    seen.add(name)
    blocks = {block.name for block in loaded.tree.find_all(nodes.Block)}
    parent = _parent(loaded)
    return blocks | (_defined_blocks(parent, graph, seen) if parent else set())


def _parent(loaded: LoadedTemplate) -> str | None:
    extends = loaded.tree.find(nodes.Extends)
    named = getattr(extends, "template", None)
    if isinstance(named, nodes.Const) and isinstance(named.value, str):
        return named.value
    return None


def _unknown_blocks(
    loaded: LoadedTemplate, where: str, graph: Mapping[str, LoadedTemplate]
) -> Iterator[tuple[str, int, str]]:
    """A block the templates it extends do not define: Jinja drops its content silently."""
    parent = _parent(loaded)
    if parent is None:
        return
    known = _defined_blocks(parent, graph, set())
    for block in loaded.tree.find_all(nodes.Block):
        if block.name in known:
            continue
        close = difflib.get_close_matches(block.name, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(sorted(known)) or "none"
        yield (
            where,
            block.lineno,
            f"unknown block {block.name!r}: {parent} defines {listed}{hint}",
        )


def _relative_links(
    source: str, where: str, expand: Callable[[str], str | None]
) -> Iterator[tuple[str, int, str]]:
    """An href or src that is not an absolute URL, as written or once its code is rendered."""
    for match in _LINK.finditer(source):
        attribute = match.group(1).lower()
        written = match.group(2) if match.group(2) is not None else match.group(3)
        value = written
        if "{{" in written or "{%" in written:
            expanded = expand(written)
            if expanded is None:
                continue  # a loop or set variable: not knowable here
            value = expanded
        if _absolute(value):
            continue
        line = source.count("\n", 0, match.start()) + 1
        shown = written if value == written else f"{written} (gives {value!r})"
        yield (
            where,
            line,
            f"relative link in {attribute}: {shown}; emails need an absolute URL"
            " such as https://example.com/page or {{ public_base_url }}/page",
        )


def _absolute(value: str) -> bool:
    value = value.strip()
    if not _SCHEME.match(value):
        return False
    parts = urlsplit(value)
    if parts.scheme in ("http", "https"):
        return bool(parts.netloc)
    return True


def expander(environment: Environment, context: Mapping[str, Any]) -> Callable[[str], str | None]:
    """Renders an attribute value's template code for one sample context."""

    def expand(written: str) -> str | None:
        try:
            return environment.from_string(written).render(context)
        except (TemplateError, *TEMPLATE_FAILURES, AttributeError):
            return None

    return expand
