"""The segment rule language: a JSON tree of conditions and groups, checked against a field catalogue.

A rule is a condition or a group::

    {"field": "total_spent", "op": "gte", "value": "500"}
    {"field": "viewed_categories", "key": "celulares", "op": "within_last_days", "value": 7}
    {"all": [rule, ...]}    {"any": [rule, ...]}    {"not": rule}

`FIELDS` is the catalogue: each field has a `Kind` (number, money, date, string, set, ...), the operators it
takes and where its data lives (a `profile_projection` column or a `profile_tag` kind). Each operator has
a value form (`OPERATORS`): none (`exists`), a scalar of the field's kind, `[low, high]` (`between`), a
non-empty list (`in`, `not_in`) or a positive number of days. `parse_rule` turns JSON into frozen models
with canonical values (Decimal money quantized to cents, UTC datetimes, tuples for lists) or raises
`InvalidRule`, whose errors name the path of each offending part (`rule.all[2].value`) and never repeat
the submitted values (they may be personal data).

Two evaluators read the parsed rule and must agree; a property-based test checks it on SQLite and
PostgreSQL. `evaluate.matches` (Python, one profile: the incremental path on every profile change) and
`compiler.compile_rule` (SQL, all of a tenant's profiles: full evaluation and preview). The semantics they
share, fixed here:

- A condition on a missing (null) trait is false whatever its operator, `ne` and `not_in` included; so
  `{"not": condition}` is true for it. Sets are never missing, only empty: `not_in` is true on an empty set.
  A keyed condition (`consent`, `viewed_*`) on a key the profile lacks is false.
- Time is explicit: both take `now` (aware). `within_last_days n`: now - n days <= t <= now;
  `within_next_days n`: now <= t <= now + n days; `more_than_days_ago n`: t < now - n days.
- Dates relative to now (age, birth month) use now's UTC date. `age` is whole years since `birth_date`;
  `birth_month` is its month, `is_current_month` compares it with now's.
- Money is exact: rule values are Decimals with at most 2 decimal places, compared as integer cents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from services.segmentation.models import TagKind
from shared import normalize
from shared.errors import Invalid, safe_loc
from shared.records import CENT, ConsentPurpose, ConsentStatus, Gender, PaymentMethod

# -- operators ---------------------------------------------------------------------------------------

ValueForm = Literal["none", "scalar", "pair", "list", "days"]


@dataclass(frozen=True)
class Operator:
    form: ValueForm
    description: str


OPERATORS: dict[str, Operator] = {
    "eq": Operator("scalar", "equal to `value`"),
    "ne": Operator("scalar", "known and not equal to `value`"),
    "in": Operator("list", "one of `value` (a list); on a set: has at least one of them"),
    "not_in": Operator("list", "known and none of `value` (a list); on a set: has none of them"),
    "gt": Operator("scalar", "greater than `value`"),
    "gte": Operator("scalar", "greater than or equal to `value`"),
    "lt": Operator("scalar", "less than `value`"),
    "lte": Operator("scalar", "less than or equal to `value`"),
    "between": Operator("pair", "`value` is `[low, high]`; low <= trait <= high"),
    "contains": Operator("scalar", "the set has `value`"),
    "starts_with": Operator("scalar", "the text starts with `value` (a CEP prefix)"),
    "exists": Operator("none", "the trait is known (a set: not empty; keyed: the key is present)"),
    "within_last_days": Operator("days", "the time is in the last `value` days (up to now)"),
    "more_than_days_ago": Operator("days", "the time is more than `value` days ago"),
    "within_next_days": Operator("days", "the time is in the next `value` days (from now)"),
    "is_current_month": Operator("none", "the month is the current one (birthdays this month)"),
}
MAX_DAYS = 36_500
MAX_LIST = 100
MAX_DEPTH = 10  # nested groups
MAX_CONDITIONS = 200

# -- the field catalogue -----------------------------------------------------------------------------


class Kind(StrEnum):
    integer = "integer"
    money = "money"
    ratio = "ratio"
    date = "date"
    datetime = "datetime"
    string = "string"
    string_set = "string_set"
    timed_set = "timed_set"
    consent = "consent"


ORDERED = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "exists")
OPS_BY_KIND: dict[Kind, tuple[str, ...]] = {
    Kind.integer: ORDERED,
    Kind.money: ORDERED,
    Kind.ratio: ("gt", "gte", "lt", "lte", "between", "exists"),
    Kind.date: ("eq", "ne", "gt", "gte", "lt", "lte", "between", "exists"),
    Kind.datetime: (
        "gt",
        "gte",
        "lt",
        "lte",
        "between",
        "within_last_days",
        "more_than_days_ago",
        "within_next_days",
        "exists",
    ),
    Kind.string: ("eq", "ne", "in", "not_in", "exists"),
    Kind.string_set: ("contains", "in", "not_in", "exists"),
    Kind.timed_set: ("exists", "within_last_days", "more_than_days_ago"),
    Kind.consent: ("eq", "ne", "in", "not_in", "exists"),
}
RELATIVE_OPS = frozenset({"within_last_days", "more_than_days_ago", "within_next_days", "is_current_month"})
# The RFM groups the profile service assigns (its R x FM grid); a copy, as services share no code.
RFM_GROUPS = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose_them",
    "hibernating",
    "lost",
)
CONSENT_TAGS: dict[str, TagKind] = {
    ConsentStatus.granted: TagKind.consent_granted,
    ConsentStatus.denied: TagKind.consent_denied,
    ConsentStatus.revoked: TagKind.consent_revoked,
}


@dataclass(frozen=True)
class FieldSpec:
    """One field of the rule language. `column` (a `profile_projection` column) or `tag` (a `profile_tag`
    kind) says where its data lives; `derived` fields are computed from their column at evaluation time."""

    name: str
    kind: Kind
    description: str
    column: str | None = None
    tag: TagKind | None = None
    derived: Literal["age", "birth_month"] | None = None
    extra_ops: tuple[str, ...] = ()
    bounds: tuple[int, int] | None = None
    choices: tuple[str, ...] = ()
    key_choices: tuple[str, ...] = ()
    normalizer: Callable[[str], str] | None = None
    pattern: str | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        return OPS_BY_KIND[self.kind] + self.extra_ops

    @property
    def storage(self) -> tuple[str, ...]:
        """The column or tag kinds the field reads."""
        if self.kind is Kind.consent:
            return tuple(CONSENT_TAGS.values())
        return (self.column,) if self.column else (str(self.tag),)

    @property
    def keyed(self) -> bool:
        return self.kind in (Kind.timed_set, Kind.consent)


def _scalar(name: str, kind: Kind, description: str, **options: Any) -> FieldSpec:
    return FieldSpec(name, kind, description, column=options.pop("column", name), **options)


_COUNT = (0, 1_000_000_000)
_FIELDS = (
    # Purchases
    _scalar("orders_count", Kind.integer, "Orders that count (not cancelled or returned).", bounds=_COUNT),
    _scalar("total_spent", Kind.money, "Total spent, in BRL.", column="total_spent_minor"),
    _scalar(
        "average_order_value",
        Kind.money,
        "Average order value, in BRL (unknown without orders).",
        column="average_order_value_minor",
    ),
    _scalar("first_order_at", Kind.datetime, "The first counted order."),
    _scalar("last_order_at", Kind.datetime, "The latest counted order."),
    FieldSpec("sources", Kind.string_set, "Sources with counted orders.", tag=TagKind.source),
    _scalar(
        "preferred_payment_method",
        Kind.string,
        "The payment method used most.",
        choices=tuple(PaymentMethod),
    ),
    # Interests
    FieldSpec(
        "bought_categories",
        Kind.string_set,
        "Top categories bought.",
        tag=TagKind.bought_category,
    ),
    FieldSpec(
        "bought_products",
        Kind.string_set,
        "Top products bought (SKUs).",
        tag=TagKind.bought_product,
    ),
    FieldSpec(
        "viewed_categories",
        Kind.timed_set,
        "Categories viewed; `key` names the category.",
        tag=TagKind.viewed_category,
    ),
    FieldSpec(
        "viewed_products",
        Kind.timed_set,
        "Products viewed; `key` names the SKU.",
        tag=TagKind.viewed_product,
    ),
    # Demographics and location
    _scalar(
        "age",
        Kind.integer,
        "Age in whole years at evaluation time.",
        column="birth_date",
        derived="age",
        bounds=(0, 150),
    ),
    _scalar("birth_date", Kind.date, "Date of birth."),
    _scalar(
        "birth_month",
        Kind.integer,
        "Month of birth, 1-12; `is_current_month` finds this month's birthdays.",
        column="birth_date",
        derived="birth_month",
        bounds=(1, 12),
        extra_ops=("is_current_month",),
    ),
    _scalar("gender", Kind.string, "female, male or other.", choices=tuple(Gender)),
    _scalar(
        "state",
        Kind.string,
        "State, as its UF code (names are accepted).",
        normalizer=normalize.normalize_state,
    ),
    _scalar("city", Kind.string, "City, as written on the profile.", normalizer=normalize.normalize_city),
    _scalar(
        "zip",
        Kind.string,
        "CEP, 8 digits (some profiles have a 5-digit prefix); `starts_with` takes any prefix.",
        extra_ops=("starts_with",),
        pattern=r"\d{1,8}",
    ),
    # RFM and predictions (refreshed tenant-wide by the profile service)
    _scalar("rfm_group", Kind.string, "RFM group.", choices=RFM_GROUPS),
    _scalar("rfm_r", Kind.integer, "RFM recency score, 1-5 (5: bought most recently).", bounds=(1, 5)),
    _scalar("rfm_f", Kind.integer, "RFM frequency score, 1-5.", bounds=(1, 5)),
    _scalar("rfm_m", Kind.integer, "RFM monetary score, 1-5.", bounds=(1, 5)),
    _scalar(
        "clv_12m", Kind.money, "Predicted revenue over the next 12 months, in BRL.", column="clv_12m_minor"
    ),
    _scalar("churn_probability", Kind.ratio, "Predicted probability that the customer has left, 0-1."),
    _scalar("next_order_at", Kind.datetime, "Expected next order (may be overdue)."),
    # Consents
    FieldSpec(
        "consent",
        Kind.consent,
        "The latest decision for the purpose named by `key`: granted, denied or revoked.",
        key_choices=tuple(ConsentPurpose),
        choices=tuple(ConsentStatus),
    ),
    # Behaviour
    _scalar("last_seen_at", Kind.datetime, "The latest behaviour event (visit, view, search, ...)."),
    _scalar("cart_abandoned_at", Kind.datetime, "The latest abandoned cart."),
)
FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in _FIELDS}

# -- the models --------------------------------------------------------------------------------------


def _catalogue_text() -> str:
    rows = [
        f"- `{spec.name}` ({spec.kind}{', needs `key`' if spec.keyed else ''}): {spec.description} "
        f"Operators: {', '.join(spec.ops)}."
        for spec in _FIELDS
    ]
    ops = [f"- `{name}`: {op.description}" for name, op in OPERATORS.items()]
    return "Fields:\n" + "\n".join(rows) + "\n\nOperators:\n" + "\n".join(ops)


CONDITION_EXAMPLES: list[JsonValue] = [
    {"field": "total_spent", "op": "gte", "value": "500.00"},
    {"field": "age", "op": "between", "value": [25, 34]},
    {"field": "state", "op": "in", "value": ["SP", "RJ"]},
    {"field": "zip", "op": "starts_with", "value": "013"},
    {"field": "bought_categories", "op": "contains", "value": "alimentos"},
    {"field": "viewed_categories", "key": "celulares", "op": "within_last_days", "value": 7},
    {"field": "consent", "key": "marketing_whatsapp", "op": "eq", "value": "granted"},
    {"field": "last_order_at", "op": "more_than_days_ago", "value": 180},
    {"field": "birth_month", "op": "is_current_month"},
]


class Condition(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "description": "A test of one trait.\n\n" + _catalogue_text(),
            "examples": CONDITION_EXAMPLES,
        },
    )

    field: str = Field(description="A field of the catalogue.", json_schema_extra={"enum": list(FIELDS)})
    op: str = Field(description="An operator the field takes.", json_schema_extra={"enum": list(OPERATORS)})
    key: str | None = Field(
        None,
        validate_default=True,
        description="The element a keyed field is about: the consent purpose, the category or SKU viewed.",
    )
    value: Any = Field(
        None,
        validate_default=True,
        description="Depends on the operator: none (`exists`, `is_current_month`), a number, money as a "
        'string ("199.90"), an ISO date or time, a text, `[low, high]`, a list, or a number of days.',
        json_schema_extra={
            "anyOf": [
                {"type": "number"},
                {"type": "string"},
                {"type": "boolean"},
                {
                    "type": "array",
                    "items": {"type": ["number", "string"]},
                    "minItems": 1,
                    "maxItems": MAX_LIST,
                },
                {"type": "null"},
            ]
        },
    )

    @field_validator("field")
    @classmethod
    def _known_field(cls, name: str) -> str:
        if name not in FIELDS:
            raise PydanticCustomError(
                "rule_field", "Unknown field; see the catalogue in the Condition schema."
            )
        return name

    @field_validator("op")
    @classmethod
    def _allowed_op(cls, op: str, info: ValidationInfo) -> str:
        if op not in OPERATORS:
            raise PydanticCustomError("rule_op", f"Unknown operator; use one of: {', '.join(OPERATORS)}.")
        spec = FIELDS.get(info.data.get("field", ""))
        if spec is not None and op not in spec.ops:
            raise PydanticCustomError(
                "rule_op", f"`{spec.name}` does not take `{op}`; it takes: {', '.join(spec.ops)}."
            )
        return op

    @field_validator("key")
    @classmethod
    def _key(cls, key: str | None, info: ValidationInfo) -> str | None:
        spec = FIELDS.get(info.data.get("field", ""))
        if spec is None:
            return key
        if not spec.keyed:
            if key is not None:
                raise PydanticCustomError("rule_key", f"`{spec.name}` takes no `key`.")
            return None
        if key is None:
            raise PydanticCustomError("rule_key", f"`{spec.name}` needs a `key`.")
        key = key.strip()
        if not 1 <= len(key) <= 200:
            raise PydanticCustomError("rule_key", "A key has 1 to 200 characters.")
        if spec.key_choices and key not in spec.key_choices:
            raise PydanticCustomError("rule_key", f"Use one of: {', '.join(spec.key_choices)}.")
        return key

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> Any:
        spec = FIELDS.get(info.data.get("field", ""))
        op = info.data.get("op")
        if spec is None or op is None:
            return value  # the field or operator is already reported
        try:
            return parse_value(spec, op, value)
        except ValueProblem as problem:
            raise PydanticCustomError("rule_value", str(problem)) from None


class AllOf(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "all": [
                        {"field": "orders_count", "op": "gte", "value": 2},
                        {"field": "consent", "key": "marketing_email", "op": "eq", "value": "granted"},
                    ]
                }
            ]
        },
    )

    all: list[Rule] = Field(min_length=1, max_length=MAX_LIST, description="Every rule holds.")


class AnyOf(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "any": [
                        {"field": "state", "op": "eq", "value": "SP"},
                        {"field": "zip", "op": "starts_with", "value": "2"},
                    ]
                }
            ]
        },
    )

    any: list[Rule] = Field(min_length=1, max_length=MAX_LIST, description="At least one rule holds.")


class NotRule(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={
            "examples": [{"not": {"field": "last_seen_at", "op": "within_last_days", "value": 30}}]
        },
    )

    not_: Rule = Field(alias="not", description="The rule does not hold.")


GROUPS = ("all", "any", "not")
_TAGS: dict[type[BaseModel], str] = {Condition: "condition", AllOf: "all", AnyOf: "any", NotRule: "not"}
_TAG_NAMES = frozenset(_TAGS.values())


def _rule_kind(raw: Any) -> str | None:
    """Which model a JSON rule is: a group by its key, else a condition (whose errors then say what is
    missing). Choosing up front keeps errors to the one model meant, instead of one set per union member."""
    if isinstance(raw, dict):
        return next((key for key in GROUPS if key in raw), "condition")
    return _TAGS.get(type(raw))


Rule = Annotated[
    Union[  # noqa: UP007 (a string annotation of `|` with Annotated members does not resolve at runtime)
        Annotated[Condition, Tag("condition")],
        Annotated[AllOf, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[NotRule, Tag("not")],
    ],
    Discriminator(
        _rule_kind,
        custom_error_type="rule_kind",
        custom_error_message='A rule is a condition {"field", "op", "value"} or a group (all, any, not).',
    ),
    Field(description="A condition or a group of rules."),
]
for _model in (AllOf, AnyOf, NotRule):
    _model.model_rebuild()

rule_adapter: TypeAdapter[Rule] = TypeAdapter(Rule)

# -- values ------------------------------------------------------------------------------------------


class ValueProblem(ValueError):
    """A value that does not fit its field and operator; the message never quotes the value."""


def parse_value(spec: FieldSpec, op: str, raw: Any) -> Any:
    """The canonical value of a condition: None, a scalar, a (low, high) pair, a tuple or a day count."""
    form = OPERATORS[op].form
    if form == "none":
        if raw not in (None, True):
            raise ValueProblem(f"`{op}` takes no value.")
        return None
    if raw is None:
        raise ValueProblem(f"`{op}` needs a value.")
    if form == "days":
        days = _integer(raw, "a number of days")
        if not 1 <= days <= MAX_DAYS:
            raise ValueProblem(f"A number of days from 1 to {MAX_DAYS}.")
        return days
    if form == "pair":
        if not isinstance(raw, list | tuple) or len(raw) != 2:
            raise ValueProblem("`between` takes [low, high].")
        low, high = (_item(spec, op, item, n) for n, item in enumerate(raw, 1))
        if low > high:
            raise ValueProblem("`between` takes [low, high] with low <= high.")
        return (low, high)
    if form == "list":
        if not isinstance(raw, list | tuple) or not 1 <= len(raw) <= MAX_LIST:
            raise ValueProblem(f"`{op}` takes a list of 1 to {MAX_LIST} values.")
        return tuple(_item(spec, op, item, n) for n, item in enumerate(raw, 1))
    return scalar_value(spec, op, raw)


def _item(spec: FieldSpec, op: str, raw: Any, n: int) -> Any:
    try:
        return scalar_value(spec, op, raw)
    except ValueProblem as problem:
        raise ValueProblem(f"Item {n}: {problem}") from None


def scalar_value(spec: FieldSpec, op: str, raw: Any) -> Any:
    kind = spec.kind
    if kind is Kind.integer:
        number = _integer(raw, "a whole number")
        if spec.bounds and not spec.bounds[0] <= number <= spec.bounds[1]:
            raise ValueProblem(f"A whole number from {spec.bounds[0]} to {spec.bounds[1]}.")
        return number
    if kind is Kind.money:
        return _money(raw)
    if kind is Kind.ratio:
        return _ratio(raw)
    if kind is Kind.date:
        return _date(raw)
    if kind is Kind.datetime:
        return _datetime(raw)
    return _text(spec, op, raw)


def _integer(raw: Any, what: str) -> int:
    if isinstance(raw, bool):
        raise ValueProblem(f"Expected {what}.")
    if isinstance(raw, int):
        return raw
    number = _decimal(raw, what)
    if number != number.to_integral_value():
        raise ValueProblem(f"Expected {what}.")
    return int(number)


def _decimal(raw: Any, what: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise ValueProblem(f"Expected {what}.")
    if isinstance(raw, str) and len(raw) > 40:
        raise ValueProblem(f"Expected {what}.")
    try:
        number = Decimal(str(raw).strip()) if not isinstance(raw, Decimal) else raw
    except InvalidOperation:
        raise ValueProblem(f"Expected {what}.") from None
    if not number.is_finite():
        raise ValueProblem(f"Expected {what}.")
    return number


MAX_MONEY = Decimal(10) ** 13


def _money(raw: Any) -> Decimal:
    what = 'an amount in BRL, e.g. "199.90"'
    amount = _decimal(raw, what)
    if abs(amount) >= MAX_MONEY:
        raise ValueProblem("An amount below 10^13.")
    cents = amount.quantize(CENT)
    if cents != amount:
        raise ValueProblem("An amount has at most 2 decimal places.")
    return cents


def _ratio(raw: Any) -> float:
    ratio = float(_decimal(raw, "a number from 0 to 1"))
    if not 0 <= ratio <= 1:
        raise ValueProblem("A number from 0 to 1.")
    return ratio


def _date(raw: Any) -> date:
    if isinstance(raw, date) and not isinstance(raw, datetime):
        return raw
    if isinstance(raw, str) and len(raw) == 10:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    raise ValueProblem("Expected a date, YYYY-MM-DD.")


def _datetime(raw: Any) -> datetime:
    parsed: datetime | None = raw if isinstance(raw, datetime) else None
    if isinstance(raw, str) and len(raw) <= 40:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueProblem('Expected a time with its offset, e.g. "2026-11-20T10:00:00-03:00".')
    return parsed.astimezone(UTC)


def _text(spec: FieldSpec, op: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 200:
        raise ValueProblem("Expected a text of 1 to 200 characters.")
    text = raw.strip()
    if spec.normalizer is not None:
        try:
            text = spec.normalizer(text)
        except ValueError as exc:
            raise ValueProblem(str(exc)) from None  # normaliser messages describe the rule, not the input
    if spec.pattern and not re.fullmatch(spec.pattern, text):
        raise ValueProblem("Expected digits only (a CEP or its prefix).")
    if spec.name == "zip" and op != "starts_with" and len(text) not in (5, 8):
        raise ValueProblem("A CEP has 8 digits (or is a 5-digit prefix); use `starts_with` for others.")
    if spec.choices and text not in spec.choices:
        raise ValueProblem(f"Use one of: {', '.join(spec.choices)}.")
    return text


# -- parsing and errors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleError:
    """One problem of a rule: where (`path`, e.g. `rule.all[2].value`, and `loc`) and what."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def path(self) -> str:
        return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in self.loc).lstrip(".")

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "loc": [str(p) for p in self.loc], "msg": self.msg, "type": self.type}


