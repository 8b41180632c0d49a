"""Reading a plan file within bounds: its size, its YAML tags and how far aliases expand.

A plan is marketers' input. These limits keep a hostile or broken one from hanging the loader
or taking gigabytes of memory ("billion laughs"); each refusal is a `file:line` problem.
"""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from campaign.errors import PlanError, PlanProblem

#: The largest plan file read: a 30-step plan is about 4 KiB.
MAX_PLAN_BYTES = 1024 * 1024
#: Values in the plan once every alias is expanded: a plan of 1,000 steps has about 8,000.
MAX_EXPANDED_NODES = 100_000
#: How deep mappings and lists may nest (a plan needs 4).
MAX_DEPTH = 50

_CORE = "tag:yaml.org,2002:"
#: What plain YAML 1.2 values resolve to; any other tag is written by hand (`!!python/...`).
_ALLOWED_TAGS = {
    _CORE + name for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
} | {_CORE + "timestamp"}  # an unquoted date: the schema asks for quotes instead


def read_plan_text(path: Path) -> str:
    """The plan's text, refused above MAX_PLAN_BYTES without reading the rest."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise _error(path, None, f"cannot read: {exc.strerror}") from exc
    if len(data) > MAX_PLAN_BYTES:
        raise _error(path, None, f"is larger than {MAX_PLAN_BYTES // 1024} KiB; a plan is text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(path, None, "is not UTF-8 text") from exc


def check_yaml_bounds(yaml: YAML, text: str, path: Path) -> None:
    """Refuse tags, deep nesting and aliases that expand too far, before anything is built."""
    try:
        root = yaml.compose(text)
    except RecursionError as exc:
        raise _error(path, None, f"nests deeper than {MAX_DEPTH} levels") from exc
    except YAMLError:
        return  # the loader reports the syntax error with its line
    if root is not None:
        _measure(root, path, 0, {}, set())


def _measure(node: Node, path: Path, depth: int, sizes: dict[int, int], open_: set[int]) -> int:
    """Values under `node` with aliases expanded, each shared node measured once."""
    line = node.start_mark.line + 1
    tag = str(getattr(node.tag, "value", node.tag))
    if tag not in _ALLOWED_TAGS:
        raise _error(path, line, f"YAML tag {tag.replace(_CORE, '!!')} is not allowed in a plan")
    if depth > MAX_DEPTH:
        raise _error(path, line, f"nests deeper than {MAX_DEPTH} levels")
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise _error(path, line, "an alias refers to itself")
    open_.add(key)
    children: list[Node] = []
    if isinstance(node, MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, SequenceNode):
        children = list(node.value)
    size = 1
    for child in children:
        size += _measure(child, path, depth + 1, sizes, open_)
        if size > MAX_EXPANDED_NODES:
            raise _error(
                path,
                line,
                f"expands to more than {MAX_EXPANDED_NODES:,} values through aliases (*name)",
            )
    open_.discard(key)
    sizes[key] = size
    return size


def _error(path: Path, line: int | None, message: str) -> PlanError:
    return PlanError([PlanProblem(str(path), line, "", message)])
