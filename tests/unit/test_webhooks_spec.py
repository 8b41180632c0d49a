"""The Standard Webhooks part of outgoing webhooks: signatures the reference library accepts,
endpoint URLs and event filters checked, and the retry schedule with its jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from campaign.domain import webhooks as spec

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def test_signed_headers_are_what_the_reference_library_computes() -> None:
    """webhook-signature is v1,base64(HMAC-SHA256(id.timestamp.body)) with the whsec_ key."""
    secret = spec.new_secret()
    body = spec.payload("click", AT, {"url": "https://example.org/é"}).encode()
    headers = spec.signed_headers(secret, "msg_1", AT, body)
    assert headers["webhook-id"] == "msg_1"
    assert headers["webhook-timestamp"] == str(int(AT.timestamp()))
    assert headers["webhook-signature"] == Webhook(secret).sign("msg_1", AT, body.decode())


def test_a_fresh_secret_is_whsec_and_32_random_bytes() -> None:
    """Each secret is new, and decodes to a 32-byte key."""
    first, second = spec.new_secret(), spec.new_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(spec.secret_key(first)) == 32


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.org/in",
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://[::1]/",
    ],
)
def test_https_or_loopback_http_is_accepted(url: str) -> None:
    """https anywhere, plain http only to this machine."""
    assert spec.check_url(url) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.example.org/in", "must use https"),
        ("ftp://example.org/", "not an http(s) URL"),
        ("hooks.example.org", "not an http(s) URL"),
        ("https://user:pw@example.org/", "user name or password"),
    ],
)
def test_other_urls_are_refused_naming_the_url(url: str, problem: str) -> None:
    """A bad URL is bad input (exit 2) whose message names the field and the problem."""
    with pytest.raises(spec.BadWebhookInput) as refused:
        spec.check_url(url)
    assert refused.value.message.startswith("URL: ")
    assert problem in refused.value.message
    assert refused.value.exit_code == 2


def test_event_filters_are_stored_for_sql_matching_and_unknown_types_refused() -> None:
    """No filter (or `*`) takes every type; a list is stored `,a,b,`; a typo is named."""
    assert spec.check_events(None) == "*"
    assert spec.check_events(["click", " delivery.sent", "click"]) == ",click,delivery.sent,"
    assert spec.event_names(",click,delivery.sent,") == ("click", "delivery.sent")
    with pytest.raises(spec.BadWebhookInput, match="unknown event type 'clicks'"):
        spec.check_events(["clicks"])


def test_the_retry_schedule_spans_about_a_day_with_bounded_jitter() -> None:
    """Each pause is the schedule's, give or take 10%; after the 8th failure, none."""
    rng = random.Random(7)
    for failures, delay in enumerate(spec.RETRY_DELAYS, start=1):
        retry_at = spec.next_attempt_at(failures, AT, rng)
        assert retry_at is not None
        assert delay * 0.9 <= retry_at - AT <= delay * 1.1
    assert spec.next_attempt_at(len(spec.RETRY_DELAYS) + 1, AT, rng) is None
    assert timedelta(hours=24) < sum(spec.RETRY_DELAYS, timedelta()) < timedelta(hours=30)
