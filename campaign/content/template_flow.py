"""Whether a template only prints its per-email values, read from its syntax tree.

If every per-email value appears only as `{{ value }}` (or `{{ subscriber.key }}`), nothing the
template decides depends on one, so its output for any values is its output for stand-ins
with each value put in place as Jinja2 prints it. `campaign.render` then fills a step's
skeleton in without rendering the template for every email. Anything else is not proven.
"""

from __future__ import annotations

from collections.abc import Collection

from jinja2 import Environment, TemplateError, nodes

from campaign.content.sandbox import template_graph

# Output that can be captured, transformed or escaped otherwise (macros, `{% call %}`,
# `{% set %}...{% endset %}`, `{% filter %}`, `{% autoescape %}`), or macros from elsewhere.
_CAPTURING = (
    nodes.Macro,
    nodes.CallBlock,
    nodes.AssignBlock,
    nodes.FilterBlock,
    nodes.EvalContextModifier,
    nodes.Import,
    nodes.FromImport,
)
#: Template functions whose result depends only on their constant arguments, never on an email.
PURE_FUNCTIONS = frozenset({"illustration"})
#: Filters whose result differs from one render to the next.
_IMPURE_FILTERS = {"random"}


def only_prints(
    environment: Environment,
    template: str,
    strings: Collection[str],
    mapping: str,
    keys: Collection[str],
) -> bool:
    """Whether `template`, and every template it extends or includes, autoescapes and uses
    the per-email names only by printing them: each of `strings` as `{{ name }}`, and `mapping`
    (a dict of strings) as `{{ mapping.key }}` or `{{ mapping["key"] }}` for one of its `keys`."""
    per_email = {*strings, mapping}
    try:
        for loaded in template_graph(environment, template):
            # Values are filled in escaped, as an autoescaping template prints them.
            if not _autoescaped(environment, loaded.name):
                return False
            if loaded.refers_at_render_time:
                return False  # a template chosen at render time
            if any(True for _ in loaded.tree.find_all(_CAPTURING)):
                return False
            if any(
                name.name in PURE_FUNCTIONS and name.ctx != "load"
                for name in loaded.tree.find_all(nodes.Name)
            ):
                return False  # a pure function's name reassigned: it could be anything
            if not _printed_only(loaded.tree, None, per_email, mapping, set(keys)):
                return False
    except TemplateError:
        return False
    return True


def _autoescaped(environment: Environment, name: str) -> bool:
    setting = environment.autoescape
    return bool(setting(name) if callable(setting) else setting)


def _printed_only(
    node: nodes.Node, parent: nodes.Node | None, per_email: set[str], mapping: str, keys: set[str]
) -> bool:
    if isinstance(node, nodes.Filter) and node.name in _IMPURE_FILTERS:
        return False
    if isinstance(node, nodes.Call) and isinstance(parent, nodes.Output) and _pure_call(node):
        return True
    if isinstance(node, nodes.Call) and not (
        isinstance(parent, nodes.Output) and _renders_a_block(node)
    ):
        return False  # a call's result could hold values, or differ from render to render
    if isinstance(node, nodes.Name) and node.name in per_email:
        if node.ctx != "load" or node.name == mapping:
            return False  # assigned to, or the mapping itself used; a printed key is below
        if not isinstance(parent, nodes.Output):
            return False
    if _mapping_key(node, mapping, keys) is not None:
        return isinstance(parent, nodes.Output)
    return all(
        _printed_only(child, node, per_email, mapping, keys) for child in node.iter_child_nodes()
    )


def _pure_call(call: nodes.Call) -> bool:
    """`illustration("chin-tuck")`: a pure function given only constants prints the same
    markup for every email."""
    return (
        isinstance(call.node, nodes.Name)
        and call.node.name in PURE_FUNCTIONS
        and all(isinstance(arg, nodes.Const) for arg in call.args)
        and not (call.kwargs or call.dyn_args or call.dyn_kwargs)
    )


def _renders_a_block(call: nodes.Call) -> bool:
    """`super()` or `self.block()`: the template's own output, printed as it is."""
    if call.args or call.kwargs or call.dyn_args or call.dyn_kwargs:
        return False
    callee = call.node
    if isinstance(callee, nodes.Name):
        return callee.name == "super"
    return (
        isinstance(callee, nodes.Getattr)
        and isinstance(callee.node, nodes.Name)
        and callee.node.name == "self"
    )


def _mapping_key(node: nodes.Node, mapping: str, keys: set[str]) -> str | None:
    """The key of `{{ mapping.key }}` or `{{ mapping["key"] }}`, if `node` is one of those.

    A key that is also a dict attribute (`items`, `get`) would print the method instead.
    """
    if isinstance(node, nodes.Getattr):
        target, key = node.node, node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        target, key = node.node, node.arg.value
    else:
        return None
    if not (isinstance(target, nodes.Name) and target.name == mapping):
        return None
    if not isinstance(key, str) or key not in keys or hasattr(dict, key):
        return None
    return key


def reads_key(
    environment: Environment, templates: Collection[str], sources: Collection[str], key: str
) -> bool:
    """Whether `templates` (and every template they reach) or the template `sources` (a
    subject, a preheader) may read `subscriber.<key>`: False only where every use of
    `subscriber` is proven to read another key. A step that never reads custom fields is
    given none, so its emails keep the skeleton path (its values are all text)."""
    try:
        trees = [environment.parse(source) for source in sources]
        for name in templates:
            for loaded in template_graph(environment, name):
                if loaded.refers_at_render_time:
                    return True
                trees.append(loaded.tree)
    except TemplateError:
        return True  # the full path reports it
    return any(_reads(tree, None, key) for tree in trees)


def _reads(node: nodes.Node, parent: nodes.Node | None, key: str) -> bool:
    if isinstance(node, nodes.Name) and node.name == "subscriber":
        if isinstance(parent, nodes.Getattr) and parent.node is node:
            return parent.attr == key
        if isinstance(parent, nodes.Getitem) and parent.node is node:
            arg = parent.arg
            return not (isinstance(arg, nodes.Const) and arg.value != key)
        return True  # the whole mapping used: it could reach any key
    return any(_reads(child, node, key) for child in node.iter_child_nodes())
