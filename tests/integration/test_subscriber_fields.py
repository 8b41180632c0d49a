"""Custom subscriber fields on both databases: filled by `subscribe`, the signup form, the JSON
API and CSV columns, checked against the plan, printed (escaped) in real emails received by
the loopback SMTP server, defaults for people who gave none, exported and forgotten."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from campaign.domain.subscriber_fields import FieldValueError, UnknownField
from campaign.engine import App
from campaign.errors import BadInput
from campaign.interfaces.admin import create_admin_app
from campaign.interfaces.web import create_app
from campaign.people import (
    api_keys,
    csv_import,
    directory,
    import_preview,
    operators,
    subscriptions,
)
from campaign.storage import store
from tests.acceptance.conftest import NOW
from tests.conftest import ROOT, EngineFactory
from tests.helpers import tick
from tests.integration.test_console_pages import OPERATOR, PASSWORD, ConsoleClient, _token
from tests.smtp_server import SMTPServer

FIELDS = """\
fields:
  pain_area:
    type: choice
    choices: [upper-back, neck, low-back, knee]
    default: upper-back
    label: "Where does it hurt most?"
    ask: true
  desk_hours: {type: number, default: 0, min: 0, max: 24, ask: true}
  wants_video: {type: boolean, default: false}
  goal: {type: text, max_length: 80}
"""

#: Added to the welcome email: every field, and one in a condition.
WELCOME_LINE = (
    '<p id="fields">Area: {{ subscriber.fields.pain_area }}. Hours: '
    "{{ subscriber.fields.desk_hours }}. Goal: [{{ subscriber.fields.goal }}]."
    "{% if subscriber.fields.wants_video %} Videos on.{% endif %}</p>\n"
)


@pytest.fixture
def content(plan_file: Path, tmp_path: Path) -> dict[str, str]:
    """The shipped plan with `fields:` declared and its welcome subject and body using them."""
    templates = tmp_path / "emails"
    shutil.copytree(ROOT / "templates" / "emails", templates)
    welcome = templates / "welcome.html"
    body = welcome.read_text(encoding="utf-8")
    welcome.write_text(body.replace("{% endblock %}", WELCOME_LINE + "{% endblock %}", 1))
    plan = plan_file.read_text(encoding="utf-8").replace(
        'subject: "Your free ebook is here: Concepts of Self Healing"',
        'subject: "Your ebook, for your {{ subscriber.fields.pain_area }}"',
    )
    plan_file.write_text(plan.replace("steps:\n", FIELDS + "steps:\n", 1), encoding="utf-8")
    return {"PLAN_PATH": str(plan_file), "TEMPLATES_DIR": str(templates)}


@pytest.fixture
def app(engine: EngineFactory, content: dict[str, str]) -> App:
    built, _ = engine(NOW, DOUBLE_OPT_IN="false", **content)
    return built


def _welcome(app: App, smtp: SMTPServer, email: str) -> tuple[str, str]:
    """The subject and HTML of the welcome `email` received, after a pass."""
    tick(app, app.clock, NOW)  # type: ignore[arg-type]
    [received] = smtp.to(email)
    message = received.message
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    return str(message["Subject"]), html.get_content()


def _stored(app: App, email: str) -> dict[str, Any]:
    with app.db.read() as session:
        known = store.find_subscriber(session, email)
    assert known is not None
    loaded: dict[str, Any] = json.loads(known.fields)
    return loaded


def test_a_subscribers_values_reach_the_email_and_defaults_fill_the_rest(
    app: App, smtp_server: SMTPServer
) -> None:
    """`subscribe` with fields: the welcome's subject and body show them (escaped); someone
    who gave none gets each field's default."""
    subscriptions.subscribe(
        app.db,
        app.plan,
        email="ann@example.org",
        first_name="Ann",
        timezone="UTC",
        now=NOW,
        fields={"pain_area": "knee", "desk_hours": "9", "wants_video": "yes", "goal": "<b>5k</b>"},
    )
    subscriptions.subscribe(
        app.db, app.plan, email="bo@example.org", first_name="", timezone="UTC", now=NOW
    )
    subject, html = _welcome(app, smtp_server, "ann@example.org")
    assert subject == "Your ebook, for your knee"
    assert "Area: knee. Hours: 9. Goal: [&lt;b&gt;5k&lt;/b&gt;]. Videos on." in html
    assert "<b>5k</b>" not in html
    [plain] = [r.message for r in smtp_server.to("bo@example.org")]
    assert plain["Subject"] == "Your ebook, for your upper-back"
    other = plain.get_body(preferencelist=("html",))
    assert other is not None
    assert "Area: upper-back. Hours: 0. Goal: []." in other.get_content()
    assert "Videos on" not in other.get_content()


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"desk_hours": "25"}, FieldValueError, "field 'desk_hours': '25' is more than 24"),
        ({"pain_area": "elbow"}, FieldValueError, "'elbow' is not one of"),
        ({"goal": "x\r\nBcc: a@example.org"}, FieldValueError, "control characters"),
        ({"goal": "x" * 10_000}, FieldValueError, "longer than 80"),
        ({"shoe_size": "42"}, UnknownField, "unknown field 'shoe_size'"),
    ],
)
def test_a_bad_value_or_unknown_field_stores_nobody(
    app: App, fields: dict[str, object], error: type[BadInput], words: str
) -> None:
    """The operator is told which field and value; nothing is stored."""
    with pytest.raises(error) as caught:
        subscriptions.subscribe(
            app.db,
            app.plan,
            email="x@example.org",
            first_name="",
            timezone="",
            now=NOW,
            fields=fields,
        )
    assert words in caught.value.message
    assert caught.value.exit_code == 2
    with app.db.read() as session:
        assert store.find_subscriber(session, "x@example.org") is None


