"""POSTing one webhook: the standard library's HTTP client, TLS verified, with timeouts, and
redirects not followed (a signed message goes where the operator said, or nowhere)."""

from __future__ import annotations

import http.client
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

#: seconds to connect, and to wait for each read of the answer.
TIMEOUT_SECONDS = 10.0
#: the user agent receivers see.
USER_AGENT = "campaign-engine-webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What the endpoint said: its status code, or why there was none (`error`)."""

    status: int | None
    error: str | None = None


class Poster(Protocol):
    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> Answer: ...


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx then comes back as an HTTPError: a failed attempt


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """POST `body` to `url`; the status code, or the error that left none."""
    opener = urllib.request.build_opener(
        _NoRedirects(), urllib.request.HTTPSHandler(context=ssl.create_default_context())
    )
    request = urllib.request.Request(  # noqa: S310 (the URL was checked: http(s) only)
        url, data=body, headers={**headers, "user-agent": USER_AGENT}, method="POST"
    )
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            return Answer(int(response.status))
    except urllib.error.HTTPError as exc:
        exc.close()
        return Answer(int(exc.code), f"HTTP {exc.code} {exc.reason}")
    except urllib.error.URLError as exc:
        return Answer(None, f"cannot reach the endpoint: {exc.reason}")
    except (
        OSError,
        ValueError,
        http.client.HTTPException,
    ) as exc:  # reset, timeout, a closed connection, a bad answer
        return Answer(None, f"no answer: {type(exc).__name__}: {exc}".rstrip(": "))
