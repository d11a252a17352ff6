"""What every marketplace adapter needs: reading a platform's JSON with field paths for errors, exact money,
timestamps, optional personal fields that are dropped (not rejected) when the platform sends a bad value,
and building the canonical `Order`.

Money: strings and integers are read as they are and floats through `Decimal(str(x))` (the shortest repr,
so `129.9` is `129.90`, never its binary expansion); integer cents are scaled by 10**-2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from shared import normalize
from shared.records import CENT, Order, OrderStatus, PaymentMethod

# A unix time above this is in milliseconds (as seconds it would be after the year 5000).
_MILLISECONDS_FROM = 100_000_000_000
# No marketplace order is older or newer than this: a number outside is not a timestamp (an id, a CPF).
_EARLIEST = datetime(1995, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_WORDS = re.compile(r"[a-z0-9]+")


class AdapterError(ValueError):
    """A platform payload that cannot be mapped to a canonical order.

    The message names the field path and the problem, never the value (it may be personal data).
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class Node:
    """A JSON object from a platform and its path in the payload (`order_items[0].item`).

    Every getter takes the documented alternative names of one field and uses the first that holds a
    value; `null` and blank strings count as absent.
    """

    def __init__(self, data: Any, path: str = "") -> None:
        if not isinstance(data, Mapping):
            raise AdapterError(path or "payload", "not a JSON object")
        self.data: Mapping[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _find(self, keys: tuple[str, ...]) -> tuple[str, Any]:
        for key in keys:
            value = self.data.get(key)
            if not _is_blank(value):
                return self.at(key), value
        return self.at(keys[0]), None

    def raw(self, *keys: str) -> Any:
        return self._find(keys)[1]

    def has(self, *keys: str) -> bool:
        return self.raw(*keys) is not None

    def obj(self, *keys: str) -> Node:
        """A nested object; an empty one when absent."""
        path, value = self._find(keys)
        return Node({} if value is None else value, path)

    def objs(self, *keys: str) -> list[Node]:
        """A list of objects; empty when absent."""
        path, value = self._find(keys)
        if value is None:
            return []
        if not isinstance(value, list):
            raise AdapterError(path, "not a list")
        return [Node(entry, f"{path}[{i}]") for i, entry in enumerate(value)]

    def strings(self, *keys: str) -> list[str]:
        """A list of strings (or one string); empty when absent."""
        path, value = self._find(keys)
        if value is None:
            return []
        values = value if isinstance(value, list) else [value]
        return [text for v in values if (text := as_text(v, path)) is not None]

    def text(self, *keys: str) -> str | None:
        path, value = self._find(keys)
        return as_text(value, path)

    def required_text(self, *keys: str) -> str:
        path, value = self._find(keys)
        text = as_text(value, path)
        if text is None:
            raise AdapterError(path, "missing")
        return text

    def amount(self, *keys: str, signed: bool = False) -> Decimal | None:
        path, value = self._find(keys)
        return None if value is None else to_amount(value, path, signed=signed)

    def required_amount(self, *keys: str) -> Decimal:
        path, value = self._find(keys)
        if value is None:
            raise AdapterError(path, "missing")
        return to_amount(value, path)

    def cents(self, *keys: str, signed: bool = False) -> Decimal | None:
        path, value = self._find(keys)
        return None if value is None else from_cents(value, path, signed=signed)

    def required_cents(self, *keys: str) -> Decimal:
        path, value = self._find(keys)
        if value is None:
            raise AdapterError(path, "missing")
        return from_cents(value, path)

    def time(self, *keys: str) -> datetime | None:
        path, value = self._find(keys)
        # Shopee and others send 0 for "not yet" (a pay time of an unpaid order).
        if value is None or value == 0:
            return None
        return to_datetime(value, path)

    def required_time(self, *keys: str) -> datetime:
        path, value = self._find(keys)
        if value is None:
            raise AdapterError(path, "missing")
        return to_datetime(value, path)

    def count(self, *keys: str) -> int | None:
        path, value = self._find(keys)
        return None if value is None else to_int(value, path)

    def flag(self, *keys: str) -> bool:
        value = self.raw(*keys)
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return value is True or (isinstance(value, int) and value == 1)


def as_text(value: Any, path: str) -> str | None:
    if _is_blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise AdapterError(path, "not a string")
    return str(value).strip()


def to_int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise AdapterError(path, "not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise AdapterError(path, "not an integer")


def to_decimal(value: Any, path: str) -> Decimal:
    """An exact decimal from a JSON number or numeric string; a float goes through its shortest repr."""
    if isinstance(value, bool):
        raise AdapterError(path, "not an amount")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(str(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise AdapterError(path, "not an amount") from None
    else:
        raise AdapterError(path, "not an amount")
    if not number.is_finite():
        raise AdapterError(path, "not a finite amount")
    return number


def _checked(number: Decimal, path: str, *, signed: bool) -> Decimal:
    if number < 0 and not signed:
        raise AdapterError(path, "negative amount")
    if number != number.quantize(CENT):
        raise AdapterError(path, "more than two decimal places")
    return number.quantize(CENT)


def to_amount(value: Any, path: str, *, signed: bool = False) -> Decimal:
    """A money amount in currency units (`"129.90"`, `129.9`, `130`)."""
    return _checked(to_decimal(value, path), path, signed=signed)


def from_cents(value: Any, path: str, *, signed: bool = False) -> Decimal:
    """A money amount in integer cents (`12990` → `129.90`)."""
    number = to_decimal(value, path)
    if number != number.to_integral_value():
        raise AdapterError(path, "not a whole number of cents")
    return _checked(number.scaleb(-2), path, signed=signed)


def to_datetime(value: Any, path: str) -> datetime:
    """A unix time (seconds, or milliseconds when that large) or an ISO 8601 string. A string without a
    zone stays naive: the canonical model reads it as Brazil's time."""
    if isinstance(value, bool):
        raise AdapterError(path, "not a timestamp")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float):
        seconds = value / 1000 if value >= _MILLISECONDS_FROM else value
        if seconds <= 0:
            raise AdapterError(path, "not a timestamp")
        try:
            moment = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise AdapterError(path, "timestamp out of range") from None
        if not _EARLIEST <= moment < _LATEST:
            raise AdapterError(path, "timestamp out of range")
        return moment
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise AdapterError(path, "not an ISO 8601 timestamp") from None
    raise AdapterError(path, "not a timestamp")


def status_of(table: Mapping[str, OrderStatus], value: str | None, path: str) -> OrderStatus:
    """Maps a platform status (case-insensitive). An unknown one is an error that does not quote it: a
    field can hold anything, personal data included."""
    if value is None:
        raise AdapterError(path, "missing")
    status = table.get(value.strip().lower())
    if status is None:
        raise AdapterError(path, "unknown status")
    return status


# --- Optional personal fields: a value the shared normalisers refuse is dropped, never the whole order.


def _kept(value: Any, normaliser: Callable[[str], str], max_length: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    # Platforms mask what the seller may not see (Shopee's `******5678`, `m****a`): not data at all.
    if not text or "*" in text:
        return None
    try:
        kept = normaliser(text)
    except ValueError:
        return None
    return kept if len(kept) <= max_length else None


def email(value: Any) -> str | None:
    return _kept(value, normalize.normalize_email, 254)


def phone(value: Any) -> str | None:
    return _kept(value, normalize.normalize_phone, 40)


def document(value: Any) -> str | None:
    return _kept(value, lambda v: normalize.normalize_document(v)[1], 40)


def first_email(*values: Any) -> str | None:
    return next((e for v in values if (e := email(v)) is not None), None)


def first_document(*values: Any) -> str | None:
    return next((doc for v in values if (doc := document(v)) is not None), None)


def first_phone(*values: Any) -> str | None:
    return next((p for v in values if (p := phone(v)) is not None), None)


def person_name(*parts: Any) -> str | None:
    """A name from its parts (`first_name`, `last_name`), or None when blank, masked or too long."""
    texts = [str(p).strip() for p in parts if isinstance(p, str) and p.strip()]
    return _kept(" ".join(texts), normalize.normalize_name, 200) if texts else None


def birth_date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return normalize.check_birth_date(date.fromisoformat(value.strip()[:10]))
    except ValueError:
        return None


def _bounded_text(value: Any, max_length: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if text and "*" not in text and len(text) <= max_length else None


def address(
    *,
    street: Any = None,
    number: Any = None,
    complement: Any = None,
    district: Any = None,
    city: Any = None,
    state: Any = None,
    zip_code: Any = None,
    country: Any = None,
) -> dict[str, str] | None:
    """The canonical address fields that are valid; None when nothing but the country is left."""
    fields = {
        "street": _bounded_text(street, 300),
        "number": _bounded_text(number, 30),
        "complement": _bounded_text(complement, 200),
        "district": _bounded_text(district, 200),
        "city": _kept(city, normalize.normalize_city, 200),
        "state": _kept(state, normalize.normalize_state, 40),
        "zip": _kept(zip_code, normalize.normalize_zip, 20),
    }
    kept = {k: v for k, v in fields.items() if v is not None}
    if not kept:
        return None
    country_code = _kept(country, normalize.normalize_country, 60)
    if country_code is not None:
        kept["country"] = country_code
    return kept


def customer(
    *,
    external_id: str | None,
    name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    document: str | None = None,
    birth_date: date | None = None,
    address: dict[str, str] | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "external_id": external_id,
        "name": name,
        "email": email,
        "phone": phone,
        "document": document,
        "birth_date": birth_date,
        "address": address,
    }
    return {k: v for k, v in fields.items() if v is not None}


def identified(
    fields: dict[str, Any], path: str, problem: str = "missing: no buyer identifier"
) -> dict[str, Any]:
    """The customer fields, or an error at `path` when none of them identifies the buyer."""
    if not any(fields.get(k) for k in ("external_id", "email", "phone", "document")):
        raise AdapterError(path, problem)
    return fields


# --- Items and payments


def clipped(value: str | None, max_length: int) -> str | None:
    """Non-personal display text (a product title, a coupon code) cut to the canonical length."""
    return value[:max_length] if value else None


def item(
    *, sku: str, name: str | None, category: str | None, quantity: int, unit_price: Decimal
) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": clipped(name, 500),
        "category": clipped(category, 200),
        "quantity": quantity,
        "unit_price": unit_price,
    }


def unit_price(line_total: Decimal, quantity: int) -> Decimal:
    """A unit price from a line total (rounded to cents when the platform's total does not divide)."""
    return (line_total / quantity).quantize(CENT)


def payment(method: PaymentMethod, amount: Decimal, installments: int | None = None) -> dict[str, Any]:
    # Some platforms send 0 installments for a one-off payment (pix, boleto).
    return {"method": method, "amount": amount, "installments": max(installments or 1, 1)}


# Words that give a payment method away, for platforms that only send a display name
# (`Cartão de Crédito`, `Boleto Bancário`, `ShopeePay`). Checked in order: gift cards and debit cards
# before the words that mean any card.
_METHOD_WORDS: tuple[tuple[frozenset[str], PaymentMethod], ...] = (
    (frozenset({"pix"}), PaymentMethod.pix),
    (frozenset({"boleto", "bolbradesco", "bankinvoice", "ticket"}), PaymentMethod.boleto),
    (
        frozenset({"gift", "giftcard", "giftcertificate", "presente", "vale", "voucher", "cupom"}),
        PaymentMethod.voucher,
    ),
    (frozenset({"debit", "debito", "debitcard", "maestro"}), PaymentMethod.debit_card),
    (
        frozenset({"credit", "credito", "creditcard", "cartao", "card", "visa", "mastercard", "amex"}),
        PaymentMethod.credit_card,
    ),
    (
        frozenset({"wallet", "carteira", "shopeepay", "paypal", "picpay", "magalupay", "saldo"}),
        PaymentMethod.wallet,
    ),
    (frozenset({"transfer", "transferencia", "deposit", "deposito", "ted"}), PaymentMethod.bank_transfer),
    (frozenset({"cash", "dinheiro", "cod", "cashondelivery"}), PaymentMethod.cash),
)


def method_from_words(*names: str | None) -> PaymentMethod:
    """The payment method a platform's display name suggests; `other` when nothing does."""
    for name in names:
        if not name:
            continue
        words = set(_WORDS.findall(normalize.fold(name)))
        for keys, method in _METHOD_WORDS:
            if words & keys:
                return method
    return PaymentMethod.other


def total_of(values: Iterable[Decimal | None]) -> Decimal:
    return sum((v for v in values if v is not None), Decimal("0.00"))


# --- The canonical order


def build_order(data: dict[str, Any]) -> Order:
    """`Order.model_validate`, so every canonical rule applies; a refusal becomes an AdapterError that
    names the canonical fields (pydantic's own message would repeat the input values)."""
    try:
        return Order.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        errors = [
            (".".join(str(part) for part in e["loc"]) or "order", e["msg"])
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        paths = ", ".join(dict.fromkeys(loc for loc, _ in errors))
        if len(errors) == 1:
            problem = f"refused by the canonical model: {errors[0][1]}"
        else:
            problem = "refused by the canonical model: " + "; ".join(f"{loc}: {msg}" for loc, msg in errors)
        raise AdapterError(paths, problem) from None
