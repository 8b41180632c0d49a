"""The "view in browser" page of an email: one step rendered for one subscriber as the
composer renders it when sending, found from the signed link in the email's header."""

from __future__ import annotations

from datetime import datetime

from campaign.content.compose import Recipient
from campaign.content.snapshot import Contents
from campaign.content.step_render import RenderedEmail
from campaign.domain import tokens
from campaign.domain.subscriber_fields import decode as stored_fields
from campaign.errors import InvalidToken
from campaign.storage import store
from campaign.storage.db import Database


class NoWebVersion(InvalidToken):
    """This page does not exist."""


def web_version(
    db: Database, contents: Contents, secret_key: str, token: str, step_key: str, now: datetime
) -> RenderedEmail:
    """Step `step_key` of the plan a `view` token names, rendered for the subscriber it names.

    NoWebVersion for a forged or altered token, a plan no longer running, a step the plan
    does not have (the confirmation email has no web version), a step the subscriber's
    month has not reached yet, or a subscriber who was forgotten: each looks alike from
    outside, so a link tells nothing it did not already.
    """
    try:
        claims = tokens.verify(secret_key, token, tokens.VIEW, now)
    except InvalidToken as exc:
        raise NoWebVersion() from exc
    content = contents.of(claims.data)
    step = None if content is None else content.plan.step(step_key)
    # plan.step also takes a day number; the page answers only to the key the email links.
    if content is None or step is None or step.key != step_key:
        raise NoWebVersion()
    with db.read() as session:
        known = store.subscriber_by_id(session, claims.subject_id)
        reached = store.furthest_day(session, claims.subject_id, content.plan.id)
    if known is None:  # forgotten: nothing of them is left to show
        raise NoWebVersion()
    # A lesson opens on its day, not before: the plan's pace is the marketer's, and editing
    # the step in a link must not read the month ahead. A step the plan passed over for them
    # (skipped after downtime, failed) still opens: later lessons link back to it.
    if reached is None or step.day > reached:
        raise NoWebVersion()
    recipient = Recipient(known.id, known.email, known.first_name, stored_fields(known.fields))
    return content.composer.render(step, recipient, now)
