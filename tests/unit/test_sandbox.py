"""Plans and templates are marketers' input: they render in Jinja's sandbox, see only the
documented names, and a template that reaches for Python internals is refused at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from campaign.content.plan_check import check_plan, shared_context
from campaign.content.render import Renderer, subscriber_context
from campaign.domain.plan import Plan, load_plan
from campaign.errors import PlanError, PlanProblem, RenderError
from campaign.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-real-production-secret-key-0123456789abcdef"

# Each would run a command, read Python internals or change a value if it were not refused.
INTERNALS = [
    "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum.__globals__ }}",
    "{{ self.__dict__ }}",
    "{{ subscriber['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ plan|map(attribute='__class__')|list }}",
    "{% set x = [] %}{{ x.append(1) }}",
    "{{ subscriber.update({'email': 'x@evil.example'}) }}",
    "{{ plan.pop('id') }}",
]
# The same, spelt so that no reading of the source can see it: the sandbox refuses it as it runs.
DISGUISED = [
    "{{ subscriber|attr(('_', '_class__')|join) }}",
    "{{ step[('_', '_class__')|join] }}",
    "{{ '{0.__class__}'.format(subscriber) }}",
    "{% set x = [] %}{% set add = x.append %}{{ add(1) }}",
]
# Names that are not documented: Jinja's own globals, and what an app might have passed.
UNDOCUMENTED = [
    "config",
    "settings",
    "secret_key",
    "request",
    "environ",
    "os",
    "cycler",
    "joiner",
    "lipsum",
    "namespace",
    "dict",
]
# One expression that would build gigabytes (or take minutes) if it ran unbounded.
HUGE = [
    "{{ 'x' * 10000000 }}",
    "{{ [0] * 10000000 }}",
    "{{ 2 ** 10000000 }}",
    "{{ 'x'|center(10000000) }}",
    "{{ 'x'|indent(10000000, true) }}",
    "{{ 'x'.ljust(10000000) }}",
    "{{ '%010000000d' % 1 }}",
    "{{ '%*d' % (10000000, 1) }}",
    "{{ '%010000000d'|format(1) }}",
    "{{ '{:>10000000}'.format(1) }}",
    "{{ '{:>{}}'.format(1, 10000000) }}",
    "{{ range(10000000)|list|length }}",
]
SAMPLES = [
    {
        "subscriber": subscriber_context("ann@example.com", "Ann"),
        "extra": {"unsubscribe_url": "https://news.example.org/unsubscribe/x"},
    }
]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch folder with `templates/a.html`, the working directory of the test."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.html").write_text("<p>Hello {{ subscriber.name }}</p>\n")
    monkeypatch.chdir(tmp_path)  # a command run by a template would write here
    return tmp_path


def _plan(folder: Path, subject: str = "Hi", template: str = "a.html", pre: str = "") -> Plan:
    """A one-step plan: subject on line 7, preheader on line 8, template on line 9."""
    path = folder / "plan.yaml"
    path.write_text(
        'id: demo\nname: "Demo"\nsend_time: "07:00"\nsteps:\n  - key: welcome\n    day: 0\n'
        f"    subject: {json.dumps(subject)}\n    preheader: {json.dumps(pre)}\n"
        f"    template: {template}\n"
    )
    return load_plan(path, folder / "templates")


def _checked(plan: Plan, folder: Path) -> list[PlanProblem]:
    return Renderer(plan, folder / "templates", {}).check(SAMPLES)


def _with_template(folder: Path, body: str) -> Plan:
    (folder / "templates" / "b.html").write_text(f"<p>\n{body}\n</p>\n")
    return _plan(folder, template="b.html")


@pytest.mark.parametrize("payload", INTERNALS)
def test_python_internals_in_a_subject_are_refused_at_its_line(folder: Path, payload: str) -> None:
    """A subject reaching for internals is a problem at the subject's line, and never runs."""
    problems = Renderer(_plan(folder, payload), folder / "templates", {}).problems

    assert problems
    assert {(p.line, p.field) for p in problems} == {(7, "steps[0].subject")}
    assert all("not allowed" in p.problem for p in problems)
    assert not (folder / "PWNED").exists()


