"""Amazon SES webhooks through SNS: only a fresh message for an accepted topic, signed by a
certificate fetched from an SNS host, is read; its bounces and complaints become one event per
recipient. Payloads are AWS's documented examples, signed here with a test key."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from campaign.errors import ConfigError
from campaign.people.provider_webhooks import ses
from campaign.people.provider_webhooks.events import (
    EventKind,
    WebhookProvider,
    WebhookRejected,
    WebhookRequest,
    WebhookResult,
)
from campaign.settings import Settings

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-bounces"
CERT_URL = (
    "https://sns.us-east-1.amazonaws.com/"
    "SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
)
NOW = datetime(2026, 12, 2, 21, 0, tzinfo=UTC)
SENT = "2026-12-02T20:58:04.751Z"
SENT_AT = datetime(2026, 12, 2, 20, 58, 4, 751000, tzinfo=UTC)
OUR_MESSAGE_ID = "<20261202.abc123@example.org>"
VERP = "bounces+sam=example.com@example.org"
SUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736"
)

# AWS's documented example: "Amazon SNS notification examples for Amazon SES", bounce.
MAIL: dict[str, Any] = {
    "timestamp": "2016-01-27T14:59:38.237Z",
    "source": VERP,
    "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.org",
    "sourceIp": "127.0.3.0",
    "sendingAccountId": "123456789012",
    "callerIdentity": "IAM_user_or_role_name",
    "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
    "destination": ["jane@example.com", "mary@example.com", "richard@example.com"],
    "headersTruncated": False,
    "headers": [
        {"name": "From", "value": '"John Doe" <john@example.org>'},
        {"name": "To", "value": '"Jane Doe" <jane@example.com>'},
        {"name": "Message-ID", "value": OUR_MESSAGE_ID},
        {"name": "Subject", "value": "Hello"},
    ],
    "commonHeaders": {
        "from": ["John Doe <john@example.org>"],
        "date": "Wed, 27 Jan 2016 14:05:45 +0000",
        "to": ["Jane Doe <jane@example.com>"],
        "messageId": OUR_MESSAGE_ID.strip("<>"),
        "subject": "Hello",
    },
}
BOUNCE: dict[str, Any] = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "reportingMTA": "dns; email.example.com",
        "bouncedRecipients": [
            {
                "emailAddress": "jane@example.com",
                "status": "5.1.1",
                "action": "failed",
                "diagnosticCode": "smtp; 550 5.1.1 <jane@example.com>... User",
            }
        ],
        "bounceSubType": "General",
        "timestamp": "2016-01-27T14:59:38.237Z",
        "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
        "remoteMtaIp": "127.0.2.0",
    },
    "mail": MAIL,
}
COMPLAINT: dict[str, Any] = {
    "notificationType": "Complaint",
    "complaint": {
        "userAgent": "AnyCompany Feedback Loop (V0.01)",
        "complainedRecipients": [{"emailAddress": "richard@example.com"}],
        "complaintFeedbackType": "abuse",
        "arrivalDate": "2016-01-27T14:59:38.237Z",
        "timestamp": "2016-01-27T14:59:38.237Z",
        "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000",
    },
    "mail": MAIL,
}
DELIVERY: dict[str, Any] = {
    "notificationType": "Delivery",
    "mail": MAIL,
    "delivery": {
        "timestamp": "2016-01-27T14:59:38.237Z",
        "recipients": ["jane@example.com"],
        "processingTimeMillis": 546,
        "reportingMTA": "a8-70.smtp-out.amazonses.com",
        "smtpResponse": "250 ok:  Message 64111812 accepted",
        "remoteMtaIp": "127.0.2.0",
    },
}


class Signer:
    """A test RSA key with a self-signed certificate, standing in for SNS's."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        self.pem = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime(2026, 1, 1, tzinfo=UTC))
            .not_valid_after(datetime(2027, 1, 1, tzinfo=UTC))
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )

    def sign(self, message: dict[str, str], version: str = "1") -> dict[str, str]:
        """`message` with SignatureVersion, Signature and SigningCertURL, signed as SNS does."""
        if message["Type"] == "Notification":
            keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn"]
            keys.append("Type")
        text = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message)
        # SNS SignatureVersion 1 is SHA1withRSA: the test has to sign as SNS does.
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        signed = {**message, "SignatureVersion": version}
        signed.setdefault("SigningCertURL", CERT_URL)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed


