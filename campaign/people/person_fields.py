"""A person's fields as stored, checked where a visitor or an operator types them: the address
in its normal form (and how to look one up), the first name, the time zone, custom fields."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping

from email_validator import EmailNotValidError, validate_email

from campaign.domain import schedule
from campaign.domain.subscriber_fields import FieldDef, FieldValue, parse_values
from campaign.errors import BadInput, InvalidAddress


def normalise_address(email: str) -> str:
    """The address as stored, the form duplicates are found by (compared case-insensitively).

    Validated (syntax only, no DNS): a local part of at most 64 characters and an address of
    at most 254 (RFC 5321); no quoted local part, IP literal, dotless domain (user@localhost)
    or special-use domain (.test, .local). Unicode NFC; the domain as its lower-case U-label
    under IDNA 2008 and UTS 46 (x@xn--strae-oqa.de and x@Straße.DE are both x@straße.de,
    which is not x@strasse.de). A local part that is not ASCII needs SMTPUTF8 to be sent
    and is stored in lower case, so that every database's lower() compares it alike; an
    ASCII one keeps its case. Raise InvalidAddress naming the address and the problem.
    """
    candidate = email.strip()
    try:
        result = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=True,
            strict=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(candidate, str(exc)) from exc
    local = result.local_part
    if not local.isascii():
        local = unicodedata.normalize("NFC", local.lower())
    return f"{local}@{result.domain}"


def lookup_form(email: str) -> str:
    """How to look an operator's `email` up: normalised, or as typed if it is not valid
    (an address stored before the rules were this strict)."""
    try:
        return normalise_address(email)
    except InvalidAddress:
        return email.strip()


def checked_timezone(name: str | None) -> str:
    """An IANA time zone name (UTC when none is given); BadInput for one that is unknown."""
    name = (name or "").strip() or schedule.DEFAULT_TIMEZONE
    try:
        schedule.zone(name)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    return name


def first_name_of(name: str | None) -> str:
    """A name as stored: control characters (NUL, which PostgreSQL cannot store, CR, LF)
    and runs of white space become one space."""
    name = name or ""
    if not name.isprintable():
        name = "".join([" " if unicodedata.category(char) == "Cc" else char for char in name])
    cleaned = " ".join(name.split())
    if len(cleaned) > 100:
        raise BadInput("first name is longer than 100 characters")
    if any(0xD800 <= ord(c) < 0xE000 for c in cleaned):
        # Lone surrogates (undecodable bytes) can be stored nowhere.
        raise BadInput("first name contains control characters or undecodable bytes")
    return cleaned


def checked_fields(
    declared: Mapping[str, FieldDef], given: Mapping[str, object] | None, *, unknown: str
) -> dict[str, FieldValue]:
    """Custom field values as stored, parsed against the plan's declarations: FieldValueError
    for a bad value, UnknownField for an undeclared name (or left out: `unknown="ignore"`)."""
    return parse_values(declared, given or {}, unknown=unknown)
