"""Several plans over HTTP and in a real browser: the signup box names its plan, a hostile plan
id is refused with a plain answer, the footer link leaves one plan (or everything) and the
one-click header leaves everything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.acceptance.conftest import NOW, Site, _serve
from tests.conftest import EngineFactory
from tests.helpers import hours, run_campaign, tick
from tests.plans_folder import THIRTY, plans_folder
from tests.smtp_server import SMTPServer, free_port
from tests.tools import CHROMIUM, CHROMIUM_ARGS, require


@pytest.fixture
def site(engine: EngineFactory, smtp_server: SMTPServer, tmp_path: Path) -> Iterator[Site]:
    """The public site of an engine running the thirty-day plan (default) and the knee plan,
    without double opt-in (each signup starts its plan at once)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app, clock = engine(
        NOW,
        PUBLIC_BASE_URL=url,
        SIGNUP_RATE_PER_MINUTE="100",
        PLAN_PATH=str(plans_folder(tmp_path)),
        DEFAULT_PLAN=THIRTY,
        DOUBLE_OPT_IN="false",
    )
    serving = _serve(app, port)
    next(serving)
    with httpx.Client(base_url=url, timeout=10) as client:
        yield Site(app, clock, url, client, smtp_server)
    next(serving, None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM, "apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _step(message: EmailMessage) -> str:
    return str(message["X-Campaign-Step"])


def _in_two_plans(site: Site, email: str) -> list[EmailMessage]:
    """`email` signs up on the default box and the knee box; both welcomes arrive."""
    assert site.signup(email).status_code == 200
    assert site.signup(email, plan="knee").status_code == 200
    tick(site.app, site.clock, NOW + timedelta(minutes=1))
    mails = site.mail_to(email)
    assert sorted(_step(m) for m in mails) == sorted([f"{THIRTY}/welcome", "knee/welcome"])
    return mails


def test_the_box_of_another_plan_names_it_in_a_hidden_field(site: Site) -> None:
    """/subscribe?plan=knee carries the knee plan's id; an unknown id shows the default form."""
    assert 'name="plan" value="knee"' in site.http.get("/subscribe?plan=knee").text
    page = site.http.get("/subscribe", params={"plan": '"><script>alert(1)</script>'}).text
    assert f'name="plan" value="{THIRTY}"' in page
    assert "<script>alert" not in page


@pytest.mark.parametrize(
    "plan",
    ["ankle", '"><script>alert(1)</script>', "k" * 10_000, "knee\u202e", "../thirty_day"],
)
def test_a_hostile_plan_id_is_refused_plainly_and_stores_nobody(site: Site, plan: str) -> None:
    """An id no plan has: 422 on the form and as JSON, the id never echoed, nobody stored."""
    form = site.signup("mallory@example.org", plan=plan)
    assert form.status_code == 422
    assert "names a plan that does not exist" in form.text
    assert "<script>alert" not in form.text
    answer = site.http.post("/subscribe", json={"email": "mallory@example.org", "plan": plan})
    assert answer.status_code == 422
    assert answer.json()["field"] == "plan"
    assert site.status_of("mallory@example.org") is None


def test_the_footer_link_leaves_one_plan_and_the_other_goes_on(
    site: Site, browser: Browser
) -> None:
    """In a browser: the knee email's footer link offers to leave the knee plan or everything;
    leaving the knee plan stops its emails while the thirty-day plan goes on."""
    mails = _in_two_plans(site, "ida@example.org")
    knee_welcome = next(m for m in mails if _step(m) == "knee/welcome")
    page = browser.new_page()
    page.goto(site.url + site.link_in(knee_welcome, "unsubscribe"))
    page.get_by_role("button", name="Unsubscribe from everything").wait_for()
    page.get_by_role("button", name="Leave Five days for your knees").click()
    page.get_by_role("heading", name="You left Five days for your knees").wait_for()
    page.close()
    for instant in hours(NOW + timedelta(hours=1), 4 * 24):
        tick(site.app, site.clock, instant)
    later = [_step(m) for m in site.mail_to("ida@example.org")[2:]]
    assert later, "the thirty-day plan stopped too"
    assert all(step.startswith(f"{THIRTY}/") for step in later), later
    assert site.status_of("ida@example.org") == "active"


def test_the_pages_second_button_leaves_everything(site: Site, browser: Browser) -> None:
    """In a browser: "Unsubscribe from everything" on a plan's page stops every plan."""
    mails = _in_two_plans(site, "jo@example.org")
    page = browser.new_page()
    page.goto(site.url + site.link_in(mails[0], "unsubscribe"))
    page.get_by_role("button", name="Unsubscribe from everything").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    page.close()
    assert site.status_of("jo@example.org") == "unsubscribed"


def test_the_one_click_header_leaves_every_plan(site: Site) -> None:
    """RFC 8058's POST on a knee email's List-Unsubscribe leaves both plans: no more email."""
    mails = _in_two_plans(site, "kai@example.org")
    knee_welcome = next(m for m in mails if _step(m) == "knee/welcome")
    url = str(knee_welcome["List-Unsubscribe"]).strip("<>")
    answer = site.http.post(
        url[len(site.url) :],
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    for instant in hours(NOW + timedelta(hours=1), 3 * 24):
        tick(site.app, site.clock, instant)
    assert len(site.mail_to("kai@example.org")) == 2
    assert site.status_of("kai@example.org") == "unsubscribed"


def test_leaving_the_only_plan_one_runs_is_unsubscribing(site: Site) -> None:
    """Someone in the knee plan only who leaves it by its footer link is unsubscribed."""
    assert site.signup("lu@example.org", plan="knee").status_code == 200
    tick(site.app, site.clock, NOW + timedelta(minutes=1))
    [welcome] = site.mail_to("lu@example.org")
    link = site.link_in(welcome, "unsubscribe")
    assert site.http.post(link, data={"scope": "plan"}).status_code == 200
    assert site.status_of("lu@example.org") == "unsubscribed"


def test_the_command_line_names_a_plan_and_refuses_an_unknown_one(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`subscribe --plan knee` joins the knee plan; `--plan ankle` is exit 2 naming the id;
    `plan check` checks every plan of the folder."""
    folder = plans_folder(tmp_path)
    plans = {**env, "PLAN_PATH": str(folder), "DEFAULT_PLAN": THIRTY}
    assert run_campaign(plans, tmp_path, "db", "upgrade").returncode == 0
    joined = run_campaign(plans, tmp_path, "subscribe", "cli@example.org", "--plan", "knee")
    assert joined.returncode == 0, joined.stderr
    refused = run_campaign(plans, tmp_path, "subscribe", "cli@example.org", "--plan", "ankle")
    assert refused.returncode == 2
    assert "no plan has id 'ankle'" in refused.stderr
    stats = run_campaign(plans, tmp_path, "stats", "--json", "--plan", "knee")
    assert '"plan": "knee"' in stats.stdout
    check = run_campaign(plans, tmp_path, "plan", "check")
    assert check.returncode == 0, check.stderr
    # One line per plan, whole however long its path (a script greps them).
    lines = check.stdout.splitlines()
    assert any(f"{folder}/knee.yaml: ok: 3 steps, days 0-2" in line for line in lines), lines
    assert any(f"{folder}/weekly.yaml: ok: 4 steps, days 7-28" in line for line in lines), lines


def test_simulate_shows_a_person_in_two_plans_with_the_cap_and_then(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`simulate --plan thirty --plan knee@LATER` lists both plans' emails in order: knee's
    welcome at once, its lessons held by the daily cap until the thirty-day plan ends, then
    the weekly letters `then:` chains; an unknown id or instant is exit 2 naming it."""
    folder = plans_folder(tmp_path)
    plans = {**env, "PLAN_PATH": str(folder), "DEFAULT_PLAN": THIRTY, "COLUMNS": "250"}
    start = ["simulate", "--start", "2026-12-04T12:00:00Z", "--timezone", "Europe/Berlin"]
    both = [*start, "--plan", THIRTY, "--plan", "knee@2026-12-05T10:00:00Z"]
    done = run_campaign(plans, tmp_path, *both, "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = [(r["plan"], r["step"], r["local"][:16], r["capped"]) for r in json.loads(done.stdout)]
    assert rows[:3] == [
        (THIRTY, "welcome", "2026-12-04T13:00", False),
        (THIRTY, "day01", "2026-12-05T07:00", False),
        ("knee", "welcome", "2026-12-05T11:00", False),
    ]
    lessons = [row for row in rows if row[1] != "welcome"]
    days = [local[:10] for _, _, local, _ in lessons]
    assert len(days) == len(set(days)), "two lessons on one local day"
    knee = [row for row in rows if row[0] == "knee"]
    assert [row[1] for row in knee] == ["welcome", "day01", "day02"]
    assert knee[1][2] > max(local for plan, _, local, _ in rows if plan == THIRTY)
    assert knee[1][3], "knee's first lesson is marked as held by the cap"
    assert [row[1] for row in rows if row[0] == "weekly"] == [
        "week01",
        "week02",
        "week03",
        "week04",
    ]

    table = run_campaign(plans, tmp_path, *both, "--days", "3")
    assert table.returncode == 0, table.stderr
    assert "At most 1 lesson(s) a local day across plans (MAX_PER_DAY)" in table.stdout
    assert "knee: Daily emails go every day at 09:00" in table.stdout

    unknown = run_campaign(plans, tmp_path, *start, "--plan", "ankle")
    assert unknown.returncode == 2
    assert "--plan ankle: no plan has id 'ankle'" in unknown.stderr
    bad_instant = run_campaign(plans, tmp_path, *start, "--plan", "knee@tuesday")
    assert bad_instant.returncode == 2
    assert "--plan knee@tuesday" in bad_instant.stderr


def test_an_import_fills_a_field_the_rows_plan_declares(
    env: dict[str, str], tmp_path: Path
) -> None:
    """`campaign import`: a `side` column (declared by the knee plan only) fills the field of
    rows naming knee; a bad value is that row's problem, with its line."""
    folder = plans_folder(tmp_path)
    knee = folder / "knee.yaml"
    knee.write_text(
        knee.read_text().replace(
            "steps:\n", "fields:\n  side: {type: choice, choices: [left, right]}\nsteps:\n", 1
        )
    )
    plans = {**env, "PLAN_PATH": str(folder), "DEFAULT_PLAN": THIRTY}
    assert run_campaign(plans, tmp_path, "db", "upgrade").returncode == 0
    csv = tmp_path / "people.csv"
    csv.write_text("email,plan,side\nkim@example.org,knee,left\nbad@example.org,knee,middle\n")
    done = run_campaign(plans, tmp_path, "import", str(csv))
    assert done.returncode == 0, done.stderr
    assert "added 1" in done.stdout
    assert f"{csv}:3: skipped:" in done.stderr
    assert "middle" in done.stderr
    shown = run_campaign(plans, tmp_path, "export", "kim@example.org")
    assert '"side": "left"' in shown.stdout, shown.stdout + shown.stderr
