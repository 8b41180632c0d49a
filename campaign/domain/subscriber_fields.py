"""Custom subscriber fields: a plan's `fields:` declarations (types, defaults, choices) checked
into `FieldDef`s, and each value a person, an operator or a CSV gives parsed against them.

A field's name means the same in every plan; values are stored per person, as one JSON object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from campaign.errors import BadInput

#: What a stored value is: text, choice and date as text (a date in ISO form), or a number or
#: a yes/no.
FieldValue = str | int | bool

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: Names the signup form, the CSV import, the API or the templates already use for a person.
RESERVED = frozenset(
    {
        "email",
        "first_name",
        "name",
        "timezone",
        "time_zone",
        "plan",
        "plans",
        "source",
        "website",
        "status",
        "id",
        "fields",
        "consent",
        "created_at",
        "updated_at",
        "confirmed_at",
        "unsubscribed_at",
    }
)
#: Declared fields per plan; the signup page asks for at most MAX_ASKED of them.
MAX_FIELDS = 30
MAX_ASKED = 12
#: The longest text a field may be declared to take, and the default limit.
MAX_TEXT = 500
DEFAULT_TEXT = 200
MAX_CHOICES = 50
#: Numbers are whole and bounded: a template's arithmetic on them stays small.
NUMBER_LIMIT = 10**9
#: One person's stored values as JSON, at most: what MAX_FIELDS fields of MAX_TEXT can take.
MAX_STORED_BYTES = 64 * 1024
#: How much of a refused value an error message repeats.
SHOWN = 40

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_INTEGER = re.compile(r"^[+-]?\d{1,10}$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class FieldKind(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    DATE = "date"


Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class FieldSpec(BaseModel):
    """One `fields:` entry as written; `field_problems` checks that its keys fit its type."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    type: Literal["text", "number", "boolean", "choice", "date"]
    #: checked by `field_problems` against the type (one clear message, not one per type).
    default: Any = None
    label: Label | None = None
    #: shown as an input on the engine's own signup page.
    ask: bool = False
    choices: list[Label] | None = None
    max_length: int | None = Field(default=None, ge=1, le=MAX_TEXT)
    min: int | None = Field(default=None, ge=-NUMBER_LIMIT, le=NUMBER_LIMIT)
    max: int | None = Field(default=None, ge=-NUMBER_LIMIT, le=NUMBER_LIMIT)


class FieldValueError(BadInput):
    """A custom field's value is not valid."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        #: what is wrong, in words, without the value (an API problem's detail)
        self.problem = problem
        super().__init__(f"field {field!r}: {shown(value)} {problem}")


class UnknownField(BadInput):
    """A value was given for a field the plan does not declare."""

    def __init__(self, field: str, declared: Mapping[str, FieldDef]) -> None:
        #: the name as given, cut short
        self.field = field[:SHOWN]
        known = ", ".join(declared) or "none"
        #: what is wrong, in words (an API problem's detail)
        self.problem = f"is not a field the plan declares (declared: {known})"
        super().__init__(f"unknown field {shown(field)}: {self.problem}")


def shown(value: object) -> str:
    """A hostile value as an error message may repeat it: quoted, escaped, cut short."""
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 4] + "...'"


@dataclass(frozen=True)
class FieldDef:
    """A declared field: its type, bounds and the default templates see when no value is
    stored. Equal definitions mean the same field in every plan."""

    name: str
    kind: FieldKind
    default: FieldValue
    label: str
    ask: bool = False
    choices: tuple[str, ...] = ()
    max_length: int = DEFAULT_TEXT
    min: int | None = None
    max: int | None = None

    def parse(self, raw: object) -> FieldValue:
        """`raw` (text from a form, a CSV cell or the command line, or a JSON value) as this
        field's value; FieldValueError naming the field and the value otherwise."""
        kind = self.kind
        if isinstance(raw, str):
            if _CONTROL.search(raw):
                raise FieldValueError(self.name, raw, "contains control characters")
            raw = raw.strip()
        if kind == FieldKind.NUMBER:
            return self._number(raw)
        if kind == FieldKind.BOOLEAN:
            return self._boolean(raw)
        if not isinstance(raw, str):
            raise FieldValueError(self.name, raw, "must be text")
        if kind == FieldKind.CHOICE and raw not in self.choices:
            raise FieldValueError(self.name, raw, f"is not one of {', '.join(self.choices)}")
        if kind == FieldKind.DATE:
            return self._date(raw)
        if len(raw) > self.max_length:
            raise FieldValueError(self.name, raw, f"is longer than {self.max_length} characters")
        return raw

    def _number(self, raw: object) -> int:
        number = int(raw) if isinstance(raw, str) and _INTEGER.match(raw) else raw
        if isinstance(number, bool) or not isinstance(number, int) or abs(number) > NUMBER_LIMIT:
            raise FieldValueError(self.name, raw, "is not a whole number")
        if self.min is not None and number < self.min:
            raise FieldValueError(self.name, raw, f"is less than {self.min}")
        if self.max is not None and number > self.max:
            raise FieldValueError(self.name, raw, f"is more than {self.max}")
        return number

    def _boolean(self, raw: object) -> bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise FieldValueError(self.name, raw, "is not yes or no (true, false, yes, no, 1, 0)")

    def _date(self, raw: str) -> str:
        try:
            if not _ISO_DATE.match(raw):
                raise ValueError(raw)
            return date.fromisoformat(raw).isoformat()
        except ValueError:
            raise FieldValueError(self.name, raw, "is not a date such as 2026-12-31") from None


