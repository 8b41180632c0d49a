"""Reading a visitor's request body into fields: hostile input gets a clear 4xx, never a 500.

A body is a URL-encoded form or a JSON object of flat values, nothing else: nesting, duplicate
keys, huge numbers, invalid UTF-8, control characters and floods of fields are refused here,
before any of it reaches a use case or the database.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from campaign.domain.subscriber_fields import RESERVED as BUILT_IN_NAMES
from campaign.errors import BadRequest, BodyTimeout, BodyTooLarge

#: The largest body any form of ours needs, with room to spare.
MAX_BODY_BYTES = 16 * 1024

#: The honeypot: a field the form hides from people, so only a bot fills it.
HONEYPOT = "website"

#: More fields than any form of ours has (email, first_name, timezone, source, website).
MAX_FIELDS = 20
#: C0 controls but tab (which names fold to a space), and DEL: every field is one line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, at most `limit` bytes (BodyTooLarge) within the app's body deadline
    (BodyTimeout)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge()
    body = b""
    try:
        # A client trickling its body must not hold a connection and a task for ever.
        async with asyncio.timeout(getattr(request.app.state, "body_timeout", None)):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise BodyTooLarge()
    except TimeoutError as exc:
        raise BodyTimeout() from exc
    return body


def body_kind(content_type: str) -> str:
    """ "json" or "form" for the body a request declares; BadRequest (415) for any other."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("application/") and (
        media == "application/json" or media.endswith("+json")
    ):
        return "json"
    if media in ("", "application/x-www-form-urlencoded"):
        return "form"
    raise BadRequest(
        "send the form as application/x-www-form-urlencoded or application/json", status=415
    )


def parse_fields(body: bytes, kind: str) -> dict[str, str]:
    """The submitted fields as text; BadRequest naming the problem for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the request body is not UTF-8") from exc
    fields = _json_fields(text) if kind == "json" else _form_fields(text)
    for name, value in fields.items():
        if _CONTROL.search(name) or _CONTROL.search(value):
            raise BadRequest(f"the field {_shown(name)} contains control characters")
        if _SURROGATE.search(name) or _SURROGATE.search(value):  # JSON's "\ud800" escapes
            raise BadRequest(f"the field {_shown(name)} is not valid Unicode text")
    return fields


def _form_fields(text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError as exc:  # percent-encoded bytes that are not UTF-8
        raise BadRequest("the form is not UTF-8") from exc
    except ValueError as exc:  # over max_num_fields
        raise BadRequest(f"too many fields (at most {MAX_FIELDS})") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)  # a repeated field: the first one counts, as before
    return fields


def strict_json(text: str) -> Any:
    """`json.loads` that refuses what a hostile body uses: a key given twice, NaN/Infinity and
    numbers too large for a float (ValueError); deep nesting still raises RecursionError."""
    return json.loads(
        text, object_pairs_hook=_no_duplicates, parse_constant=_refuse, parse_float=_finite
    )


def _json_fields(text: str) -> dict[str, str]:
    try:
        data = strict_json(text or "{}")
    except RecursionError as exc:  # a body of [[[[...: json recurses once per level
        raise BadRequest("the JSON is nested too deeply") from exc
    except ValueError as exc:  # invalid JSON, a number of over 4,300 digits, duplicates
        raise BadRequest(f"the body is not valid JSON: {_reason(exc)}") from exc
    if not isinstance(data, dict):
        raise BadRequest('send a JSON object, e.g. {"email": "ann@example.org"}')
    if len(data) > MAX_FIELDS:
        raise BadRequest(f"too many fields (at most {MAX_FIELDS})")
    fields: dict[str, str] = {}
    for name, value in data.items():
        if value is True and name == HONEYPOT:
            fields[name] = "true"  # a bot that ticks the trap fills it too
            continue
        if value is None or (isinstance(value, bool) and name in BUILT_IN_NAMES):
            continue  # null: not given; true/false in a built-in text field: ignored
        if isinstance(value, bool):  # before int: True is an int. A custom yes/no field's
            fields[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            fields[name] = str(value)
        else:
            raise BadRequest(f"the field {_shown(name)} must be text, not a list or an object")
    return fields


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise ValueError(f"the field {_shown(name)} is given twice")
        fields[name] = value
    return fields


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not a number JSON allows")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is too large a number")
    return number


def _reason(exc: ValueError) -> str:
    # json's own messages name a position, never the body; others are ours or int()'s limit.
    text = str(exc)
    return "a number has too many digits" if "digits" in text else text[:120]


def _shown(name: str) -> str:
    """A field name safe to echo: printable, short."""
    return repr(_SURROGATE.sub("?", _CONTROL.sub("?", name))[:40])


def clean_header(value: str, limit: int = 400) -> str:
    """A header value fit to store as consent evidence: no control characters, bounded."""
    return _CONTROL.sub("", value)[:limit]