@pytest.mark.parametrize("payload", INTERNALS)
def test_python_internals_in_a_template_are_refused_with_its_file_and_line(
    folder: Path, payload: str
) -> None:
    """A template reaching for internals is refused at load, naming the template's own line."""
    problems = Renderer(_with_template(folder, payload), folder / "templates", {}).problems

    assert problems
    assert {(p.line, p.field) for p in problems} == {(9, "steps[0].template")}
    assert all("b.html:2:" in p.problem and "not allowed" in p.problem for p in problems)
    assert not (folder / "PWNED").exists()


def test_internals_in_a_base_template_refuse_the_steps_that_extend_it(folder: Path) -> None:
    """A layout the step extends is read too: its unsafe line is named, not the step's file."""
    (folder / "templates" / "base.html").write_text("x\n{{ lipsum.__globals__ }}\n")
    (folder / "templates" / "b.html").write_text('{% extends "base.html" %}\n')

    [problem] = Renderer(_plan(folder, template="b.html"), folder / "templates", {}).problems

    assert "base.html:2:" in problem.problem


@pytest.mark.parametrize("payload", DISGUISED)
@pytest.mark.parametrize("where", ["subject", "template"])
def test_disguised_internals_fail_as_a_render_error_and_never_run(
    folder: Path, payload: str, where: str
) -> None:
    """What no reading of the source can catch the sandbox refuses as it renders."""
    plan = _plan(folder, payload) if where == "subject" else _with_template(folder, payload)
    renderer = Renderer(plan, folder / "templates", {})

    [problem] = renderer.check(SAMPLES)
    with pytest.raises(RenderError):
        renderer.render_for(plan.steps[0], SAMPLES[0]["subscriber"], unsubscribe_url="u")

    assert problem.field == f"steps[0].{where}"
    assert "unsafe" in problem.problem


@pytest.mark.parametrize("name", UNDOCUMENTED)
def test_an_undocumented_name_is_an_error_not_a_value(folder: Path, name: str) -> None:
    """`config`, `settings`, Jinja's own helpers: nothing a template is not documented to get."""
    [problem] = _checked(_plan(folder, f"{{{{ {name} }}}}"), folder)

    assert (problem.line, problem.field) == (7, "steps[0].subject")
    assert f"'{name}' is undefined" in problem.problem


