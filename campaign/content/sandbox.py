"""The Jinja2 environments for marketers' templates: sandboxed, confined, and checked at load.

Plans and templates are marketers' input, not operators' code: they render in Jinja's
immutable sandbox, see only the values the README documents, read templates only from
inside the templates folder, and a template that reaches for Python internals is refused
when it loads, with its file:line, before any email is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, nodes, select_autoescape
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The longest string or list `*` may build, and the largest exponent `**` may take: a
#: template is text, and constant folding would otherwise run these when a template loads.
MAX_REPEAT = 100_000
MAX_EXPONENT = 256

#: Names of str methods and filters that pad a value to a width given as a number.
_WIDENING = {"center", "ljust", "rjust", "zfill", "expandtabs", "indent", "wordwrap"}
#: A `%` or `{}` format with a width or precision of 6 digits or more, or taken from an
#: argument (`%*d`, `{:{}}`), where it cannot be checked before formatting.
_WIDE_FORMAT = re.compile(r"%[-#0 +]*(\d{6,}|\d*\.\d{6,}|\*|\d*\.\*)|\{[^{}]*:[^{}]*(\d{6,}|\{)")

#: What rendering a marketer's template may raise besides TemplateError: its own mistakes
#: (`1/0`, `[][1]`, `range(10**9)`, a macro calling itself), never ours to crash on.
TEMPLATE_FAILURES = (ArithmeticError, LookupError, TypeError, ValueError, RecursionError)

#: Methods that change a value in place (the immutable sandbox refuses them at render).
_MUTATING = {
    *("append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse"),
    *("update", "setdefault", "popitem", "add", "discard"),
    *("difference_update", "intersection_update", "symmetric_difference_update"),
}


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with only `range` as a global, and bounded sizes.

    The sandbox stops code from running; the bounds stop one short expression from building
    gigabytes (`'x' * 10**9`, `2 ** 10**9`, `'x'|center(10**9)`, `'%09999999d' % 1`), which
    Jinja's constant folding would otherwise do as the template loads.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(undefined=StrictUndefined, **options)
        # lipsum, cycler, joiner, namespace and dict are not among the documented names.
        self.globals = {"range": self.globals["range"]}
        for name in ("center", "indent", "wordwrap"):
            self.filters[name] = _bounded(name, self.filters[name])
        self.filters["format"] = _checked_format(self.filters["format"])

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _WIDENING:
                _check_widths(name, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`'...'.format` as the sandbox wraps it, refused if a field is too wide."""
        owner = getattr(value, "__self__", None)
        if isinstance(owner, str) and getattr(value, "__name__", "") in ("format", "format_map"):
            _check_format(owner)
        return super().wrap_str_format(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent above {MAX_EXPONENT} is not allowed in a template")
        if operator == "*":
            sized, count = (left, right) if isinstance(right, int) else (right, left)
            if (
                isinstance(sized, str | list | tuple)
                and isinstance(count, int)
                and len(sized) * count > MAX_REPEAT
            ):
                raise SecurityError(f"a value repeated past {MAX_REPEAT:,} items is not allowed")
        if operator == "%" and isinstance(left, str):
            _check_format(left)
        return super().call_binop(context, operator, left, right)


def _check_widths(name: str, args: Any, kwargs: Any) -> None:
    if any(isinstance(arg, int) and arg > MAX_REPEAT for arg in [*args, *kwargs.values()]):
        raise SecurityError(f"`{name}` wider than {MAX_REPEAT:,} is not allowed in a template")


def _check_format(text: str) -> None:
    if _WIDE_FORMAT.search(text):
        raise SecurityError(f"a format wider than {MAX_REPEAT:,} is not allowed in a template")


def _bounded(name: str, jinja_filter: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_widths(name, args, kwargs)
        return jinja_filter(value, *args, **kwargs)

    return bounded


def _checked_format(jinja_filter: Callable[..., Any]) -> Callable[..., Any]:
    def checked(value: Any, *args: Any, **kwargs: Any) -> Any:
        _check_format(str(value))
        return jinja_filter(value, *args, **kwargs)

    return checked


class ConfinedLoader(FileSystemLoader):
    """Loads templates from one folder, refusing any that a symlink takes out of it."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.root = folder.resolve()

    def get_source(self, environment: Environment, template: str) -> Any:
        source, filename, uptodate = super().get_source(environment, template)
        real = Path(filename).resolve()
        if not real.is_relative_to(self.root) or any(
            part.startswith(".") for part in real.relative_to(self.root).parts
        ):
            raise SecurityError(f"{template} resolves to {real}, outside the templates folder")
        return source, filename, uptodate


def file_templates(folder: Path) -> TemplateSandbox:
    """The sandbox for template files: HTML autoescaped, unknown names an error."""
    return TemplateSandbox(
        loader=ConfinedLoader(folder),
        autoescape=select_autoescape(["html", "htm"], default_for_string=False),
        auto_reload=False,
        keep_trailing_newline=True,
    )


def string_templates() -> TemplateSandbox:
    """The sandbox for subjects and preheaders: header and preview text, not HTML."""
    return TemplateSandbox(autoescape=False)


def unsafe_uses(tree: nodes.Template) -> list[tuple[int, str]]:
    """Line and description of each use of Python internals or in-place change in `tree`."""
    found: list[tuple[int, str]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Call)):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            found.append((node.lineno, f"`.{node.attr}` reaches into Python internals"))
        elif isinstance(node, nodes.Getitem) and _private(node.arg):
            found.append((node.lineno, '`["_..."]` reaches into Python internals'))
        elif isinstance(node, nodes.Filter) and any(map(_private, _attribute_names(node))):
            found.append(
                (
                    node.lineno,
                    f"`|{node.name}` of an `_...` attribute reaches into Python internals",
                )
            )
        elif (
            isinstance(node, nodes.Call)
            and isinstance(node.node, nodes.Getattr)
            and node.node.attr in _MUTATING
        ):
            found.append((node.lineno, f"`.{node.node.attr}()` changes a value in place"))
    return found


def _attribute_names(node: nodes.Filter) -> list[nodes.Expr]:
    """The arguments of a filter that name an attribute to read."""
    named = [kw.value for kw in node.kwargs if kw.key == "attribute"]
    if node.name in ("attr", "selectattr", "rejectattr") and node.args:
        named.append(node.args[0])
    return named


def _private(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Const) and isinstance(node.value, str) and node.value[:1] == "_"


@dataclass(frozen=True)
class LoadedTemplate:
    """One template of a graph, parsed."""

    name: str
    filename: str  # the file it was read from, or its name when the loader has no files
    tree: nodes.Template
    #: it extends, includes or imports a template chosen at render time, not by a constant name
    refers_at_render_time: bool


def template_graph(environment: Environment, name: str) -> Iterator[LoadedTemplate]:
    """`name` and every template it extends, includes or imports, each loaded and parsed once,
    as they are needed: a caller that stops early loads no more. Raises TemplateError for a
    template that does not load or parse."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        source, filename, _ = environment.loader.get_source(environment, current)  # type: ignore[union-attr]
        tree = environment.parse(source, current, filename)
        at_render_time = False
        for node in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
            named = getattr(node, "template", None)
            if isinstance(named, nodes.Const) and isinstance(named.value, str):
                pending.append(named.value)
            else:
                at_render_time = True
        yield LoadedTemplate(current, filename or current, tree, at_render_time)


def unsafe_in_template(environment: Environment, name: str) -> list[tuple[str, int, str]]:
    """File, line and description of each unsafe use in `name` and every template it reaches."""
    return [
        (loaded.filename, line, what)
        for loaded in template_graph(environment, name)
        for line, what in unsafe_uses(loaded.tree)
    ]
