"""Subject tests in the plan: a step lists variants of its subject (and preheader); mistakes in
them are reported at their file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.domain.plan import Plan, load_plan
from campaign.errors import PlanError, PlanProblem

HEAD = """\
id: demo
name: "Demo plan"
send_time: "07:00"
steps:
  - key: welcome
    day: 0
    subject: "Welcome"
    preheader: "Start here"
    template: a.html
"""


def _load(tmp_path: Path, templates: Path, variants: str) -> Plan:
    path = tmp_path / "plan.yaml"
    path.write_text(HEAD + variants, encoding="utf-8")
    return load_plan(path, templates)


def _problems(tmp_path: Path, templates: Path, variants: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(PlanError) as caught:
        _load(tmp_path, templates, variants)
    assert caught.value.exit_code == 2
    problems: list[PlanProblem] = caught.value.problems
    return [(p.line, p.field, p.problem) for p in problems]


def test_variants_are_named_a_b_c_by_position_with_the_steps_own_subject_first(
    tmp_path: Path, templates: Path
) -> None:
    """The step's own subject is `a`; the listed variants follow as b, c, ...; a variant
    without a preheader takes the step's."""
    loaded = _load(
        tmp_path,
        templates,
        '    variants:\n      - subject: "Hello there"\n'
        '      - subject: "Hi"\n        preheader: "Begin"\n',
    )
    step = loaded.steps[0]
    assert [(v.name, v.subject, v.preheader) for v in step.variants] == [
        ("a", "Welcome", "Start here"),
        ("b", "Hello there", "Start here"),
        ("c", "Hi", "Begin"),
    ]
    chosen = step.with_variant("c")
    assert (chosen.subject, chosen.preheader, chosen.variant) == ("Hi", "Begin", "c")


def test_explicit_names_stay_put_when_a_variant_is_removed(tmp_path: Path, templates: Path) -> None:
    """`variant:` names the step's own subject and `name:` a variant's, so removing one
    does not rename the others (the delivery log refers to them by name)."""
    loaded = _load(
        tmp_path,
        templates,
        "    variant: short\n"
        "    variants:\n"
        "      - name: long\n"
        '        subject: "A longer welcome"\n',
    )
    assert loaded.steps[0].variant_names == ("short", "long")


def test_a_step_without_variants_is_unchanged(tmp_path: Path, templates: Path) -> None:
    """A plain `subject:` step tests nothing, and `with_variant` leaves it as it is."""
    step = _load(tmp_path, templates, "").steps[0]
    assert step.variants == ()
    assert step.with_variant("b") is step


def test_an_unknown_variant_falls_back_to_the_steps_own_subject(
    tmp_path: Path, templates: Path
) -> None:
    """A delivery recorded under a variant the plan no longer has (the test ended) gets the
    step's own subject."""
    loaded = _load(tmp_path, templates, '    variants:\n      - subject: "Hello there"\n')
    step = loaded.steps[0]
    assert step.with_variant("z").subject == "Welcome"
    assert step.with_variant("z").variant is None


def test_a_duplicate_variant_name_is_reported_at_its_line(tmp_path: Path, templates: Path) -> None:
    """Two variants called `b` cannot be told apart in the numbers."""
    problems = _problems(
        tmp_path,
        templates,
        '    variants:\n      - subject: "One"\n      - name: b\n        subject: "Two"\n',
    )
    assert problems == [
        (12, "steps[0].variants[1].name", "'b' is already steps[0].variants[0]'s name")
    ]


def test_a_variant_repeating_a_subject_is_reported(tmp_path: Path, templates: Path) -> None:
    """A test of one subject against itself measures nothing; spacing does not hide it."""
    problems = _problems(tmp_path, templates, '    variants:\n      - subject: " Welcome "\n')
    assert problems == [
        (
            11,
            "steps[0].variants[0].subject",
            "the same subject as steps[0]: a test compares different ones",
        )
    ]


def test_an_empty_variant_subject_is_reported(tmp_path: Path, templates: Path) -> None:
    """A blank subject is refused at its line, like a missing one."""
    problems = _problems(tmp_path, templates, '    variants:\n      - subject: "   "\n')
    assert problems == [(11, "steps[0].variants[0].subject", "is empty")]
    missing = _problems(tmp_path, templates, '    variants:\n      - preheader: "x"\n')
    assert missing == [(11, "steps[0].variants[0].subject", "is required")]


def test_more_than_five_subjects_in_a_test_are_refused(tmp_path: Path, templates: Path) -> None:
    """A handful of variants at most: each one splits the audience further."""
    listed = "".join(f'      - subject: "Variant {i}"\n' for i in range(5))
    problems = _problems(tmp_path, templates, "    variants:\n" + listed)
    assert problems == [
        (
            10,
            "steps[0].variants",
            "at most 4 variants besides the step's own subject (5 subjects in one test)",
        )
    ]


@pytest.mark.parametrize("name", ["B", "two words", ""])
def test_a_variant_name_must_be_a_short_identifier(
    tmp_path: Path, templates: Path, name: str
) -> None:
    """Names appear in the delivery log and in URLs: lowercase letters, digits, - and _."""
    problems = _problems(
        tmp_path, templates, f'    variants:\n      - name: "{name}"\n        subject: "Two"\n'
    )
    assert [(line, field) for line, field, _ in problems] == [(11, "steps[0].variants[0].name")]
    assert "lowercase letters" in problems[0][2]


def test_an_unknown_variant_field_is_reported(tmp_path: Path, templates: Path) -> None:
    """A misspelt `subjcet:` is an unknown field at its line, not a silent default."""
    problems = _problems(
        tmp_path, templates, '    variants:\n      - subject: "Two"\n        subjcet: "x"\n'
    )
    assert problems == [(12, "steps[0].variants[0].subjcet", "unknown field (check its spelling)")]


def test_a_variant_name_without_variants_is_reported(tmp_path: Path, templates: Path) -> None:
    """`variant:` names the step's own subject in a test; alone it would do nothing."""
    problems = _problems(tmp_path, templates, "    variant: short\n")
    assert problems == [
        (10, "steps[0].variant", "names the step's subject in a test: add `variants:`")
    ]