class FakeFetch:
    """Serves fixed bodies by URL and records every URL asked for."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.calls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.calls.append(url)
        if url not in self.bodies:
            raise OSError(f"404 for {url}")
        return self.bodies[url]


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def fetch(signer: Signer) -> FakeFetch:
    return FakeFetch({CERT_URL: signer.pem, SUBSCRIBE_URL: b"<ConfirmSubscriptionResponse/>"})


def _provider(fetch: FakeFetch, topics: str = TOPIC) -> WebhookProvider:
    settings = Settings.from_env({"SES_TOPIC_ARNS": topics, "WEBHOOK_MAX_AGE_SECONDS": "900"})
    provider = ses.from_settings(settings, fetch=fetch)
    assert provider is not None
    return provider


def _notification(payload: dict[str, Any], **changes: str) -> dict[str, str]:
    message = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": json.dumps(payload),
        "Timestamp": SENT,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&x=1",
    }
    return {**message, **changes}


def _confirmation(kind: str = "SubscriptionConfirmation", **changes: str) -> dict[str, str]:
    message = {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": SUBSCRIBE_URL.rsplit("Token=", 1)[1],
        "TopicArn": TOPIC,
        "Message": (
            f"You have chosen to subscribe to the topic {TOPIC}.\n"
            "To confirm the subscription, visit the SubscribeURL included in this message."
        ),
        "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": SENT,
    }
    return {**message, **changes}


def _request(body: dict[str, str] | bytes, kind: str | None = None) -> WebhookRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if kind is None and isinstance(body, dict):
        kind = body.get("Type")
    headers = {"content-type": "text/plain; charset=UTF-8"}
    if kind is not None:
        headers["x-amz-sns-message-type"] = kind
    return WebhookRequest(headers=headers, body=raw, url="https://mail.example.org/webhooks/ses")


def _handle(provider: WebhookProvider, body: dict[str, str], now: datetime = NOW) -> WebhookResult:
    return provider.handle(_request(body), now)


def _rejected(provider: WebhookProvider, request: WebhookRequest) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        provider.handle(request, NOW)
    return caught.value


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_permanent_bounce_is_a_hard_bounce_matched_to_our_email(
    signer: Signer, fetch: FakeFetch, version: str
) -> None:
    """SHA1withRSA (v1) and SHA256withRSA (v2) signatures are both accepted."""
    result = _handle(_provider(fetch), signer.sign(_notification(BOUNCE), version))
    assert len(result.events) == 1
    event = result.events[0]
    assert event.provider == "ses"
    assert event.kind is EventKind.HARD_BOUNCE
    assert event.address == "jane@example.com"
    assert event.event_id == "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324:jane@example.com"
    assert event.detail == "Permanent/General 5.1.1 smtp; 550 5.1.1 <jane@example.com>... User"
    assert event.message_ids == (OUR_MESSAGE_ID,)
    assert event.return_paths == (VERP,)
    assert event.occurred_at == datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC)
    assert fetch.calls == [CERT_URL]


def test_the_string_to_sign_is_the_one_aws_documents() -> None:
    """Name and value each end in a newline, in AWS's order, Subject only when present."""
    message = {"Type": "Notification", "MessageId": "m1", "TopicArn": TOPIC, "Message": "hi"}
    message |= {"Timestamp": SENT, "UnsubscribeURL": "https://x", "SignatureVersion": "1"}
    expected = (
        f"Message\nhi\nMessageId\nm1\nTimestamp\n{SENT}\nTopicArn\n{TOPIC}\nType\nNotification\n"
    )
    assert ses.string_to_sign(message) == expected.encode()
    with_subject = f"Message\nhi\nMessageId\nm1\nSubject\nS\nTimestamp\n{SENT}\n"
    assert ses.string_to_sign({**message, "Subject": "S"}).startswith(with_subject.encode())