def field_problems(specs: Mapping[str, FieldSpec]) -> list[tuple[str, str]]:
    """Every mistake in `fields:` declarations as (field path, problem): names, keys that do
    not fit the type, defaults that do not fit the field. Checks one plan's declarations."""
    problems: list[tuple[str, str]] = []
    if len(specs) > MAX_FIELDS:
        problems.append(("fields", f"declares {len(specs)} fields; at most {MAX_FIELDS}"))
    asked = [name for name, spec in specs.items() if spec.ask]
    if len(asked) > MAX_ASKED:
        problems.append(
            ("fields", f"asks for {len(asked)} fields on the signup page; at most {MAX_ASKED}")
        )
    for name, spec in specs.items():
        where = f"fields.{name}"
        if not NAME.match(name):
            problems.append(
                (
                    where,
                    "a field name is a lowercase letter, then lowercase letters, digits or _ "
                    "(40 at most)",
                )
            )
        elif name in RESERVED:
            problems.append((where, f"{name!r} is a built-in name; choose another"))
        problems += [(f"{where}.{key}", problem) for key, problem in _spec_problems(name, spec)]
    return problems


def _spec_problems(name: str, spec: FieldSpec) -> list[tuple[str, str]]:
    kind = FieldKind(spec.type)
    fits = {
        "choices": kind == FieldKind.CHOICE,
        "max_length": kind == FieldKind.TEXT,
        "min": kind == FieldKind.NUMBER,
        "max": kind == FieldKind.NUMBER,
    }
    found = [
        (key, f"only a {_owner(key)} field takes {key}")
        for key, fitting in fits.items()
        if getattr(spec, key) is not None and not fitting
    ]
    if kind == FieldKind.CHOICE:
        choices = spec.choices or []
        if not choices:
            found.append(("type", "a choice field needs `choices:`, a list of its options"))
        elif len(set(choices)) != len(choices):
            found.append(("choices", "lists an option twice"))
        elif len(choices) > MAX_CHOICES:
            found.append(("choices", f"lists {len(choices)} options; at most {MAX_CHOICES}"))
        elif any(_CONTROL.search(c) or c != c.strip() for c in choices):
            found.append(("choices", "an option has control characters or edge spaces"))
    if spec.min is not None and spec.max is not None and spec.min > spec.max:
        found.append(("min", f"{spec.min} is more than max ({spec.max})"))
    if isinstance(spec.default, date):  # YAML reads an unquoted 2026-12-31 as a date
        found.append(("default", f"write the date in quotes: '{spec.default.isoformat()}'"))
    elif spec.default is not None and not isinstance(spec.default, str | int | bool):
        found.append(("default", "must be text, a whole number, true or false"))
    elif spec.default is not None and not found:
        try:
            parsed = _unchecked(name, spec).parse(spec.default)
        except FieldValueError as exc:
            found.append(("default", f"{shown(spec.default)} {exc.problem}"))
        else:
            if isinstance(spec.default, str) and parsed != spec.default:
                found.append(("default", f"write it as {parsed!r}"))
    return found


