"""A scan of whole service databases for a person's data: in clear, inside sealed values (opened with
every tenant's key), and as the blind indexes of their identifiers. Used by the erasure tests: before the
erasure the scan must find the person (so it is not vacuous), afterwards nothing."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from uuid import UUID

import orjson
import sqlalchemy as sa

from shared.crypto import BINARY, SecretError, keyring

_TOKEN = re.compile(r"[0-9a-f]{8}\.[A-Za-z0-9_-]{16,}")


@dataclass(frozen=True)
class Hit:
    database: str
    table: str
    column: str
    needle: str

    def __str__(self) -> str:
        masked = self.needle[:2] + "*" * max(len(self.needle) - 4, 1) + self.needle[-2:]
        return f"{self.database}.{self.table}.{self.column} holds {masked}"


def _texts(value: object, tenants: Iterable[UUID] = ()) -> Iterator[str]:
    if value is None:
        return
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        yield data.decode("utf-8", "replace")
        if data[:1] == BINARY:  # sealed as bytes (`Keyring.seal_bytes`): opened with the tenant's key
            for tenant in tenants:
                try:
                    yield keyring().open_bytes(tenant, data).decode("utf-8", "replace")
                except (SecretError, ValueError):
                    continue
                break
    elif isinstance(value, dict | list):
        yield orjson.dumps(value).decode()
    else:
        yield str(value)


def _opened(text: str, tenants: Iterable[UUID]) -> Iterator[str]:
    """The clear text of every sealed token in `text` that opens for one of the tenants."""
    keys = keyring()
    for token in _TOKEN.findall(text):
        for tenant in tenants:
            try:
                clear = keys.open(tenant, token)
            except (SecretError, ValueError):
                continue
            yield clear
            yield from _opened(clear, tenants)
            break


def scan(
    urls: dict[str, str], needles: Iterable[str], tenants: Iterable[UUID], *, sealed: bool = True
) -> list[Hit]:
    """Every place in these databases (name -> SQLAlchemy URL) that holds one of the needles (compared
    case-insensitively; digit-only needles also against the digits of each value), in clear or, with
    `sealed`, inside a sealed value."""
    wanted = [n for n in needles if n]
    opening = list(tenants) if sealed else []  # the tenants whose keys open sealed values
    hits: list[Hit] = []
    for name, url in urls.items():
        engine = sa.create_engine(url)
        try:
            metadata = sa.MetaData()
            metadata.reflect(engine)
            with engine.connect() as conn:
                for table in metadata.sorted_tables:
                    if table.name == "alembic_version":
                        continue
                    for row in conn.execute(sa.select(table)):
                        for column, value in zip(table.columns.keys(), row, strict=True):
                            for text in _texts(value, opening):
                                hits += _match(name, table.name, column, text, wanted, opening)
        finally:
            engine.dispose()
    return hits


def _match(
    database: str, table: str, column: str, text: str, needles: list[str], tenants: list[UUID]
) -> list[Hit]:
    found: list[Hit] = []
    candidates = [text, *_opened(text, tenants)]
    for candidate in candidates:
        lowered = candidate.lower()
        digits = re.sub(r"\D", "", candidate)
        for needle in needles:
            hit = needle.lower() in lowered or (needle.isdigit() and len(needle) >= 8 and needle in digits)
            if hit:
                found.append(Hit(database, table, column, needle))
    return found