@pytest.mark.parametrize(
    "change",
    [
        {"Message": json.dumps({**BOUNCE, "bounce": {**BOUNCE["bounce"], "bounceType": "X"}})},
        {"Subject": "added after signing"},
        {"TopicArn": "arn:aws:sns:us-east-1:123456789012:other"},
        {"Timestamp": "2026-12-02T20:59:04.751Z"},
        {"SignatureVersion": "2"},
    ],
)
def test_a_message_altered_after_signing_is_refused(
    signer: Signer, fetch: FakeFetch, change: dict[str, str]
) -> None:
    """Any signed field changed, or the hash version swapped, fails the signature."""
    forged = {**signer.sign(_notification(BOUNCE)), **change}
    provider = _provider(fetch, f"{TOPIC},arn:aws:sns:us-east-1:123456789012:other")
    assert _rejected(provider, _request(forged)).status == 401


def test_a_signature_by_another_key_is_refused(signer: Signer) -> None:
    """A certificate at the URL that did not sign the message does not vouch for it."""
    other = Signer()
    fetch = FakeFetch({CERT_URL: other.pem})
    rejected = _rejected(_provider(fetch), _request(signer.sign(_notification(BOUNCE))))
    assert rejected.status == 401


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://evil.example/x.pem?host=sns.us-east-1.amazonaws.com",
        "https://sns.us-east-1.amazonaws.com@evil.example/SimpleNotificationService-1.pem",
        "https://evil.example\\@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://evil.example:x@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://evilsns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://s3.amazonaws.com/sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "file:///etc/ssl/sns.us-east-1.amazonaws.com.pem",
    ],
)
def test_a_certificate_url_off_the_sns_hosts_is_never_fetched(signer: Signer, url: str) -> None:
    """Only https on sns.<region>.amazonaws.com is trusted to serve the signing key."""
    fetch = FakeFetch({url: signer.pem})
    body = signer.sign({**_notification(BOUNCE), "SigningCertURL": url})
    assert _rejected(_provider(fetch), _request(body)).status == 401
    assert fetch.calls == []


def test_a_china_region_certificate_url_is_accepted(signer: Signer) -> None:
    """SNS in the China regions signs from sns.<region>.amazonaws.com.cn."""
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-3242342098.pem"
    fetch = FakeFetch({url: signer.pem})
    body = signer.sign({**_notification(BOUNCE), "SigningCertURL": url})
    result = _handle(_provider(fetch), body)
    assert [e.address for e in result.events] == ["jane@example.com"]


def test_a_topic_not_configured_is_refused_before_any_fetch(
    signer: Signer, fetch: FakeFetch
) -> None:
    """A genuine SNS message for someone else's topic is not ours to apply."""
    body = signer.sign(_notification(BOUNCE, TopicArn="arn:aws:sns:us-east-1:999999999999:x"))
    assert _rejected(_provider(fetch), _request(body)).status == 403
    assert fetch.calls == []


def test_a_stale_or_future_message_is_refused_as_a_replay(signer: Signer, fetch: FakeFetch) -> None:
    """A signed message older than WEBHOOK_MAX_AGE_SECONDS, or dated ahead, is not applied."""
    provider = _provider(fetch)
    body = signer.sign(_notification(BOUNCE))
    assert len(_handle(provider, body, SENT_AT + timedelta(seconds=899)).events) == 1
    assert len(_handle(provider, body, SENT_AT - timedelta(seconds=299)).events) == 1
    with pytest.raises(WebhookRejected) as stale:
        _handle(provider, body, SENT_AT + timedelta(seconds=901))
    assert stale.value.status == 401
    with pytest.raises(WebhookRejected) as future:
        _handle(provider, body, SENT_AT - timedelta(seconds=301))
    assert future.value.status == 401


