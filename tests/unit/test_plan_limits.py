"""A plan file is bounded, and every file it names stays in the content folders.

Hostile YAML is loaded in a child process with a time and memory limit, so a regression shows
as a failed test, never as a hung or swapping test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from campaign.domain.plan import load_plan
from campaign.domain.plan_source import MAX_PLAN_BYTES
from campaign.errors import PlanError, PlanProblem

ROOT = Path(__file__).resolve().parents[2]
HEAD = 'id: demo\nname: "Demo"\nsend_time: "07:00"\n'
STEPS = 'steps:\n  - key: welcome\n    day: 0\n    subject: "Hi"\n    template: a.html\n'

# Loads the plan in a child limited to 1 GiB of memory; prints its problems as JSON.
_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from campaign.errors import PlanError
from campaign.domain.plan import load_plan
try:
    load_plan(sys.argv[1], sys.argv[2])
    print(json.dumps([]))
except PlanError as exc:
    print(json.dumps([[p.line, p.field, p.problem] for p in exc.problems]))
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A plan folder with `templates/a.html` beside it."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.html").write_text("<p>Hello</p>")
    return tmp_path


def _load_bounded(folder: Path, text: str | bytes) -> list[tuple[int | None, str, str]]:
    """The plan's problems, loaded in a child that must finish in 60 s within 1 GiB."""
    path = folder / "plan.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(folder / "templates")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    return [tuple(problem) for problem in json.loads(child.stdout)]  # type: ignore[misc]


def _problems(folder: Path, text: str) -> list[PlanProblem]:
    path = folder / "plan.yaml"
    path.write_text(text)
    with pytest.raises(PlanError) as caught:
        load_plan(path, folder / "templates")
    assert caught.value.exit_code == 2
    return caught.value.problems


def test_billion_laughs_is_refused_at_the_line_that_expands(folder: Path) -> None:
    """Nine levels of ten aliases (a billion values) are refused, fast and in little memory."""
    levels = ['a0: &a0 ["lol"]']
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = HEAD + "\n".join(levels) + "\n" + STEPS

    [(line, _, problem)] = _load_bounded(folder, text)

    assert "expands to more than 100,000 values" in problem
    assert line in range(5, 14)


def test_a_quadratic_blowup_of_one_long_list_is_refused(folder: Path) -> None:
    """One list of 1,000 items aliased 1,000 times is a million values: refused too."""
    items = ", ".join(["x"] * 1000)
    text = HEAD + f"big: &big [{items}]\nmany: [" + ", ".join(["*big"] * 1000) + "]\n" + STEPS

    [(line, _, problem)] = _load_bounded(folder, text)

    assert (line, "expands to more than") == (5, problem[:20])


def test_a_few_aliases_are_still_fine(folder: Path) -> None:
    """A shared preheader through an anchor and alias loads like the same text written twice."""
    text = HEAD + (
        "steps:\n"
        '  - {key: welcome, day: 0, subject: "Hi", preheader: &pre "See you", template: a.html}\n'
        '  - {key: day01, day: 1, subject: "Day 1", preheader: *pre, template: a.html}\n'
    )
    path = folder / "plan.yaml"
    path.write_text(text)

    plan = load_plan(path, folder / "templates")

    assert [step.preheader for step in plan.steps] == ["See you", "See you"]


@pytest.mark.parametrize(
    "value",
    [
        "!!python/object/apply:os.system ['touch PWNED']",
        "!!python/name:os.system",
        "!custom thing",
        "!!binary aGVsbG8=",
        "!!set {a: null}",
        "!!omap [a: 1]",
    ],
)
def test_a_yaml_tag_is_refused_on_its_line(folder: Path, value: str) -> None:
    """Any hand-written tag is refused where it stands; nothing is built from it."""
    text = HEAD + f"sender_name: {value}\n" + STEPS

    [(line, _, problem)] = _load_bounded(folder, text)

    assert line == 4
    assert "is not allowed in a plan" in problem
    assert not (ROOT / "PWNED").exists()


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(folder: Path) -> None:
    """A plan over 1 MiB is refused as a whole; the message says the limit."""
    text = HEAD + STEPS + "#" * MAX_PLAN_BYTES + "\n"

    [(line, field, problem)] = _load_bounded(folder, text)

    assert (line, field) == (None, "")
    assert "larger than 1024 KiB" in problem


def test_a_plan_just_under_the_limit_still_loads(folder: Path) -> None:
    """Comments up to the limit are fine: the limit is on size, not on content."""
    text = HEAD + STEPS
    text += "#" * (MAX_PLAN_BYTES - len(text) - 1) + "\n"

    assert _load_bounded(folder, text) == []


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_refused_not_a_crash(folder: Path, opener: str) -> None:
    """Half a million nested brackets give a plan problem, not a RecursionError traceback."""
    text = HEAD + "sender_name: " + opener * 200_000 + "\n" + STEPS

    [(_, _, problem)] = _load_bounded(folder, text)

    assert "nests deeper than 50 levels" in problem


def test_a_long_single_line_is_bounded_by_the_size_limit(folder: Path) -> None:
    """A 2 MiB scalar on one line is refused by size before YAML parses it."""
    text = HEAD + 'name2: "' + "x" * (2 * MAX_PLAN_BYTES) + '"\n' + STEPS

    [(_, _, problem)] = _load_bounded(folder, text)

    assert "larger than" in problem