def _post(asgi: Any, url: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi, client=("203.0.113.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(url, **kwargs)

    return asyncio.run(send())


def _get(asgi: Any, url: str) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(url)

    return asyncio.run(send())


def test_the_signup_form_asks_for_fields_marked_ask_and_stores_what_is_sent(
    app: App, smtp_server: SMTPServer
) -> None:
    """The page shows inputs for `ask: true` fields; a post fills any declared field (a hidden
    input on a box may set one), ignores other inputs, and the welcome shows the values."""
    web = create_app(app, ROOT / "templates" / "web")
    page = _get(web, "/subscribe")
    assert '<select id="field-pain_area" name="pain_area"' in page.text
    assert 'name="desk_hours" type="number" value="0" min="0" max="24"' in page.text
    assert 'name="goal"' not in page.text  # not asked: no input
    answer = _post(
        web,
        "/subscribe",
        data={
            "email": "cy@example.org",
            "pain_area": "neck",
            "goal": "sleep better",
            "favourite_colour": "blue",
        },
    )
    assert answer.status_code == 200
    assert _stored(app, "cy@example.org") == {"pain_area": "neck", "goal": "sleep better"}
    subject, _ = _welcome(app, smtp_server, "cy@example.org")
    assert subject == "Your ebook, for your neck"


def test_a_json_signup_sets_a_yes_no_field_with_true_or_false(
    app: App, smtp_server: SMTPServer
) -> None:
    """JSON's own true and false fill a boolean field (as "yes" and "no" do on the form); on a
    field that is not a yes/no they are refused like any other wrong value; null is "not given"
    (and in a built-in field, such as the first name, true or false is ignored; the
    honeypot takes true as filled)."""
    web = create_app(app, ROOT / "templates" / "web")
    said_yes = _post(web, "/subscribe", json={"email": "eve@example.org", "wants_video": True})
    assert said_yes.status_code == 200
    said_no = _post(
        web,
        "/subscribe",
        json={
            "email": "fay@example.org",
            "wants_video": False,
            "goal": None,
            "website": False,
            "first_name": True,
        },
    )
    assert said_no.status_code == 200
    assert _stored(app, "eve@example.org") == {"wants_video": True}
    assert _stored(app, "fay@example.org") == {"wants_video": False}
    with app.db.read() as session:
        fay = store.find_subscriber(session, "fay@example.org")
    assert fay is not None
    assert fay.first_name == ""  # not "True"
    _, html = _welcome(app, smtp_server, "eve@example.org")
    assert "Videos on." in html
    [other] = smtp_server.to("fay@example.org")
    body = other.message.get_body(preferencelist=("html",))
    assert body is not None
    assert "Videos on" not in body.get_content()
    for field in ("desk_hours", "pain_area"):
        refused = _post(web, "/subscribe", json={"email": "gus@example.org", field: True})
        assert refused.status_code == 422, field
        assert refused.json()["field"] == field
    with app.db.read() as session:
        assert store.find_subscriber(session, "gus@example.org") is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('<script>alert("x")</script>', "&lt;script&gt;"),
        ("99", "&#39;99&#39; is more than 24"),
    ],
)
def test_a_bad_value_on_the_form_is_refused_beside_its_field_escaped(
    app: App, value: str, shown: str
) -> None:
    """422, the page again with the message under the field, the value escaped, nothing stored."""
    web = create_app(app, ROOT / "templates" / "web")
    answer = _post(web, "/subscribe", data={"email": "dee@example.org", "desk_hours": value})
    assert answer.status_code == 422
    assert 'id="field-desk_hours-error"' in answer.text
    assert shown in answer.text
    assert "<script>alert" not in answer.text
    as_json = _post(web, "/subscribe", json={"email": "dee@example.org", "desk_hours": value})
    assert as_json.status_code == 422
    assert as_json.json()["field"] == "desk_hours"
    hidden = _post(web, "/subscribe", data={"email": "dee@example.org", "goal": "<i>" * 30})
    assert hidden.status_code == 422  # a field the page does not ask: said under the address
    assert 'id="email-error"' in hidden.text
    assert "&#39;goal&#39;" in hidden.text
    assert "<i>" not in hidden.text
    nested = _post(web, "/subscribe", json={"email": "dee@example.org", "goal": {"a": ["b"]}})
    assert nested.status_code == 400
    huge = _post(web, "/subscribe", data={"email": "dee@example.org", "goal": "x" * 20_000})
    assert huge.status_code == 413
    with app.db.read() as session:
        assert store.find_subscriber(session, "dee@example.org") is None