def test_a_subscription_confirmation_fetches_the_subscribe_url_once(
    signer: Signer, fetch: FakeFetch
) -> None:
    """Confirming is one GET of SubscribeURL, after the signature is checked."""
    result = _handle(_provider(fetch), signer.sign(_confirmation()))
    assert result.events == []
    assert result.note is not None
    assert TOPIC in result.note
    assert fetch.calls == [CERT_URL, SUBSCRIBE_URL]


@pytest.mark.parametrize(
    "url",
    [
        f"https://evil.example/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=1",
        f"https://sns.us-east-1.amazonaws.com.evil.example/?Action=ConfirmSubscription&TopicArn={TOPIC}",
        f"http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={TOPIC}",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:999999999999:x",
    ],
)
def test_a_subscribe_url_off_sns_or_for_another_topic_is_not_fetched(
    signer: Signer, fetch: FakeFetch, url: str
) -> None:
    """Even signed, a confirmation is only followed to SNS, for the topic it names."""
    rejected = _rejected(_provider(fetch), _request(signer.sign(_confirmation(SubscribeURL=url))))
    assert rejected.status == 403
    assert url not in fetch.calls


def test_a_forged_subscription_confirmation_is_not_followed(
    signer: Signer, fetch: FakeFetch
) -> None:
    """An unsigned or altered confirmation never makes us GET its SubscribeURL."""
    forged = {**signer.sign(_confirmation()), "Token": "other"}
    assert _rejected(_provider(fetch), _request(forged)).status == 401
    assert SUBSCRIBE_URL not in fetch.calls


def test_an_unsubscribe_confirmation_is_only_noted(signer: Signer, fetch: FakeFetch) -> None:
    """SNS telling us the subscription ended confirms nothing and records no event."""
    result = _handle(_provider(fetch), signer.sign(_confirmation("UnsubscribeConfirmation")))
    assert result.events == []
    assert result.note is not None
    assert fetch.calls == [CERT_URL]


@pytest.mark.parametrize("header", ["SubscriptionConfirmation", "notification", None])
def test_a_message_type_header_that_disagrees_with_the_body_is_refused(
    signer: Signer, fetch: FakeFetch, header: str | None
) -> None:
    """SNS always sends x-amz-sns-message-type equal to Type; a mismatch is not from SNS."""
    request = _request(signer.sign(_notification(BOUNCE)), kind=header)
    if header is None:
        request = WebhookRequest(headers={}, body=request.body, url=request.url)
    assert _rejected(_provider(fetch), request).status == 400


def test_a_topic_header_that_disagrees_with_the_body_is_refused(
    signer: Signer, fetch: FakeFetch
) -> None:
    """x-amz-sns-topic-arn, when sent, names the same topic as the signed body."""
    request = _request(signer.sign(_notification(BOUNCE)))
    headers = {**request.headers, "x-amz-sns-topic-arn": "arn:aws:sns:us-east-1:123456789012:x"}
    forged = WebhookRequest(headers=headers, body=request.body, url=request.url)
    assert _rejected(_provider(fetch), forged).status == 400
    good = WebhookRequest({**headers, "x-amz-sns-topic-arn": TOPIC}, request.body, request.url)
    assert len(_provider(fetch).handle(good, NOW).events) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({"Type": "Notification"}).encode(),
        json.dumps({"Type": "Surprise", "MessageId": "1"}).encode(),
    ],
)
def test_a_malformed_body_is_a_bad_request(fetch: FakeFetch, body: bytes) -> None:
    """Not JSON, not an object, missing fields or an unknown Type: 400, nothing fetched."""
    assert _rejected(_provider(fetch), _request(body, kind="Notification")).status == 400
    assert fetch.calls == []


@pytest.mark.parametrize("missing", ["Signature", "SigningCertURL", "Timestamp", "MessageId"])
def test_a_message_missing_a_field_is_a_bad_request(
    signer: Signer, fetch: FakeFetch, missing: str
) -> None:
    """Each field SNS always sends is required."""
    body = signer.sign(_notification(BOUNCE))
    del body[missing]
    assert _rejected(_provider(fetch), _request(body)).status == 400


