"""What every console page shares: where the request came from (client, scheme, the proxy's
path prefix), the signed-in operator, the CSRF check, and `render` (see the package docstring
for the convention)."""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from campaign.engine import App
from campaign.errors import BadInput
from campaign.insights.kept import Kept
from campaign.people import operators
from campaign.people.operators import SessionPolicy, SignedIn

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: the session cookie (its value names a row of operator_sessions by its SHA-256).
COOKIE = "campaign_console"
#: the sign-in form's own CSRF cookie (before there is a session to bind a token to).
LOGIN_COOKIE = "campaign_console_login"
#: the largest form body read (a CSV upload included).
MAX_FORM_BYTES = 20 * 1024 * 1024
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~-]+)*")
#: Pages are server-rendered: no script runs but files from the console itself.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request], Response]
K = TypeVar("K", bound=Kept[Any])


@dataclass(frozen=True)
class NavItem:
    """A page's link in the navigation bar: its title, path under the console, and place."""

    title: str
    path: str
    order: int


@dataclass
class Console:
    """The console of one engine: settings read once, the templates, the pages' nav."""

    app: App
    nav: list[NavItem] = field(default_factory=list)
    env: Environment = field(init=False)
    #: numbers too costly to count at every request, counted in the background (`kept`).
    kept: dict[str, Kept[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    policy: SessionPolicy = field(init=False)
    trusted: Proxies = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.env.globals["csrf"] = _csrf_field
        settings = self.app.settings
        self.policy = SessionPolicy(
            idle=timedelta(minutes=settings.console_idle_minutes),
            absolute=timedelta(hours=settings.console_session_hours),
            account_attempts=settings.console_login_attempts,
            client_attempts=settings.console_client_attempts,
        )
        self.trusted = Proxies.parse(settings.forwarded_allow_ips)

    @property
    def secret(self) -> str:
        return self.app.settings.secret_key.get_secret_value()


@pass_context
def _csrf_field(context: Context) -> Markup:
    """`{{ csrf() }}` in a form: the hidden field carrying the session's CSRF token."""
    token = escape(context.get("csrf_token", ""))
    return Markup(f'<input type="hidden" name="csrf_token" value="{token}">')  # noqa: S704


class Proxies:
    """FORWARDED_ALLOW_IPS (shared with the public listener): addresses, networks or `*`."""

    def __init__(self, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network], anyone: bool):
        self.networks = networks
        self.anyone = anyone

    @classmethod
    def parse(cls, text: str) -> Proxies:
        networks = []
        for entry in (e.strip() for e in text.split(",")):
            if entry == "*":
                return cls([], anyone=True)
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # a unix socket path, as uvicorn allows: no address to trust
        return cls(networks, anyone=False)

    def trust(self, host: str) -> bool:
        if self.anyone:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class Origin:
    """Where a request came from, as the trusted proxy (if any) says."""

    client: str
    #: the console's path as the browser sees it: the proxy's prefix, then /console.
    prefix: str
    secure_cookie: bool


def origin(console: Console, request: Request) -> Origin:
    """The client, the console's prefix and the cookie's Secure flag for `request`.

    X-Forwarded-For, -Proto and -Prefix are believed only from FORWARDED_ALLOW_IPS. Cookies are
    Secure except over plain http from a loopback client (a browser on the operator's own
    machine, or through an SSH tunnel), where a Secure cookie would never come back."""
    peer = request.client.host if request.client else ""
    headers = request.headers
    client, scheme, proxy_prefix = peer, request.url.scheme, ""
    if console.trusted.trust(peer):
        hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
        untrusted = [h for h in hops if not console.trusted.trust(h)]
        client = untrusted[-1] if untrusted else (hops[0] if hops else peer)
        scheme = headers.get("x-forwarded-proto", scheme).strip().lower() or scheme
        wanted = headers.get("x-forwarded-prefix", "").strip().rstrip("/")
        if len(wanted) <= 200 and _PREFIX.fullmatch(wanted) and "/../" not in wanted + "/":
            proxy_prefix = wanted
    root = request.scope.get("root_path", "").rstrip("/")
    try:
        loopback = ipaddress.ip_address(client).is_loopback
    except ValueError:
        loopback = False
    return Origin(client[:64], proxy_prefix + root, not (scheme == "http" and loopback))


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> Response:
    """The page `template` with the layout's context: prefix, nav, operator, CSRF token."""
    console: Console = request.app.state.console
    operator: SignedIn | None = getattr(request.state, "operator", None)
    where: Origin = request.state.origin
    html = console.env.get_template(template).render(
        prefix=where.prefix,
        nav=console.nav,
        here=request.url.path[len(request.scope.get("root_path", "")) :],
        operator=operator,
        csrf_token=operator.csrf_token if operator else getattr(request.state, "csrf", ""),
        **context,
    )
    return HTMLResponse(html, status, headers=HEADERS)


def redirect(request: Request, path: str, **query: str | int) -> Response:
    """A 303 to `path` under the console (as the browser sees it), with `query`."""
    where: Origin = request.state.origin
    shown = {k: str(v) for k, v in query.items() if v not in ("", None)}
    url = where.prefix + path + (f"?{urlencode(shown)}" if shown else "")
    return RedirectResponse(url, 303, headers=HEADERS)


def kept(request: Request, name: str, make: Callable[[], K]) -> K:
    """The console's one `name` (`make()` at its first use): a `Kept` count that outlives
    the request (numbers that cost a scan of a large table, counted in the background)."""
    console: Console = request.app.state.console
    with console.lock:  # two first requests at once make one
        found = console.kept.get(name)
        if found is None:
            found = console.kept[name] = make()
    assert isinstance(found, Kept)  # noqa: S101 (only this function sets it)
    return cast(K, found)


def engine(request: Request) -> App:
    """The engine the console serves."""
    console: Console = request.app.state.console
    return console.app


def actor(request: Request) -> str:
    """Who the audit log names for this request's change: the signed-in operator."""
    operator: SignedIn = request.state.operator
    return operator.email


def form(request: Request) -> dict[str, str]:
    """The posted form's text fields (read and CSRF-checked before the handler runs)."""
    fields: dict[str, str] = request.state.form
    return fields


def uploaded(request: Request) -> dict[str, bytes]:
    """The posted form's files (multipart/form-data), by field name."""
    files: dict[str, bytes] = request.state.files
    return files


def page(handler: Handler) -> Callable[[Request], Any]:
    """Wrap a page's handler: sign-in required (or back to the login page), the form read and
    its CSRF token checked on POST (403 without it), the handler run off the event loop."""

    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        request.state.origin = origin(console, request)
        now = console.app.clock.now()
        signed = await run_in_threadpool(
            operators.resume,
            console.app.db,
            console.secret,
            request.cookies.get(COOKIE, ""),
            now=now,
            policy=console.policy,
        )
        if signed is None:
            path = request.url.path[len(request.scope.get("root_path", "")) :]
            back = path + (f"?{request.url.query}" if request.url.query else "")
            return redirect(request, "/login", next=back if request.method == "GET" else "")
        request.state.operator = signed
        request.state.form, request.state.files = {}, {}
        if request.method == "POST":
            body = await read_form(request)
            if body is None:
                problem = f"the form is larger than {MAX_FORM_BYTES // (1024 * 1024)} MB"
                return render(request, "refused.html", status=413, problem=problem)
            fields, files = body
            given = fields.get("csrf_token", "") or request.headers.get("x-csrf-token", "")
            if not operators.csrf_matches(signed.csrf_token, given):
                return render(request, "refused.html", status=403)
            request.state.form, request.state.files = fields, files
        try:
            return await run_in_threadpool(handler, request)
        except BadInput as exc:
            return render(request, "refused.html", status=400, problem=exc.message)

    return endpoint


async def read_form(request: Request) -> tuple[dict[str, str], dict[str, bytes]] | None:
    """A posted form: url-encoded, or multipart (files apart); None past MAX_FORM_BYTES."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        return _multipart(kind, bytes(body))
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return dict(pairs), {}


def _multipart(kind: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + kind.encode("latin-1") + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            files[name] = data
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def discover(package: ModuleType) -> list[ModuleType]:
    """The page modules of `package`: every module in it whose name does not start with _."""
    import importlib
    import pkgutil

    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
        if not info.name.startswith("_")
    ]
