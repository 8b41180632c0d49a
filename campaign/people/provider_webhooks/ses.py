"""Amazon SES bounces and complaints delivered by Amazon SNS over HTTPS: the SNS envelope is
authenticated (topic, age, certificate URL host, signature) before the SES notification inside it
is read, and a subscription confirmation is confirmed by fetching its SubscribeURL."""

from __future__ import annotations

import base64
import binascii
import json
import re
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from email.message import Message
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from campaign.errors import ConfigError
from campaign.people.provider_webhooks.events import (
    EventKind,
    ProviderEvent,
    WebhookProvider,
    WebhookRejected,
    WebhookRequest,
    WebhookResult,
)

if TYPE_CHECKING:
    from campaign.settings import Settings

#: fetch(url) -> body: how certificates and SubscribeURLs are read (injected in tests).
Fetch = Callable[[str], bytes]

NAME = "ses"
#: the hosts SNS signs from and confirms on, as the AWS SDKs' validators accept them.
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_TOPIC_ARN = re.compile(r"arn:aws(-cn|-us-gov)?:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}")
#: the string SNS signs: these keys, in this order, each name and value followed by "\n".
_SIGNED_NOTIFICATION = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SIGNED_CONFIRMATION = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_ENVELOPE = ("Type", "MessageId", "TopicArn", "Message", "Timestamp")
_SIGNATURE = ("SignatureVersion", "Signature", "SigningCertURL")
_CONFIRMATION_TYPES = ("SubscriptionConfirmation", "UnsubscribeConfirmation")
#: SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA.
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}
#: SNS clocks and ours may disagree a little; a message dated further ahead is refused.
_FUTURE_SKEW = timedelta(minutes=5)
_MAX_FETCH_BYTES = 64 * 1024
_CERT_CACHE_SIZE = 16


def from_settings(settings: Settings, *, fetch: Fetch | None = None) -> WebhookProvider | None:
    """The SES webhook when SES_TOPIC_ARNS is set (None otherwise); `fetch` reads certificates
    and SubscribeURLs (default: `fetch_https`)."""
    if not settings.ses_topic_arns:
        return None
    topics = frozenset(a.strip() for a in settings.ses_topic_arns.split(",") if a.strip())
    if not topics:
        return None
    for arn in sorted(topics):
        if not _TOPIC_ARN.fullmatch(arn):
            raise ConfigError(
                "SES_TOPIC_ARNS", f"{arn!r} is not an SNS topic ARN (arn:aws:sns:REGION:ID:NAME)"
            )
    return SesWebhook(
        topics, timedelta(seconds=settings.webhook_max_age_seconds), fetch or fetch_https
    )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the SNS host we checked: refuse it."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def fetch_https(url: str, *, timeout: float = 10.0) -> bytes:
    """GET an https URL with certificate verification, no redirects and a size cap."""
    if urlsplit(url).scheme != "https":
        raise ValueError(f"refusing to fetch {url!r}: not https")
    handler = urllib.request.HTTPSHandler(context=ssl.create_default_context())
    opener = urllib.request.build_opener(handler, _NoRedirects())
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read(_MAX_FETCH_BYTES + 1)
    if len(body) > _MAX_FETCH_BYTES:
        raise ValueError(f"{url!r} answered more than {_MAX_FETCH_BYTES} bytes")
    return body


def is_sns_url(url: str) -> bool:
    """Whether `url` is https on an SNS host (sns.<region>.amazonaws.com[.cn]), nothing else."""
    if any(c.isspace() or c == "\\" for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and "@" not in parts.netloc
        and port in (None, 443)
        and parts.hostname is not None
        and _SNS_HOST.fullmatch(parts.hostname) is not None
    )


