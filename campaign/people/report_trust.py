"""Whether a bounce or complaint report is about an email we sent to the address it names:
by the signed VERP token it came back to, or by a Message-ID in the delivery log for that
address. Anything else is not ours and suppresses nobody."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from campaign.domain import verp
from campaign.domain.verp import ReturnPaths, TokenRef, canonical_address
from campaign.storage import store

# A forged report may hold thousands of tokens or ids: each costs a query, so only the first few.
MAX_CLUES = 8
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,250}>")


@dataclass
class Evidence:
    """What a report offers to prove it is about our email: VERP tokens and Message-IDs."""

    tokens: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)

    def add_return_paths(self, value: str | None) -> None:
        for token in verp.tokens_in(value or ""):
            if token not in self.tokens and len(self.tokens) < MAX_CLUES:
                self.tokens.append(token)

    def add_envelope_id(self, value: str | None) -> None:
        """An ENVID (RFC 3461) is a bare token, or a return path if an MTA made it one."""
        value = (value or "").strip()
        if verp.tokens_in(value):
            self.add_return_paths(value)
        elif value and verp.parse(value) and len(self.tokens) < MAX_CLUES:
            self.tokens.append(value)

    def add_message_id(self, value: str | None) -> None:
        found = _MESSAGE_ID.search(value or "")
        if found and found.group(0) not in self.message_ids and len(self.message_ids) < MAX_CLUES:
            self.message_ids.append(found.group(0))


@dataclass(frozen=True)
class Verdict:
    """`address` to act on when the report is ours, else None and the `reason` it is not."""

    address: str | None
    reason: str


def check(session: Session, paths: ReturnPaths, evidence: Evidence, address: str) -> Verdict:
    """Is a report naming `address` (empty: the report does not say) about our email to it?"""
    wanted = canonical_address(address) if address else ""
    reasons: list[str] = []
    for raw in evidence.tokens:
        ref = verp.parse(raw)
        if ref is None:
            reasons.append("its VERP token is malformed or truncated")
            continue
        sent_to = _sent_to(session, ref)
        if wanted and paths.verifies(ref, wanted):
            # The stored spelling (`straße.de` for a report's `xn--strae-oqa.de`) finds the row.
            same = sent_to is not None and canonical_address(sent_to) == wanted
            return Verdict(sent_to if same else address, "VERP token")
        if sent_to is None or not paths.verifies(ref, sent_to):
            reasons.append("its VERP token does not verify (forged or altered)")
        elif not wanted:
            return Verdict(sent_to, "VERP token")
        else:
            reasons.append("its VERP token is for an email to another address")
    for message_id in evidence.message_ids:
        found = store.address_by_message_id(session, message_id)
        if found is None:
            reasons.append("its Message-ID is not in the delivery log")
        elif not wanted or canonical_address(found.email) == wanted:
            return Verdict(found.email, "Message-ID")
        else:
            reasons.append("its Message-ID is of an email to another address")
    if not reasons:
        reasons.append("no VERP token and no Message-ID of an email we sent")
    return Verdict(None, "; ".join(dict.fromkeys(reasons)))


def _sent_to(session: Session, ref: TokenRef) -> str | None:
    """The address the email a token names went to, as far as the database still knows."""
    if ref.kind == verp.DELIVERY:
        return store.delivery_address(session, ref.ident)
    return store.subscriber_address(session, ref.ident)
