"""One step for one subscriber as a ready-to-send message: render, sign links, build MIME."""

from __future__ import annotations

import mimetypes
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.headerregistry import Address
from html import unescape
from pathlib import Path
from typing import Any

from campaign.content.dkim import DkimSigner
from campaign.content.mime import Attachment, PartText, address, build_message
from campaign.content.render import Renderer, subscriber_context
from campaign.content.step_render import RenderedEmail
from campaign.domain import tokens
from campaign.domain.addresses import ascii_domain, wire_address
from campaign.domain.confine import escape_reason
from campaign.domain.plan import Plan, Step
from campaign.domain.subscriber_fields import FieldValue, with_defaults
from campaign.domain.transport import Envelope
from campaign.domain.verp import CONFIRMATION, DELIVERY, ReturnPaths
from campaign.errors import RenderError

_HREF = re.compile(r'href="(https?://[^"]+)"')
# What a List-Id's dot-atom and a Feedback-ID's colon-separated fields may carry.
_NOT_ATOM = re.compile(r"[^A-Za-z0-9-]+")


@dataclass(frozen=True)
class Recipient:
    subscriber_id: int
    email: str
    first_name: str
    #: custom field values as stored (none: every field's default).
    fields: Mapping[str, FieldValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Composed:
    envelope: Envelope
    data: bytes
    rendered: RenderedEmail


class Composer:
    """Knows the sender, the public URL and the signing key; turns steps into messages."""

    def __init__(
        self,
        *,
        plan: Plan,
        renderer: Renderer,
        sender: Address,
        public_base_url: str,
        secret_key: str,
        track_clicks: bool = False,
        return_paths: ReturnPaths | None = None,
        dkim: DkimSigner | None = None,
        feedback_id_sender: str | None = None,
        plan_unsubscribe: bool = False,
        reply_to: Address | None = None,
    ) -> None:
        self.plan = plan
        #: several plans run: the footer's link leaves this plan (the page offers everything);
        #: the one-click header always leaves everything.
        self.plan_unsubscribe = plan_unsubscribe
        self.renderer = renderer
        self.sender = sender
        self.public_base_url = public_base_url.rstrip("/")
        self._secret = secret_key
        self.track_clicks = track_clicks
        self.return_paths = return_paths
        self._attachments: dict[Path, Attachment] = {}
        self.dkim = dkim
        self.feedback_id_sender = feedback_id_sender
        self.list_id = list_id(plan, sender)
        #: the Reply-To of every email (REPLY_TO): None leaves replies to From.
        self.reply_to = reply_to

    def new_message_id(self) -> str:
        # 128 random bits, as a UUID4 has (122), at a quarter of the cost.
        return f"<{secrets.token_hex(16)}@{self.sender.domain}>"

    def unsubscribe_url(self, subscriber_id: int, now: datetime) -> str:
        """The link that stops all email (the one-click List-Unsubscribe header's)."""
        token = tokens.sign(self._secret, "unsubscribe", subscriber_id, now)
        return f"{self.public_base_url}/unsubscribe/{token}"

    def footer_unsubscribe_url(self, subscriber_id: int, now: datetime) -> str:
        """The footer's link (`unsubscribe_url` in templates): with several plans it names
        this plan, and its page leaves this plan or, on request, everything."""
        if not self.plan_unsubscribe:
            return self.unsubscribe_url(subscriber_id, now)
        token = tokens.sign(self._secret, "unsubscribe", subscriber_id, now, self.plan.id)
        return f"{self.public_base_url}/unsubscribe/{token}"

    def web_version_base(self, subscriber_id: int, now: datetime) -> str:
        """`lesson_base` in templates: a step key appended gives the web version of that
        step of this plan as this subscriber got it (`view_url` is this step's)."""
        token = tokens.sign(self._secret, tokens.VIEW, subscriber_id, now, self.plan.id)
        return f"{self.public_base_url}/view/{token}/"

    def _link_values(self, step: Step, subscriber_id: int, now: datetime) -> dict[str, str]:
        """The signed links every email's templates see, each made for this subscriber."""
        base = self.web_version_base(subscriber_id, now)
        return {
            "unsubscribe_url": self.footer_unsubscribe_url(subscriber_id, now),
            "view_url": base + step.key,
            "lesson_base": base,
        }

    def confirm_url(self, confirmation_id: int, now: datetime) -> str:
        """The link for one queued confirmation (one signup), not for the subscriber."""
        token = tokens.sign(self._secret, tokens.CONFIRM_SIGNUP, confirmation_id, now)
        return f"{self.public_base_url}/confirm/{token}"

    def compose_confirmation(
        self,
        recipient: Recipient,
        confirmation_id: int,
        *,
        message_id: str,
        now: datetime,
        subject_prefix: str = "",
    ) -> Composed:
        """The double opt-in email of one queued confirmation: the plan's `confirmation:` step
        with its `confirm_url`; RenderError if the plan has none. The sender, `preview
        --confirmation`, `send-test --confirmation` and the studio all build it here."""
        step = self.plan.confirmation
        if step is None:
            raise RenderError("confirmation", "the plan has no `confirmation:` email")
        return self.compose(
            step,
            recipient,
            message_id=message_id,
            now=now,
            subject_prefix=subject_prefix,
            # No web version: it would show a live confirmation link to whoever holds it.
            extra={
                "confirm_url": self.confirm_url(confirmation_id, now),
                "view_url": "",
                "lesson_base": "",
            },
            confirmation=True,
        )

    def render(
        self,
        step: Step,
        recipient: Recipient,
        now: datetime,
        extra: Mapping[str, Any] | None = None,
    ) -> RenderedEmail:
        links = self._link_values(step, recipient.subscriber_id, now)
        return self._render(step, recipient, links, extra)

    def _render(
        self,
        step: Step,
        recipient: Recipient,
        links: Mapping[str, str],
        extra: Mapping[str, Any] | None,
    ) -> RenderedEmail:
        return self.renderer.render_for(
            step, self.subscriber_context(recipient), **{**links, **(extra or {})}
        )

    def subscriber_context(self, recipient: Recipient) -> dict[str, Any]:
        """What templates see as `subscriber`: with `fields` when the plan declares any."""
        declared = self.plan.declared_fields
        fields = with_defaults(declared, recipient.fields) if declared else None
        return subscriber_context(recipient.email, recipient.first_name, fields)

    def template_context(
        self, step: Step, recipient: Recipient, now: datetime, *, confirmation_id: int | None = None
    ) -> dict[str, Any]:
        """Every name the templates of `step` see when this composer renders it for `recipient`
        (the confirmation email's with `confirmation_id`): what `campaign plan vars` lists."""
        extra = self._link_values(step, recipient.subscriber_id, now)
        if confirmation_id is not None:
            extra |= {"confirm_url": self.confirm_url(confirmation_id, now)}
            extra |= {"view_url": "", "lesson_base": ""}
        return self.renderer.body_context(step, self.subscriber_context(recipient), **extra)

    def compose(
        self,
        step: Step,
        recipient: Recipient,
        *,
        message_id: str,
        now: datetime,
        subject_prefix: str = "",
        extra: Mapping[str, Any] | None = None,
        delivery_id: int | None = None,
        confirmation: bool = False,
    ) -> Composed:
        """Render and build; raises RenderError for a template that fails for this subscriber,
        UnsendableAddress (or ValueError) for an address or name no message can carry.

        With click tracking on and a `delivery_id`, links become signed `/c/` redirects. A
        delivery or a `confirmation` is sent from a VERP return path naming it (`envelope_sender`).
        """
        links = self._link_values(step, recipient.subscriber_id, now)
        rendered = self._render(step, recipient, links, extra)
        if self.track_clicks and delivery_id is not None:
            rendered = self._tracked(rendered, delivery_id, now, keep=links["unsubscribe_url"])
        data = build_message(
            sender=self.sender,
            recipient=address(recipient.email, recipient.first_name),
            subject=subject_prefix + rendered.subject,
            text=rendered.text_part,
            html=rendered.html_part,
            message_id=message_id,
            date=now,
            extra_headers={
                # RFC 8058 one-click unsubscribe: mailbox providers show an Unsubscribe button.
                "List-Unsubscribe": f"<{self._one_click_url(links, recipient, now)}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "List-Id": self.list_id,
                **self._feedback_id(step, confirmation),
                "X-Campaign-Step": f"{self.plan.id}/{step.key}",
            },
            attachments=[self._attachment(step, path) for path in step.attachments],
            reply_to=self.reply_to,
        )
        if self.dkim is not None:
            data = self.dkim.sign(data)
        envelope_sender = self.envelope_sender(recipient, delivery_id, confirmation=confirmation)
        wire = wire_address(recipient.email)
        envelope = Envelope(envelope_sender, wire.addr_spec, smtputf8=wire.smtputf8)
        return Composed(envelope, data, rendered)

    def _one_click_url(self, links: Mapping[str, str], recipient: Recipient, now: datetime) -> str:
        """The one-click header's link: the footer's already signed, when that one leaves
        everything too (a single plan), which spares signing it twice per email."""
        if not self.plan_unsubscribe:
            return links["unsubscribe_url"]
        return self.unsubscribe_url(recipient.subscriber_id, now)

    def _feedback_id(self, step: Step, confirmation: bool) -> dict[str, str]:
        """Gmail's Feedback-ID, `step:plan:kind:SenderId`: complaint rates per step and plan."""
        if not self.feedback_id_sender:
            return {}
        kind = "confirm" if confirmation else "drip"
        fields = [_NOT_ATOM.sub("-", step.key), _NOT_ATOM.sub("-", self.plan.id), kind]
        return {"Feedback-ID": ":".join([*fields, self.feedback_id_sender])}

    def envelope_sender(
        self, recipient: Recipient, delivery_id: int | None, *, confirmation: bool = False
    ) -> str:
        """MAIL FROM: `bounces+TOKEN@domain` for a delivery or a confirmation, so that a bounce
        report is believed only for an email we sent to that address; else MAIL_FROM (tests)."""
        if self.return_paths is not None:
            if delivery_id is not None:
                return self.return_paths.return_path(DELIVERY, delivery_id, recipient.email)
            if confirmation:
                ident = recipient.subscriber_id
                return self.return_paths.return_path(CONFIRMATION, ident, recipient.email)
        return self.sender.addr_spec

    def click_url(self, delivery_id: int, target: str, now: datetime) -> str:
        token = tokens.sign(self._secret, "click", delivery_id, now, data=target)
        return f"{self.public_base_url}/c/{token}"

    def _tracked(
        self, rendered: RenderedEmail, delivery_id: int, now: datetime, keep: str
    ) -> RenderedEmail:
        """Every http(s) link but the unsubscribe one, in both parts, as a signed redirect.

        With a link tracked, both parts drop their segments and are encoded whole.
        """
        html, text = rendered.html, rendered.text
        links = sorted(set(_HREF.findall(html)), key=len, reverse=True)
        links = [escaped for escaped in links if unescape(escaped) != keep]
        if not links:
            return rendered
        for escaped in links:
            target = unescape(escaped)
            tracked = self.click_url(delivery_id, target, now)
            html = html.replace(f'href="{escaped}"', f'href="{tracked}"')
            text = text.replace(f"<{target}>", f"<{tracked}>")
        return replace(rendered, html_part=PartText(html), text_part=PartText(text))

    def _attachment(self, step: Step, path: Path) -> Attachment:
        # Read once per plan load, like the templates: not once per email.
        if path not in self._attachments:
            reason = escape_reason(path, self.plan.content_roots)
            if reason:  # a symlink changed since the plan loaded
                raise RenderError(step.key, f"attachment {path} {reason}")
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            maintype, subtype = kind.split("/", 1)
            self._attachments[path] = Attachment(path.name, path.read_bytes(), maintype, subtype)
        return self._attachments[path]


def list_id(plan: Plan, sender: Address) -> str:
    """RFC 2919 `"Plan name" <plan-id.sender-domain>`: mailbox providers group and filter by it."""
    label = _NOT_ATOM.sub("-", plan.id).strip("-") or "plan"
    ident = f"<{label}.{ascii_domain(sender.domain).lower()}>"
    name = plan.name
    if name.isascii() and name.isprintable():
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '" ' + ident
    return f"{name} {ident}"