def test_the_api_creates_updates_shows_and_refuses_fields(app: App) -> None:
    """POST stores fields, GET shows them, PATCH sets and clears; bad ones are 422s naming
    `fields.NAME`, never a 500."""
    admin = create_admin_app(app)
    token = api_keys.create(app.db, "crm", NOW).token
    auth = {"authorization": f"Bearer {token}"}

    def call(method: str, path: str, body: object) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=admin)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.request(method, "/api/v1" + path, json=body, headers=auth)

        return asyncio.run(send())

    made = call("POST", "/subscribers", {"email": "ed@example.org", "fields": {"desk_hours": 4}})
    assert made.status_code == 201, made.text
    assert made.json()["fields"] == {"desk_hours": 4}
    changed = call(
        "PATCH",
        "/subscribers/ed@example.org",
        {"fields": {"pain_area": "knee", "desk_hours": None}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["fields"] == {"pain_area": "knee"}
    refusals = [
        ({"desk_hours": "lots"}, "fields.desk_hours"),
        ({"wants_video": "maybe"}, "fields.wants_video"),
        ({"shoe_size": 42}, "fields.shoe_size"),
        ({"goal": {"nested": ["json"]}}, "fields"),
        ({"goal": "a\nb"}, "fields"),
        ({f"f{i}": "x" for i in range(31)}, "fields"),
    ]
    for fields, where in refusals:
        for method, path, body in (
            ("POST", "/subscribers", {"email": "fy@example.org", "fields": fields}),
            ("PATCH", "/subscribers/ed@example.org", {"fields": fields}),
        ):
            answer = call(method, path, body)
            assert answer.status_code == 422, (method, fields, answer.text)
            assert answer.json()["errors"][0]["field"] == where
    assert call("PATCH", "/subscribers/nobody@example.org", {"fields": {}}).status_code == 404
    assert _stored(app, "ed@example.org") == {"pain_area": "knee"}
    with app.db.read() as session:
        assert store.find_subscriber(session, "fy@example.org") is None


def test_csv_columns_named_after_fields_fill_them_and_bad_cells_are_bad_rows(
    app: App, tmp_path: Path
) -> None:
    """A bad cell skips its row, named by line and field; its neighbours are imported."""
    path = tmp_path / "list.csv"
    path.write_text(
        "email,first_name,Pain Area,desk_hours,notes\n"
        "gi@example.org,Gi,knee,3,x\n"
        "ha@example.org,Ha,elbow,3,x\n"
        "io@example.org,Io,,30,x\n"
        "jo@example.org,Jo,,,x\n",
        encoding="utf-8",
    )
    source = csv_import.open_csv(path, custom_fields=app.plan.declared_fields)
    assert any("'notes'" in note for note in source.notes)
    preview = import_preview.preview_rows(app.db, csv_import.rows(source), app.plan.declared_fields)
    assert preview.counts["refused"] == 2
    report = subscriptions.import_rows(app.db, app.plan, csv_import.rows(source), now=NOW)
    assert report.added == 2
    assert [(line, problem[:35]) for line, problem in report.problems] == [
        (3, "field 'pain_area': 'elbow' is not o"),
        (4, "field 'desk_hours': '30' is more th"),
    ]
    assert _stored(app, "gi@example.org") == {"pain_area": "knee", "desk_hours": 3}
    assert _stored(app, "jo@example.org") == {}


def test_export_includes_the_fields_and_forget_erases_them(app: App) -> None:
    """The person's export carries their values as an object; forget leaves none behind."""
    subscriptions.subscribe(
        app.db,
        app.plan,
        email="ki@example.org",
        first_name="",
        timezone="",
        now=NOW,
        fields={"goal": "walk the dog"},
    )
    exported = subscriptions.export_person(app.db, "ki@example.org")
    assert exported["subscriber"]["fields"] == {"goal": "walk the dog"}
    subscriptions.forget_person(app.db, "ki@example.org", NOW)
    with app.db.read() as session:
        assert store.find_subscriber(session, "ki@example.org") is None
        dump = session.connection().exec_driver_sql("SELECT fields FROM subscribers").all()
    assert all("walk the dog" not in row[0] for row in dump)


def test_the_consoles_subscriber_page_shows_the_fields_escaped(app: App) -> None:
    """An operator sees a person's custom fields on their page, markup shown as text."""
    subscriptions.subscribe(
        app.db,
        app.plan,
        email="lu@example.org",
        first_name="",
        timezone="",
        now=NOW,
        fields={"goal": "<script>alert(1)</script>", "desk_hours": "7"},
    )
    operators.add_operator(app.db, OPERATOR, PASSWORD, NOW)
    client = ConsoleClient(create_admin_app(app))
    login = client.get("/console/login")
    client.post(
        "/console/login",
        data={"email": OPERATOR, "password": PASSWORD, "csrf_token": _token(login.text)},
    )
    lu = directory.search(app.db, "lu").rows[0].id
    page = client.get(f"/console/subscribers/{lu}")
    assert page.status_code == 200
    assert "<dt>desk_hours</dt><dd>7</dd>" in page.text
    assert "<dt>goal</dt><dd>&lt;script&gt;alert(1)&lt;/script&gt;</dd>" in page.text