class InvalidRule(Invalid):
    """A rule that does not parse (422). `errors` lists every problem found, each with its path."""

    def __init__(self, errors: list[RuleError]) -> None:
        first = errors[0]
        super().__init__(
            f"The rule is not valid at `{first.path}`: {first.msg}",
            extra={"errors": [e.as_dict() for e in errors]},
        )
        self.errors = errors


def parse_rule(raw: Any, *, root: str = "rule") -> Rule:
    """A rule from its JSON form, or InvalidRule naming the path (from `root`) of each offending part."""
    problems = list(_size_problems(raw, (root,)))
    if problems:
        raise InvalidRule(problems)
    try:
        return rule_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InvalidRule(
            [RuleError(_clean_loc(root, e["loc"], e["type"]), e["msg"], e["type"]) for e in exc.errors()]
        ) from None


def load_rule(stored: dict[str, Any]) -> Rule:
    """A rule stored by `dump_rule` (it was valid when saved)."""
    return parse_rule(stored)


def dump_rule(rule: Rule) -> dict[str, Any]:
    dumped: dict[str, Any] = rule_adapter.dump_python(rule, mode="json", by_alias=True, exclude_none=True)
    return dumped


def _size_problems(raw: Any, loc: tuple[str | int, ...]) -> Iterator[RuleError]:
    """Nesting deeper than MAX_DEPTH or more than MAX_CONDITIONS conditions (checked before validation:
    the SQL of a rule grows with it, and so does recursion)."""
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(raw, loc, 0)]
    conditions = 0
    while stack:
        node, where, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        group = next((key for key in GROUPS if key in node), None)
        if group is None:
            conditions += 1
            if conditions > MAX_CONDITIONS:
                yield RuleError(where, f"A rule has at most {MAX_CONDITIONS} conditions.", "rule_size")
                return
            continue
        if depth >= MAX_DEPTH:
            yield RuleError(where, f"Groups nest at most {MAX_DEPTH} deep.", "rule_size")
            return
        children = node[group]
        if group == "not":
            stack.append((children, (*where, "not"), depth + 1))
        elif isinstance(children, list):
            stack.extend((child, (*where, group, n), depth + 1) for n, child in enumerate(children))


