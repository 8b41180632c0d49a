"""GET /images/{name}: the emails' illustrations, served from the templates folder's images/
only, cached for a week; any other name, traversal or symlink out of the folder is a 404."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from campaign.engine import App
from campaign.interfaces.web import create_app
from tests.conftest import ROOT, EngineFactory

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _get(app: App, *paths: str) -> list[httpx.Response]:
    asgi = httpx.ASGITransport(app=create_app(app, ROOT / "templates" / "web"))

    async def fetch() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=asgi, base_url="https://news.example.org") as c:
            return [await c.get(path) for path in paths]

    return asyncio.run(fetch())


@pytest.fixture
def site(engine: EngineFactory, tmp_path: Path) -> tuple[App, Path]:
    """An app whose templates folder is a copy, with a secret beside it and a symlink to it."""
    templates = tmp_path / "emails"
    shutil.copytree(ROOT / "templates" / "emails", templates)
    (tmp_path / "secret.png").write_bytes(b"SECRET_KEY=hunter2")
    (templates / "images" / "leak.png").symlink_to(tmp_path / "secret.png")
    (templates / "images" / ".hidden.png").write_bytes(b"hidden")
    app, _ = engine(START, TEMPLATES_DIR=str(templates))
    return app, templates


def test_an_illustration_is_served_as_a_png_cached_for_a_week(site: tuple[App, Path]) -> None:
    """The 1x and 2x PNGs come back byte for byte, typed, with a week's cache and an ETag."""
    app, templates = site
    one, two = _get(app, "/images/chin-tuck.png", "/images/chin-tuck@2x.png")
    assert one.status_code == two.status_code == 200
    assert one.content == (templates / "images" / "chin-tuck.png").read_bytes()
    assert two.content == (templates / "images" / "chin-tuck@2x.png").read_bytes()
    assert one.headers["content-type"] == "image/png"
    assert one.headers["cache-control"] == "public, max-age=604800"
    assert one.headers["etag"]
    assert one.headers["last-modified"]


def test_an_svg_is_served_unable_to_run_anything(site: tuple[App, Path]) -> None:
    """The SVG is image/svg+xml under a Content-Security-Policy that allows no script."""
    app, _ = site
    [svg] = _get(app, "/images/chin-tuck.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.headers["content-security-policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/images/../day03.html",
        "/images/..%2Fday03.html",
        "/images/%2E%2E%2Fday03.html",
        "/images/..%5Cday03.html",
        "/images/chin-tuck.png%00.png",
        "/images/illustrations.json",
        "/images/leak.png",
        "/images/.hidden.png",
        "/images/Chin-Tuck.png",
        "/images/missing.png",
        "/images/chin-tuck.PNG",
        "/images/%2Fetc%2Fpasswd",
        "/images/",
    ],
)
def test_anything_but_an_illustration_is_not_found(site: tuple[App, Path], path: str) -> None:
    """Traversal, encoded slashes, NUL, a symlink out, hidden and unknown files: all 404."""
    app, _ = site
    [response] = _get(app, path)
    assert response.status_code == 404
    assert b"hunter2" not in response.content
    assert b"{% extends" not in response.content