def test_templates_see_exactly_the_documented_names_and_never_the_secret_key() -> None:
    """The names a template sees are the README's list, and no value holds SECRET_KEY."""
    settings = Settings.from_env(
        {
            "SECRET_KEY": SECRET,
            "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        }
    )
    plan = load_plan(settings.plan_path, settings.templates_dir)
    renderer = Renderer(plan, settings.templates_dir, shared_context(settings, plan))
    links = {"unsubscribe_url": "u", "view_url": "v/welcome", "lesson_base": "v/"}  # the composer's
    context = renderer.context(plan.steps[0], subscriber_context("ann@example.com", "Ann"), **links)

    assert set(context) == {
        *("subscriber", "day", "step", "plan", "unsubscribe_url", "postal_address"),
        *("sender_name", "sender_address", "ebook", "ebook_url", "attached", "public_base_url"),
        *("view_url", "lesson_base", "reply_address"),
    }
    assert SECRET not in repr(context)
    # no lipsum, cycler, joiner, namespace; illustration() prints a picture by its key.
    assert set(renderer._files.globals) == {"range", "illustration"}


@pytest.mark.parametrize("payload", HUGE)
@pytest.mark.parametrize("where", ["subject", "template"])
def test_an_expression_that_builds_megabytes_is_refused(
    folder: Path, payload: str, where: str
) -> None:
    """A short expression cannot make a template build megabytes, at load or at render."""
    plan = _plan(folder, payload) if where == "subject" else _with_template(folder, payload)

    [problem] = _checked(plan, folder)

    assert problem.field == f"steps[0].{where}"
    assert "not allowed" in problem.problem or "Range too big" in problem.problem


def test_ordinary_arithmetic_and_formatting_still_work(folder: Path) -> None:
    """The bounds leave what a marketer writes alone: small repeats, powers and formats."""
    subject = "{{ '=' * 3 }} {{ 2 ** 10 }} {{ '%05d' % 42 }} {{ '{:,}'.format(1234567) }}"
    plan = _plan(folder, subject)
    renderer = Renderer(plan, folder / "templates", {})

    email = renderer.render_for(plan.steps[0], SAMPLES[0]["subscriber"], unsubscribe_url="u")

    assert email.subject == "=== 1024 00042 1,234,567"


@pytest.mark.parametrize(
    "payload",
    ["{{ 1 / 0 }}", "{{ [][1] }}", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"],
)
def test_a_template_that_fails_in_python_is_a_plan_problem_not_a_crash(
    folder: Path, payload: str
) -> None:
    """Division by zero, a missing index or endless recursion is reported, not raised."""
    [problem] = _checked(_with_template(folder, payload), folder)

    assert problem.field == "steps[0].template"
    assert "b.html:2:" in problem.problem


@pytest.mark.parametrize(
    "name",
    [
        "{{ 7*7 }}",
        "{% if true %}x{% endif %}",
        "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
        "{% raw %}",
        "{#",
    ],
)
def test_a_subscriber_name_with_jinja_syntax_is_printed_as_written(folder: Path, name: str) -> None:
    """A name is data, not template: its braces reach the email as text, and nothing runs."""
    plan = _plan(folder, "Hi {{ subscriber.name }}", pre="For {{ subscriber.first_name }}")
    renderer = Renderer(plan, folder / "templates", {})

    email = renderer.render_for(
        plan.steps[0], subscriber_context("ann@example.com", name), unsubscribe_url="u"
    )

    assert email.subject == f"Hi {name}"
    assert email.preheader == f"For {name}"
    assert name.replace("'", "&#39;") in email.html
    assert "49" not in email.subject
    assert not (folder / "PWNED").exists()


def test_an_undefined_name_in_a_subject_is_reported_at_the_subject_line(folder: Path) -> None:
    """`{{ nickname }}` in a subject names the plan's subject line, not the template."""
    [problem] = _checked(_plan(folder, "Hi {{ subscriber.nickname }}"), folder)

    assert (problem.line, problem.field) == (7, "steps[0].subject")
    assert "nickname" in problem.problem


def test_an_undefined_name_in_a_subject_names_the_subject_when_an_email_fails(
    folder: Path,
) -> None:
    """At send time the error says the subject failed, not a template that is fine."""
    plan = _plan(folder, "Hi {{ subscriber.nickname }}")
    renderer = Renderer(plan, folder / "templates", {})

    with pytest.raises(RenderError) as caught:
        renderer.render_for(plan.steps[0], SAMPLES[0]["subscriber"], unsubscribe_url="u")

    assert "failed to render: subject: 'dict object' has no attribute 'nickname'" in str(
        caught.value
    )


def test_an_undefined_name_in_a_preheader_is_reported_at_the_preheader_line(
    folder: Path,
) -> None:
    """`{{ coupon }}` in a preheader names the plan's preheader line."""
    [problem] = _checked(_plan(folder, pre="Use {{ coupon }}"), folder)

    assert (problem.line, problem.field) == (8, "steps[0].preheader")
    assert "'coupon' is undefined" in problem.problem


def test_a_template_symlinked_out_of_the_templates_folder_is_refused(folder: Path) -> None:
    """A symlink in the templates folder to a file elsewhere is an escape, not a template."""
    (folder / "secret.txt").write_text("SECRET_KEY=hunter2\n")
    (folder / "templates" / "link.html").symlink_to(folder / "secret.txt")

    with pytest.raises(PlanError) as caught:
        _plan(folder, template="link.html")

    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (9, "steps[0].template")
    assert "inside the templates folder" in problem.problem


def test_an_include_symlinked_out_of_the_templates_folder_is_refused(folder: Path) -> None:
    """`{% include %}` of a symlink pointing out of the folder fails; the file is never shown."""
    (folder / "secret.txt").write_text("SECRET_KEY=hunter2\n")
    (folder / "templates" / "part.html").symlink_to(folder / "secret.txt")
    (folder / "templates" / "b.html").write_text('<p>{% include "part.html" %}</p>\n')
    plan = _plan(folder, template="b.html")
    renderer = Renderer(plan, folder / "templates", {})

    [problem] = renderer.problems
    with pytest.raises(RenderError) as caught:
        renderer.render_for(plan.steps[0], SAMPLES[0]["subscriber"], unsubscribe_url="u")

    assert "outside the templates folder" in problem.problem
    assert "hunter2" not in str(caught.value)


def test_the_shipped_plan_and_templates_pass_in_the_sandbox() -> None:
    """The shipped plan checks clean with every template rendered in the sandbox."""
    settings = Settings.from_env(
        {
            "PLAN_PATH": str(ROOT / "plans" / "thirty_day.yaml"),
            "TEMPLATES_DIR": str(ROOT / "templates" / "emails"),
        }
    )

    assert len(check_plan(settings).steps) == 31