def _owner(key: str) -> str:
    return {"choices": "choice", "max_length": "text"}.get(key, "number")


def _implicit_default(spec: FieldSpec) -> FieldValue:
    """A field declared without a default: empty text, the first choice, no, 0 (or min)."""
    kind = FieldKind(spec.type)
    if kind == FieldKind.NUMBER:
        low = spec.min if spec.min is not None else 0
        return low if spec.max is None else min(low, spec.max)
    if kind == FieldKind.BOOLEAN:
        return False
    if kind == FieldKind.CHOICE:
        return (spec.choices or [""])[0]
    return ""


def _unchecked(name: str, spec: FieldSpec) -> FieldDef:
    return FieldDef(
        name=name,
        kind=FieldKind(spec.type),
        default=_implicit_default(spec),
        label=spec.label or name.replace("_", " ").capitalize(),
        ask=spec.ask,
        choices=tuple(spec.choices or ()),
        max_length=spec.max_length or DEFAULT_TEXT,
        min=spec.min,
        max=spec.max,
    )


def field_defs(specs: Mapping[str, FieldSpec]) -> tuple[FieldDef, ...]:
    """The declarations as `FieldDef`s, in the plan's order; run `field_problems` first."""
    defs = []
    for name, spec in specs.items():
        plain = _unchecked(name, spec)
        default = plain.default if spec.default is None else plain.parse(spec.default)
        defs.append(replace(plain, default=default))
    return tuple(defs)


def field_conflicts(
    first: Mapping[str, FieldDef], second: Mapping[str, FieldDef]
) -> list[tuple[str, str]]:
    """Fields two plans both declare but differently, as (name, what differs): a person's
    values are shared by every plan, so a name must mean the same everywhere. The label and
    `ask` may differ (each plan's box asks its own way)."""
    found = []
    for name in first.keys() & second.keys():
        a, b = first[name], second[name]
        differs = [
            key
            for key in ("kind", "choices", "max_length", "min", "max", "default")
            if getattr(a, key) != getattr(b, key)
        ]
        if differs:
            found.append((name, ", ".join(differs)))
    return sorted(found)


def parse_values(
    declared: Mapping[str, FieldDef], given: Mapping[str, object], *, unknown: str = "reject"
) -> dict[str, FieldValue]:
    """The values `given` (name -> raw value) parsed against `declared`. An empty text (a blank
    form input or CSV cell) or a JSON null means "not given". A name not declared raises
    UnknownField, or is left out with `unknown="ignore"` (a public form's other inputs)."""
    values: dict[str, FieldValue] = {}
    for name, raw in given.items():
        field = declared.get(name)
        if field is None:
            if unknown == "ignore":
                continue
            raise UnknownField(name, declared)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        values[name] = field.parse(raw)
    return values


def with_defaults(
    declared: Mapping[str, FieldDef], stored: Mapping[str, object]
) -> dict[str, FieldValue]:
    """What templates see: every declared field, its stored value if it still fits the field
    (a plan edit may have changed it), else its default. Values no field declares are left out."""
    seen: dict[str, FieldValue] = {}
    for name, field in declared.items():
        value = stored.get(name)
        try:
            seen[name] = field.default if value is None else field.parse(value)
        except FieldValueError:
            seen[name] = field.default
    return seen


def encode(values: Mapping[str, FieldValue]) -> str:
    """Stored values as the JSON text kept in the subscriber's row; BadInput past the cap."""
    text = json.dumps(dict(sorted(values.items())), ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) > MAX_STORED_BYTES:
        raise BadInput(f"the custom fields take more than {MAX_STORED_BYTES // 1024} KiB together")
    return text


def decode(text: str | None) -> dict[str, FieldValue]:
    """The stored JSON text as values; anything else (a hand-edited row) as none."""
    if not text or text == "{}":  # most people, on every email: no parsing
        return {}
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str | int | bool)}