def test_a_multi_recipient_bounce_gives_one_event_each_with_distinct_ids(
    signer: Signer, fetch: FakeFetch
) -> None:
    """Every bounced recipient is its own event, all matched to the same email."""
    payload = copy.deepcopy(BOUNCE)
    payload["bounce"]["bouncedRecipients"] = [
        {"emailAddress": a, "status": "5.1.1"}
        for a in ("jane@example.com", "mary@example.com", "richard@example.com")
    ]
    events = _handle(_provider(fetch), signer.sign(_notification(payload))).events
    assert [e.address for e in events] == [
        "jane@example.com",
        "mary@example.com",
        "richard@example.com",
    ]
    assert len({e.event_id for e in events}) == 3
    assert {e.message_ids for e in events} == {(OUR_MESSAGE_ID,)}


def test_a_recipient_listed_twice_is_one_event(signer: Signer, fetch: FakeFetch) -> None:
    """The same address twice in one bounce (any case) is one bounce, not two."""
    payload = copy.deepcopy(BOUNCE)
    payload["bounce"]["bouncedRecipients"] = [
        {"emailAddress": "jane@example.com"},
        {"emailAddress": "Jane@Example.com"},
    ]
    events = _handle(_provider(fetch), signer.sign(_notification(payload))).events
    assert [e.address for e in events] == ["jane@example.com"]


def test_an_sns_retry_gives_the_same_event_ids(signer: Signer, fetch: FakeFetch) -> None:
    """SNS redelivers the same message; its events carry the same ids, so they count once."""
    provider = _provider(fetch)
    body = signer.sign(_notification(BOUNCE))
    first = _handle(provider, body).events
    again = _handle(provider, body, NOW + timedelta(seconds=30)).events
    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert fetch.calls == [CERT_URL]


def test_redacted_or_absent_recipients_still_give_events_matched_by_message_id(
    signer: Signer, fetch: FakeFetch
) -> None:
    """No address: the event keeps our Message-ID and return path, with its own id."""
    payload = copy.deepcopy(BOUNCE)
    payload["bounce"]["bouncedRecipients"] = [{"status": "5.1.1"}, {"emailAddress": "redacted"}]
    events = _handle(_provider(fetch), signer.sign(_notification(payload))).events
    assert [e.address for e in events] == ["", ""]
    assert len({e.event_id for e in events}) == 2
    assert all(e.message_ids == (OUR_MESSAGE_ID,) and e.return_paths == (VERP,) for e in events)

    complaint = copy.deepcopy(COMPLAINT)
    del complaint["complaint"]["complainedRecipients"]
    events = _handle(_provider(fetch), signer.sign(_notification(complaint))).events
    assert [(e.kind, e.address) for e in events] == [(EventKind.COMPLAINT, "")]


@pytest.mark.parametrize(
    ("bounce_type", "kind"),
    [
        ("Permanent", EventKind.HARD_BOUNCE),
        ("Transient", EventKind.SOFT_BOUNCE),
        ("Undetermined", EventKind.SOFT_BOUNCE),
    ],
)
def test_bounce_types_map_to_hard_or_soft(
    signer: Signer, fetch: FakeFetch, bounce_type: str, kind: EventKind
) -> None:
    """Only a Permanent bounce suppresses at once; Transient and Undetermined count as soft."""
    payload = copy.deepcopy(BOUNCE)
    payload["bounce"]["bounceType"] = bounce_type
    events = _handle(_provider(fetch), signer.sign(_notification(payload))).events
    assert [e.kind for e in events] == [kind]
    assert events[0].detail.startswith(f"{bounce_type}/General ")


def test_a_complaint_is_a_complaint_unless_its_feedback_is_not_spam(
    signer: Signer, fetch: FakeFetch
) -> None:
    """An abuse report complains; a "not-spam" feedback report does not."""
    provider = _provider(fetch)
    events = _handle(provider, signer.sign(_notification(COMPLAINT))).events
    assert [(e.kind, e.address, e.detail) for e in events] == [
        (EventKind.COMPLAINT, "richard@example.com", "complaint abuse")
    ]
    not_spam = copy.deepcopy(COMPLAINT)
    not_spam["complaint"]["complaintFeedbackType"] = "not-spam"
    assert _handle(provider, signer.sign(_notification(not_spam))).events == []


