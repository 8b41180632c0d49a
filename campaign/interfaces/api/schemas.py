"""The JSON API's bodies as pydantic models: what a request may hold (each field checked, any
other field refused) and what an answer holds. The OpenAPI document is built from them."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
)

from campaign.domain.subscriber_fields import MAX_FIELDS
from campaign.errors import BadInput
from campaign.people.person_fields import checked_timezone, normalise_address

#: C0 controls (tab included), DEL and C1 controls: every field is one line of text, so
#: nothing typed into one can start a new header in an email or a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _one_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (line breaks, tabs, NUL)")
    if _SURROGATE.search(value):
        raise ValueError("is not valid Unicode text")
    return value


#: One line of text, JSON strings only (a number is not coerced into text).
Line = Annotated[StrictStr, AfterValidator(_one_line)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatedConsent(_Strict):
    """The consent the calling system collected from the person: when, from where, on what."""

    at: AwareDatetime = Field(
        description="When the person consented (RFC 3339 with an offset); not in the future."
    )
    ip: Line = Field(max_length=45, description="The IPv4 or IPv6 address they consented from.")
    source: Line = Field(
        min_length=1,
        max_length=400,
        description="Where they consented: the page's URL or the form's name.",
    )
    user_agent: Line | None = Field(
        default=None, max_length=400, description="Their browser's User-Agent, if known."
    )

    @field_validator("ip")
    @classmethod
    def _an_ip_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("is not an IPv4 or IPv6 address") from None


def _flat_values(values: dict[str, Any] | None) -> dict[str, Any] | None:
    for name, value in (values or {}).items():
        if len(name) > 40:
            raise ValueError("a field name is at most 40 characters")
        if value is not None and not isinstance(value, str | int | bool):
            raise ValueError(
                f"the value of {name!r} must be text, a whole number, true, false or null"
            )
        if isinstance(value, str):
            try:
                _one_line(value)
            except ValueError as exc:
                raise ValueError(f"the value of {name!r} {exc}") from None
    return values


#: Custom field values by name (the plan's `fields:`): each checked against its declaration.
CustomFields = Annotated[
    dict[str, Any] | None,
    Field(
        max_length=MAX_FIELDS,
        description="Custom fields the plan declares (`fields:`), by name: text, a whole "
        "number, true or false as the field's type asks; null clears a value (update). A name "
        "the plan does not declare, or a value that does not fit, is refused (422) naming "
        "`fields.NAME`.",
        json_schema_extra={
            "additionalProperties": {"type": ["string", "integer", "boolean", "null"]}
        },
    ),
    AfterValidator(_flat_values),
]


class SubscriberCreate(_Strict):
    """A new subscriber: by double opt-in (no `consent`), or subscribed at once with the
    consent the caller collected."""

    email: Line = Field(max_length=320, description="The address (checked, not looked up).")
    first_name: Line | None = Field(default=None, max_length=100)
    timezone: Line | None = Field(
        default=None, max_length=64, description="An IANA time zone, e.g. Europe/Berlin; UTC."
    )
    consent: StatedConsent | None = Field(
        default=None,
        description="Omit for double opt-in (a confirmation email is sent); give it to "
        "subscribe at once (the welcome email is sent).",
    )
    fields: CustomFields = None
    plan: Line | None = Field(
        default=None,
        max_length=64,
        description="The id of the plan to join; omitted: the default plan. Someone already "
        "active joins it at once, with no new confirmation.",
    )

    @field_validator("email")
    @classmethod
    def _an_address(cls, value: str) -> str:
        try:
            return normalise_address(value)
        except BadInput as exc:
            raise ValueError(getattr(exc, "problem", exc.message)) from None

    @field_validator("timezone")
    @classmethod
    def _a_time_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return checked_timezone(value)
        except BadInput as exc:
            raise ValueError(exc.message) from None


class SubscriberUpdate(_Strict):
    """Changes to a subscriber: custom field values (the others are left as they are)."""

    fields: CustomFields = None


class ConsentOut(BaseModel):
    kind: str = Field(description="signup, confirm or operator")
    at: AwareDatetime
    ip: str
    user_agent: str
    source: str


class EnrollmentOut(BaseModel):
    id: int
    plan_id: str
    status: str = Field(description="active, completed or cancelled")
    started_at: AwareDatetime
    last_sent_at: AwareDatetime | None
    next_due_at: AwareDatetime | None


class DeliveryOut(BaseModel):
    id: int
    email: str
    plan_id: str
    step_key: str
    status: str = Field(description="queued, retry, sent, failed, bounced, skipped or unknown")
    attempts: int
    message_id: str
    last_error: str | None = Field(description="The mail server's last refusal, if any.")
    created_at: AwareDatetime
    updated_at: AwareDatetime
    sent_at: AwareDatetime | None
    variant: str | None = Field(
        default=None, description="The subject test's variant this email carries (a, b, ...)."
    )


class SubscriberOut(BaseModel):
    email: str
    first_name: str
    timezone: str
    status: str = Field(description="pending, active, unsubscribed, bounced or complained")
    source: str
    created_at: AwareDatetime
    updated_at: AwareDatetime
    confirmed_at: AwareDatetime | None
    unsubscribed_at: AwareDatetime | None
    fields: dict[str, str | int | bool] = Field(
        default_factory=dict,
        description="Custom field values as stored (a field not given is absent: emails "
        "show its default).",
    )
    consents: list[ConsentOut]
    enrollments: list[EnrollmentOut]
    deliveries: list[DeliveryOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next: str = Field(
        description="Opaque cursor: pass it as `since` for the deliveries after these (also "
        "when `has_more` is false, to poll for new ones later)."
    )
    has_more: bool


class StepStatsOut(BaseModel):
    key: str
    day: int
    sent: int
    bounced: int
    failed: int
    skipped: int
    unknown: int
    pending: int
    unsubscribes_48h: int
    clicks: int


class ProblemCount(BaseModel):
    status: str
    reason: str
    count: int


class VariantStatsOut(BaseModel):
    name: str
    subject: str = Field(description="As the plan writes it now; empty once the plan drops it.")
    sent: int
    clicked: int = Field(description="Emails sent with at least one click.")
    clicks: int
    click_rate: float
    unsubscribes_48h: int
    unsubscribe_rate: float


class VariantComparisonOut(BaseModel):
    measure: str = Field(description="`click rate` or `unsubscribe rate`.")
    control: str
    variant: str
    z: float
    p_value: float
    enough_data: bool
    significant: bool
    statement: str


class SubjectTestOut(BaseModel):
    step: str
    day: int
    running: bool
    variants: list[VariantStatsOut]
    comparisons: list[VariantComparisonOut]


class StatsOut(BaseModel):
    """What `campaign stats --json` prints."""

    plan: str
    name: str
    subscribers: dict[str, int]
    steps: list[StepStatsOut]
    problems: list[ProblemCount]
    subject_tests: list[SubjectTestOut]


class FieldError(BaseModel):
    field: str = Field(description="Where: a body field (dotted, e.g. consent.at) or a query one.")
    detail: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem details object (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(
        default=None, description="For a request that is not valid: each field's problem."
    )


#: The models the document lists under components/schemas.
COMPONENTS: tuple[type[BaseModel], ...] = (
    StatedConsent,
    SubscriberCreate,
    SubscriberUpdate,
    SubscriberOut,
    DeliveryPage,
    StatsOut,
    ProblemOut,
)


def component_schemas() -> dict[str, Any]:
    """JSON Schema (2020-12, as OpenAPI 3.1 takes it) of every model, keyed by name."""
    schemas: dict[str, Any] = {}
    for model in COMPONENTS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