class SesWebhook:
    """Amazon SES notifications (bounce, complaint) posted by SNS to /webhooks/ses."""

    name = NAME

    def __init__(self, topic_arns: frozenset[str], max_age: timedelta, fetch: Fetch) -> None:
        self._topics = topic_arns
        self._max_age = max_age
        self._fetch = fetch
        self._certificates: dict[str, x509.Certificate] = {}

    def handle(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        envelope = _envelope(request)
        topic = envelope["TopicArn"]
        if topic not in self._topics:
            raise WebhookRejected(403, f"SNS topic {topic!r} is not in SES_TOPIC_ARNS")
        self._check_age(envelope["Timestamp"], now)
        self._verify_signature(envelope, now)
        kind = envelope["Type"]
        if kind == "SubscriptionConfirmation":
            return self._confirm(envelope)
        if kind == "UnsubscribeConfirmation":
            return WebhookResult(note=f"SNS unsubscribed this endpoint from {topic}")
        events, note = ses_events(envelope["MessageId"], envelope["Message"])
        return WebhookResult(events=events, note=note)

    def _check_age(self, timestamp: str, now: datetime) -> None:
        try:
            sent = datetime.fromisoformat(timestamp)
        except ValueError:
            raise WebhookRejected(400, f"SNS Timestamp {timestamp!r} is not a date") from None
        if sent.tzinfo is None:
            raise WebhookRejected(400, f"SNS Timestamp {timestamp!r} has no time zone")
        if sent < now - self._max_age:
            raise WebhookRejected(401, f"SNS message of {timestamp} is too old (a replay?)")
        if sent > now + _FUTURE_SKEW:
            raise WebhookRejected(401, f"SNS message of {timestamp} is dated in the future")

    def _verify_signature(self, envelope: Mapping[str, str], now: datetime) -> None:
        algorithm = _HASHES.get(envelope["SignatureVersion"])
        if algorithm is None:
            version = envelope["SignatureVersion"]
            raise WebhookRejected(401, f"SNS SignatureVersion {version!r} is not 1 or 2")
        try:
            signature = base64.b64decode(envelope["Signature"], validate=True)
        except binascii.Error:
            raise WebhookRejected(401, "SNS Signature is not base64") from None
        key = self._certificate(envelope["SigningCertURL"], now).public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookRejected(401, "the SNS signing certificate has no RSA key")
        try:
            key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise WebhookRejected(401, "the SNS signature does not match the message") from None

    def _certificate(self, url: str, now: datetime) -> x509.Certificate:
        if not is_sns_url(url):
            raise WebhookRejected(401, f"SigningCertURL {url!r} is not an SNS https URL")
        certificate = self._certificates.get(url)
        if certificate is None:
            try:
                pem = self._fetch(url)
            except (OSError, ValueError) as exc:
                raise WebhookRejected(
                    503, f"cannot fetch the SNS certificate {url}: {exc}"
                ) from exc
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise WebhookRejected(401, f"{url} is not a PEM certificate") from None
            if len(self._certificates) >= _CERT_CACHE_SIZE:
                del self._certificates[next(iter(self._certificates))]
            self._certificates[url] = certificate
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise WebhookRejected(401, f"the SNS certificate {url} is not valid now")
        return certificate

    def _confirm(self, envelope: Mapping[str, str]) -> WebhookResult:
        url = envelope["SubscribeURL"]
        query = parse_qs(urlsplit(url).query)
        if (
            not is_sns_url(url)
            or query.get("Action") != ["ConfirmSubscription"]
            or query.get("TopicArn") != [envelope["TopicArn"]]
        ):
            raise WebhookRejected(403, f"SubscribeURL {url!r} is not SNS confirming this topic")
        try:
            self._fetch(url)
        except (OSError, ValueError) as exc:
            raise WebhookRejected(503, f"cannot confirm the SNS subscription: {exc}") from exc
        return WebhookResult(note=f"SNS subscription confirmed for {envelope['TopicArn']}")


def _envelope(request: WebhookRequest) -> dict[str, str]:
    """The SNS message's fields (all strings), checked against its message-type header."""
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected(400, "the SNS body is not JSON") from None
    if not isinstance(body, dict):
        raise WebhookRejected(400, "the SNS body is not a JSON object")
    kind = body.get("Type")
    required: tuple[str, ...] = _ENVELOPE + _SIGNATURE
    if kind in _CONFIRMATION_TYPES:
        required += ("SubscribeURL", "Token")
    elif kind != "Notification":
        raise WebhookRejected(400, f"SNS message Type {kind!r} is not one SNS sends")
    envelope: dict[str, str] = {}
    for key in (*required, "Subject"):
        value = body.get(key)
        if isinstance(value, str):
            envelope[key] = value
        elif key in required or value is not None:
            raise WebhookRejected(400, f"the SNS message has no text field {key!r}")
    header = request.headers.get("x-amz-sns-message-type")
    if header != kind:
        raise WebhookRejected(400, f"x-amz-sns-message-type {header!r} is not Type {kind!r}")
    topic_header = request.headers.get("x-amz-sns-topic-arn")
    if topic_header is not None and topic_header != envelope["TopicArn"]:
        raise WebhookRejected(400, "x-amz-sns-topic-arn is not the message's TopicArn")
    return envelope


def string_to_sign(envelope: Mapping[str, str]) -> bytes:
    """What SNS signs: the type's fields in order, "Name\\nvalue\\n" each (Subject if any)."""
    keys = _SIGNED_NOTIFICATION if envelope["Type"] == "Notification" else _SIGNED_CONFIRMATION
    return "".join(f"{k}\n{envelope[k]}\n" for k in keys if k in envelope).encode()


def ses_events(sns_message_id: str, message: str) -> tuple[list[ProviderEvent], str | None]:
    """The bounce or complaint events of one SES notification (classic `notificationType` or
    event publishing `eventType`), and a note when there are none. Permanent bounces are hard;
    Transient and Undetermined ones soft (SES could not tell it was permanent, so the address
    gets SOFT_BOUNCE_LIMIT chances instead of none); a "not-spam" feedback report is no
    complaint. Each event's id is the SNS MessageId and the recipient, the same on retries."""
    try:
        payload = json.loads(message)
    except ValueError:
        return [], "SNS notification is not an SES notification (not JSON): ignored"
    if not isinstance(payload, dict):
        return [], "SNS notification is not an SES notification: ignored"
    kind = payload.get("notificationType") or payload.get("eventType")
    mail = _object(payload.get("mail", {}), "mail")
    message_ids, return_paths = _our_ids(mail)
    if kind == "Bounce":
        bounce = _object(payload.get("bounce"), "bounce")
        bounce_type = _text(bounce, "bounceType")
        event_kind = EventKind.HARD_BOUNCE if bounce_type == "Permanent" else EventKind.SOFT_BOUNCE
        summary = "/".join(p for p in (bounce_type, _text(bounce, "bounceSubType")) if p)
        section, listed = bounce, "bouncedRecipients"
    elif kind == "Complaint":
        complaint = _object(payload.get("complaint"), "complaint")
        feedback = _text(complaint, "complaintFeedbackType")
        if feedback == "not-spam":
            return [], "SES complaint with feedback type not-spam: not a complaint"
        event_kind = EventKind.COMPLAINT
        summary = f"complaint {feedback or 'unspecified'}"
        section, listed = complaint, "complainedRecipients"
    else:
        return [], f"SES {kind or 'unknown'} notification: nothing to record"
    occurred_at = _when(section.get("timestamp"))
    events: list[ProviderEvent] = []
    seen: set[str] = set()
    for index, recipient in enumerate(_recipients(section.get(listed), listed)):
        address = _address(recipient.get("emailAddress"))
        key = address.lower() or f"#{index}"
        if key in seen:
            continue
        seen.add(key)
        detail = " ".join(
            p
            for p in (summary, _text(recipient, "status"), _text(recipient, "diagnosticCode"))
            if p
        )
        events.append(
            ProviderEvent(
                provider=NAME,
                event_id=f"{sns_message_id}:{key}",
                kind=event_kind,
                address=address,
                detail=detail,
                message_ids=message_ids,
                return_paths=return_paths,
                occurred_at=occurred_at,
            )
        )
    return events, None


def _our_ids(mail: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The Message-IDs ("<...>") and the envelope sender (our VERP address) SES reports."""
    candidates: list[Any] = []
    common = mail.get("commonHeaders")
    if isinstance(common, dict):
        candidates.append(common.get("messageId"))
    headers = mail.get("headers")
    if isinstance(headers, list):
        candidates.extend(
            h.get("value")
            for h in headers
            if isinstance(h, dict) and str(h.get("name", "")).lower() == "message-id"
        )
    message_ids: list[str] = []
    for value in candidates:
        if isinstance(value, str) and value.strip().strip("<>").strip():
            normal = f"<{value.strip().strip('<>').strip()}>"
            if normal not in message_ids:
                message_ids.append(normal)
    source = mail.get("source")
    return_paths = (source.strip(),) if isinstance(source, str) and source.strip() else ()
    return tuple(message_ids), return_paths


def _recipients(value: Any, field: str) -> list[Mapping[str, Any]]:
    """The listed recipients; none listed (redacted) is one event without an address, which
    the Message-ID and return path still match to the email we sent."""
    if value is None or value == []:
        return [{}]
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise WebhookRejected(400, f"SES {field} is not a list of objects")
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    address = parseaddr(value)[1].strip()
    return address if "@" in address else ""


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WebhookRejected(400, f"SES notification has no {field!r} object")
    return value


def _text(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key)
    return value.strip() if isinstance(value, str) else ""


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None