def _clean_loc(root: str, loc: tuple[str | int, ...], error_type: str) -> tuple[str | int, ...]:
    """A pydantic error location without the union tag it inserts after every rule position
    (`all, all, 2, condition, value` → `rule, all, 2, value`); an unknown key's name is not repeated."""
    out: list[str | int] = [root]
    at_rule = True  # the root is a rule position
    for part in loc:
        if at_rule and part in _TAG_NAMES:
            at_rule = False
            continue
        out.append(part)
        # The next part is a rule position after `not` and after an index into `all` / `any`.
        at_rule = part == "not" or (isinstance(part, int) and out[-2] in ("all", "any"))
    if error_type == "extra_forbidden":
        out[-1] = safe_loc(out, error_type)[-1]
    return tuple(out)


# -- what a rule reads -------------------------------------------------------------------------------

NOW = "now"  # in `depends_on`: the answer may change with time alone


def conditions(rule: Rule) -> Iterator[Condition]:
    if isinstance(rule, Condition):
        yield rule
    elif isinstance(rule, AllOf):
        for child in rule.all:
            yield from conditions(child)
    elif isinstance(rule, AnyOf):
        for child in rule.any:
            yield from conditions(child)
    else:
        yield from conditions(rule.not_)


def depends_on(rule: Rule) -> frozenset[str]:
    """What the rule reads: `profile_projection` columns and `profile_tag` kinds, plus NOW if its answer
    can change with time alone."""
    found: set[str] = set()
    for condition in conditions(rule):
        spec = FIELDS[condition.field]
        found.update(spec.storage)
        if condition.op in RELATIVE_OPS or spec.derived == "age":
            found.add(NOW)
    return frozenset(found)


def utc_today(now: datetime) -> date:
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    return now.astimezone(UTC).date()