def test_deliveries_and_other_messages_on_the_topic_record_nothing(
    signer: Signer, fetch: FakeFetch
) -> None:
    """A delivery, a send event or SES's plain-text test message are noted, not events."""
    provider = _provider(fetch)
    send_event = {"eventType": "Send", "mail": MAIL, "send": {}}
    for message in (json.dumps(DELIVERY), json.dumps(send_event), "Successfully validated"):
        result = _handle(provider, signer.sign(_notification({}, Message=message)))
        assert result.events == []
        assert result.note is not None


def test_event_publishing_bounces_are_read_like_notifications(
    signer: Signer, fetch: FakeFetch
) -> None:
    """A configuration set's event destination sends eventType instead of notificationType."""
    payload = {k: v for k, v in BOUNCE.items() if k != "notificationType"}
    payload["eventType"] = "Bounce"
    events = _handle(_provider(fetch), signer.sign(_notification(payload))).events
    assert [(e.kind, e.address) for e in events] == [(EventKind.HARD_BOUNCE, "jane@example.com")]


def test_an_unreachable_certificate_is_a_temporary_failure(signer: Signer) -> None:
    """When the certificate cannot be fetched, SNS is told to retry (503), nothing applied."""
    rejected = _rejected(_provider(FakeFetch({})), _request(signer.sign(_notification(BOUNCE))))
    assert rejected.status == 503


def test_the_default_fetch_refuses_anything_but_https() -> None:
    """Certificates and confirmations are never read over plain http."""
    with pytest.raises(ValueError, match="not https"):
        ses.fetch_https("http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem")


class _Pages(BaseHTTPRequestHandler):
    """/cert.pem is a page; /moved redirects to /elsewhere. Records the paths asked for."""

    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"PEM")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def https_pages() -> Iterator[tuple[str, trustme.CA]]:
    """An https server on loopback with a certificate from a test CA nobody trusts yet."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Pages.asked = []
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()


def test_the_default_fetch_verifies_the_server_certificate(
    https_pages: tuple[str, trustme.CA],
) -> None:
    """A server whose certificate no trusted CA issued is never read."""
    base, _ = https_pages
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        ses.fetch_https(f"{base}/cert.pem", timeout=5)
    assert _Pages.asked == []


def test_the_default_fetch_reads_a_trusted_page_and_follows_no_redirect(
    https_pages: tuple[str, trustme.CA], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the CA trusted the page is read; a redirect (possibly off SNS) is refused."""
    base, ca = https_pages
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    assert ses.fetch_https(f"{base}/cert.pem", timeout=5) == b"PEM"
    with pytest.raises(OSError, match="302"):
        ses.fetch_https(f"{base}/moved", timeout=5)
    assert _Pages.asked == ["/cert.pem", "/moved"]


def test_from_settings_serves_ses_only_when_topics_are_set(fetch: FakeFetch) -> None:
    """No SES_TOPIC_ARNS, no SES webhook; a list accepts each of its topics."""
    assert ses.from_settings(Settings.from_env({})) is None
    other = "arn:aws:sns:eu-west-1:123456789012:other"
    provider = _provider(fetch, f" {other} , {TOPIC} ")
    assert provider.name == "ses"


def test_a_malformed_topic_arn_is_a_configuration_error() -> None:
    """A typo in SES_TOPIC_ARNS is named at start, not a silent 403 for every message."""
    settings = Settings.from_env({"SES_TOPIC_ARNS": f"{TOPIC},ses-bounces"})
    with pytest.raises(ConfigError) as caught:
        ses.from_settings(settings)
    assert caught.value.variable == "SES_TOPIC_ARNS"
    assert "ses-bounces" in caught.value.problem
