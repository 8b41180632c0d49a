"""The Import page: upload a CSV, see what importing it would do row by row (nothing stored),
then commit it: the same reader and rules as `campaign import`. The upload waits on disk,
named by a random token only the uploading page knows, until it is committed or an hour old."""

from __future__ import annotations

import re
import secrets
import tempfile
import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaign.errors import BadInput
from campaign.interfaces.console.kit import (
    MAX_FORM_BYTES,
    NavItem,
    actor,
    engine,
    form,
    page,
    render,
    uploaded,
)
from campaign.people import csv_import, import_preview

NAV = NavItem("Import", "/import", 50)
#: an upload not committed within this many seconds is deleted.
KEEP_SECONDS = 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")


def routes() -> list[Route]:
    return [
        Route("/import", page(upload_form), methods=["GET"]),
        Route("/import/preview", page(preview), methods=["POST"]),
        Route("/import/commit", page(commit), methods=["POST"]),
    ]


def _folder() -> Path:
    folder = Path(tempfile.gettempdir()) / "campaign-console-imports"
    folder.mkdir(mode=0o700, exist_ok=True)
    now = time.time()  # noqa: TID251 (file ages are the file system's wall clock)
    for old in folder.glob("*.csv"):
        if now - old.stat().st_mtime > KEEP_SECONDS:
            old.unlink(missing_ok=True)
    return folder


def _upload(token: str) -> Path:
    if not _TOKEN.fullmatch(token):
        raise BadInput("token: this import was not uploaded here (upload the file again)")
    path = _folder() / f"{token}.csv"
    if not path.exists():
        raise BadInput("token: this upload has expired or was imported already; upload it again")
    return path


def upload_form(request: Request) -> Response:
    return render(request, "import.html", title="Import")


def preview(request: Request) -> Response:
    data = uploaded(request).get("file", b"")
    if not data:
        return render(
            request,
            "import.html",
            title="Import",
            status=400,
            problem=f"file: choose a CSV file of at most {MAX_FORM_BYTES // (1024 * 1024)} MB",
        )
    token = secrets.token_urlsafe(24)
    path = _folder() / f"{token}.csv"
    with path.open("xb") as handle:  # created new, readable by this user only
        path.chmod(0o600)
        handle.write(data)
    declared = engine(request).catalog.declared_fields
    try:
        source = csv_import.open_csv(path, custom_fields=declared)
    except BadInput as exc:
        path.unlink(missing_ok=True)
        problem = exc.message.replace(str(path), "the file")
        return render(request, "import.html", title="Import", status=400, problem=problem)
    found = import_preview.preview_rows(engine(request).db, csv_import.rows(source), declared)
    notes = [note.replace(str(path), "the file") for note in source.notes]
    return render(
        request,
        "import_preview.html",
        title="Import: check before committing",
        preview=found,
        notes=notes,
        token=token,
        name=form(request).get("name", "")[:200],
    )


def commit(request: Request) -> Response:
    app = engine(request)
    path = _upload(form(request).get("token", ""))
    try:
        report = import_preview.commit_import(
            app.db,
            app.plan,
            path,
            now=app.clock.now(),
            actor=actor(request),
            plan_ids=list(app.catalog.plans),
            declared=app.catalog.declared_fields,
        )
    finally:
        path.unlink(missing_ok=True)
    return render(request, "import_done.html", title="Import: done", report=report)