# --- confinement: files the plan names stay in the plan's folder, TEMPLATES_DIR, ASSETS_DIR


def _attaching(path: str) -> str:
    return HEAD + STEPS + f"    attachments:\n      - {json.dumps(path)}\n"


@pytest.mark.parametrize(
    "written",
    ["/etc/passwd", "../../../../../../etc/passwd", "../outside.pdf", "/proc/self/environ"],
)
def test_an_attachment_outside_the_content_folders_is_refused_at_its_line(
    tmp_path: Path, written: str
) -> None:
    """An attachment that climbs out of the content folders is an escape on its own line."""
    folder = tmp_path / "plans"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "a.html").write_text("<p>Hello</p>")
    (tmp_path / "outside.pdf").write_bytes(b"%PDF")

    [problem] = _problems(folder, _attaching(written))

    assert (problem.line, problem.field) == (10, "steps[0].attachments[0]")
    assert "outside the content folders" in problem.problem


@pytest.mark.parametrize("written", [".env", ".git/config", "sub/.secret.pdf"])
def test_a_hidden_file_in_the_plan_folder_is_not_content(folder: Path, written: str) -> None:
    """`.env` and other hidden files beside the plan are refused: they are not content."""
    target = folder / written
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("SECRET_KEY=hunter2\n")

    [problem] = _problems(folder, _attaching(written))

    assert (problem.line, problem.field) == (10, "steps[0].attachments[0]")
    assert "hidden" in problem.problem


def test_an_attachment_symlinked_out_of_the_plan_folder_is_refused(
    folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A symlink beside the plan that points elsewhere is resolved first, and refused."""
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.pdf"
    elsewhere.write_bytes(b"%PDF secret")
    (folder / "price-list.pdf").symlink_to(elsewhere)

    [problem] = _problems(folder, _attaching("price-list.pdf"))

    assert problem.field == "steps[0].attachments[0]"
    assert f"through a symlink, to {elsewhere}" in problem.problem


def test_a_symlink_within_the_content_folders_is_fine(folder: Path) -> None:
    """A symlink that stays inside the content folders is an ordinary file."""
    (folder / "real.pdf").write_bytes(b"%PDF")
    (folder / "alias.pdf").symlink_to(folder / "real.pdf")
    path = folder / "plan.yaml"
    path.write_text(_attaching("alias.pdf"))

    plan = load_plan(path, folder / "templates")

    assert plan.steps[0].attachments == (folder / "alias.pdf",)


@pytest.mark.parametrize("written", ["/etc/passwd", "../../../etc/hostname", ".env"])
def test_an_ebook_outside_the_content_folders_is_refused(folder: Path, written: str) -> None:
    """`ebook.file` names only a file in the content folders: it is published at /ebook/."""
    (folder / ".env").write_text("SECRET_KEY=hunter2\n")
    text = HEAD + f'ebook:\n  title: "Guide"\n  file: {json.dumps(written)}\n' + STEPS

    [problem] = _problems(folder, text)

    assert (problem.line, problem.field) == (6, "ebook.file")


def test_an_ebook_in_the_assets_folder_is_accepted(tmp_path: Path) -> None:
    """The shipped layout, plans/ and assets/ side by side, loads with no setting at all."""
    (tmp_path / "plans").mkdir()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "book.pdf").write_bytes(b"%PDF")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.html").write_text("<p>Hello</p>")
    path = tmp_path / "plans" / "plan.yaml"
    path.write_text(HEAD + 'ebook:\n  title: "Guide"\n  file: ../assets/book.pdf\n' + STEPS)

    plan = load_plan(path, tmp_path / "templates")

    assert plan.ebook is not None
    assert plan.ebook.file == tmp_path / "assets" / "book.pdf"


def test_assets_dir_names_another_content_folder(folder: Path, tmp_path: Path) -> None:
    """ASSETS_DIR moves the assets folder; a file there may be attached by absolute path."""
    assets = tmp_path / "media"
    assets.mkdir()
    (assets / "price-list.pdf").write_bytes(b"%PDF")
    path = folder / "plan.yaml"
    path.write_text(_attaching(str(assets / "price-list.pdf")))

    plan = load_plan(path, folder / "templates", assets)

    assert plan.steps[0].attachments == (assets / "price-list.pdf",)


@pytest.mark.parametrize("written", ["/etc/passwd", "../plan.yaml", ".hidden.html"])
def test_a_template_outside_the_templates_folder_is_refused(folder: Path, written: str) -> None:
    """A step template is read only from inside TEMPLATES_DIR, hidden files excepted."""
    (folder / "templates" / ".hidden.html").write_text("x")
    text = HEAD + STEPS.replace("template: a.html", f"template: {written}")

    [problem] = _problems(folder, text)

    assert (problem.line, problem.field) == (8, "steps[0].template")
    assert "inside the templates folder" in problem.problem


def test_a_confirmation_template_outside_the_templates_folder_is_refused(folder: Path) -> None:
    """The double opt-in template is confined like the steps' templates."""
    text = HEAD + 'confirmation:\n  subject: "Confirm"\n  template: ../../../etc/passwd\n' + STEPS

    [problem] = _problems(folder, text)

    assert (problem.line, problem.field) == (6, "confirmation.template")
    assert "inside the templates folder" in problem.problem
