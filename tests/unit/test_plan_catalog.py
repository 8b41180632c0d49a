"""`then:` across a folder of plans: an unknown id, a plan naming itself and a loop are each a
problem at the plan file's `then:` line."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.domain.plan_catalog import load_catalog
from campaign.errors import PlanError

TEMPLATE = """\
id: {id}
name: "Plan {id}"
send_time: "07:00"
{then}steps:
  - key: one
    day: 1
    subject: "One"
    template: one.html
"""


def _folder(tmp_path: Path, **thens: str | None) -> Path:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "one.html").write_text("<p>one</p>")
    folder = tmp_path / "plans"
    folder.mkdir()
    for plan_id, then in thens.items():
        line = f"then: {then}\n" if then else ""
        (folder / f"{plan_id}.yaml").write_text(TEMPLATE.format(id=plan_id, then=line))
    return folder


def _problems(tmp_path: Path, **thens: str | None) -> list[str]:
    folder = _folder(tmp_path, **thens)
    with pytest.raises(PlanError) as caught:
        load_catalog(folder, tmp_path / "templates", default_plan="a")
    return [str(problem) for problem in caught.value.problems]


def test_then_naming_no_plan_is_a_problem_at_its_line(tmp_path: Path) -> None:
    """`then: nope` names the file, line 4 and the field, and lists the plans there are."""
    [problem] = _problems(tmp_path, a="nope", b=None)
    assert problem.startswith(f"{tmp_path / 'plans' / 'a.yaml'}:4: then: no plan has id 'nope'")
    assert "a, b" in problem


def test_then_naming_its_own_plan_is_a_loop(tmp_path: Path) -> None:
    """A plan chaining into itself is refused at its `then:`."""
    [problem] = _problems(tmp_path, a="a")
    assert problem.startswith(f"{tmp_path / 'plans' / 'a.yaml'}:4: then:")
    assert "itself" in problem


def test_a_chain_that_comes_back_is_refused_at_each_plan(tmp_path: Path) -> None:
    """a -> b -> c -> a: each plan of the loop says where the chain comes back."""
    problems = _problems(tmp_path, a="b", b="c", c="a")
    assert len(problems) == 3
    assert any("a -> b -> c -> a" in p for p in problems)


def test_a_chain_that_ends_is_fine(tmp_path: Path) -> None:
    """a -> b -> c, c without `then:`: loaded, a the default."""
    folder = _folder(tmp_path, a="b", b="c", c=None)
    catalog = load_catalog(folder, tmp_path / "templates", default_plan="a")
    assert [plan.then for plan in catalog] == ["b", "c", None]


def test_a_plan_file_whose_then_has_no_plan_beside_it_runs_with_a_warning(
    tmp_path: Path,
) -> None:
    """A plan file copied alone: its unknown `then:` is a warning (the chain ends), not an
    error; in a folder the same file is an error."""
    folder = _folder(tmp_path, a="gone")
    catalog = load_catalog(folder / "a.yaml", tmp_path / "templates")
    assert [str(w) for w in catalog.warnings] == [
        f"{folder / 'a.yaml'}:4: then: no plan has id 'gone' (plans: a)"
    ]
    with pytest.raises(PlanError):
        load_catalog(folder, tmp_path / "templates")


def _with_fields(folder: Path, plan_id: str, fields: str) -> Path:
    path = folder / f"{plan_id}.yaml"
    path.write_text(path.read_text().replace("steps:\n", f"fields:\n{fields}steps:\n", 1))
    return path


def test_two_plans_declaring_one_field_differently_is_a_problem_at_the_second(
    tmp_path: Path,
) -> None:
    """A field is stored once per person: `side` as a choice in one plan and text in another
    is refused at the second declaration's line, naming the first."""
    folder = _folder(tmp_path, a=None, b=None)
    first = _with_fields(folder, "a", "  side: {type: choice, choices: [left, right]}\n")
    second = _with_fields(folder, "b", "  age: {type: number}\n  side: {type: text}\n")
    with pytest.raises(PlanError) as caught:
        load_catalog(folder, tmp_path / "templates", default_plan="a")
    [problem] = [str(p) for p in caught.value.problems]
    assert problem.startswith(f"{second}:6: fields.side: 'side' is declared differently in ")
    assert f"{first}:5" in problem


def test_plans_declaring_one_field_alike_share_it_and_every_field_is_known(
    tmp_path: Path,
) -> None:
    """The same declaration in two plans is one field; the catalog knows each plan's fields."""
    folder = _folder(tmp_path, a=None, b=None)
    _with_fields(folder, "a", "  side: {type: choice, choices: [left, right]}\n")
    _with_fields(
        folder, "b", "  side: {type: choice, choices: [left, right]}\n  age: {type: number}\n"
    )
    catalog = load_catalog(folder, tmp_path / "templates", default_plan="a")
    assert list(catalog.declared_fields) == ["side", "age"]
