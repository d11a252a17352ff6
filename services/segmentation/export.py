"""A segment's members as a file (`GET /v1/segments/{id}/export`): CSV or JSON Lines, streamed.

Each row is a member: its profile id, when it entered, and its segmentable traits as this service knows
them (the projection: purchases, demographics, location, RFM and predictions, behaviour times, the
sources, categories and products bought, and the latest decision per consent purpose). There is no
contact data in segmentation: join on `profile_id` with the profile service for that.

By default a segment with a `purpose` exports only the members whose latest decision for that purpose is
`granted` (`consent=granted`); `consent=all` exports every member, which the caller then must not contact
for that purpose without another legal basis. A segment without a purpose exports every member.

Rows are read a chunk at a time (keyset on the profile id, each chunk in its own short transaction), so
memory stays flat and no transaction stays open while a slow client reads. A member who enters or leaves
during the export may or may not be in it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.segmentation.models import ProfileProjection, ProfileTag, Segment, SegmentMember, TagKind
from services.segmentation.rules import CONSENT_TAGS
from shared.audit import audit
from shared.records import ConsentPurpose, from_minor

Format = Literal["csv", "jsonl"]
ConsentFilter = Literal["granted", "all"]
CHUNK = 1000
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}

_MONEY = {
    "total_spent": "total_spent_minor",
    "average_order_value": "average_order_value_minor",
    "clv_12m": "clv_12m_minor",
}
_SCALARS = (
    "orders_count",
    "total_spent",
    "average_order_value",
    "first_order_at",
    "last_order_at",
    "preferred_payment_method",
    "birth_date",
    "gender",
    "city",
    "state",
    "zip",
    "rfm_group",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "clv_12m",
    "churn_probability",
    "next_order_at",
    "last_seen_at",
    "cart_abandoned_at",
)
_SETS = {
    "sources": TagKind.source,
    "bought_categories": TagKind.bought_category,
    "bought_products": TagKind.bought_product,
}
_STATUS_OF_KIND = {str(kind): str(status) for status, kind in CONSENT_TAGS.items()}
PURPOSES = tuple(str(p) for p in ConsentPurpose)
CSV_COLUMNS = (
    "profile_id",
    "entered_at",
    *_SCALARS,
    *_SETS,
    *(f"consent_{purpose}" for purpose in PURPOSES),
)


def rows(
    engine: Engine, segment: Segment, *, purpose: str | None, reader: dict[str, Any], chunk: int = CHUNK
) -> Iterator[dict[str, Any]]:
    """The members to export, in profile id order: only those with `purpose` granted when it is given.
    Each chunk read is recorded in the audit trail (`reader`: `shared.audit.reader` of the request)."""
    after: UUID | None = None
    while True:
        with Session(engine, expire_on_commit=False) as session:  # the rows are read after the commit
            found = _chunk(session, segment.id, purpose=purpose, after=after, size=chunk)
            if not found:
                return
            ids = [member.profile_id for member, _ in found]
            tags = _tags(session, ids)
            audit(session, tenant_id=segment.tenant_id, action="segment.export", profile_ids=ids, **reader)
            session.commit()
        for member, projection in found:
            yield row(member, projection, tags.get(member.profile_id, {}))
        after = found[-1][0].profile_id


def _chunk(
    session: Session, segment_id: UUID, *, purpose: str | None, after: UUID | None, size: int
) -> Sequence[tuple[SegmentMember, ProfileProjection]]:
    query = (
        select(SegmentMember, ProfileProjection)
        .join(ProfileProjection, col(ProfileProjection.profile_id) == col(SegmentMember.profile_id))
        .where(SegmentMember.segment_id == segment_id)
        .order_by(col(SegmentMember.profile_id))
        .limit(size)
    )
    if after is not None:
        query = query.where(col(SegmentMember.profile_id) > after)
    if purpose is not None:
        query = query.where(
            sa.exists().where(
                col(ProfileTag.profile_id) == col(SegmentMember.profile_id),
                col(ProfileTag.kind) == TagKind.consent_granted,
                col(ProfileTag.value) == purpose,
            )
        )
    return session.exec(query).all()


def _tags(session: Session, profile_ids: list[UUID]) -> dict[UUID, dict[str, list[str]]]:
    kinds = [*_SETS.values(), *CONSENT_TAGS.values()]
    found: dict[UUID, dict[str, list[str]]] = {}
    query = (
        select(ProfileTag.profile_id, ProfileTag.kind, ProfileTag.value)
        .where(col(ProfileTag.profile_id).in_(profile_ids), col(ProfileTag.kind).in_(kinds))
        .order_by(col(ProfileTag.value))
    )
    for profile_id, kind, value in session.exec(query):
        found.setdefault(profile_id, {}).setdefault(kind, []).append(value)
    return found


def row(member: SegmentMember, projection: ProfileProjection, tags: dict[str, list[str]]) -> dict[str, Any]:
    """One member as an export row (JSON types: money as decimal strings)."""
    out: dict[str, Any] = {"profile_id": member.profile_id, "entered_at": member.entered_at}
    for name in _SCALARS:
        if name in _MONEY:
            minor = getattr(projection, _MONEY[name])
            out[name] = None if minor is None else str(from_minor(minor))
        else:
            out[name] = getattr(projection, name)
    for name, kind in _SETS.items():
        out[name] = tags.get(kind, [])
    out["consents"] = {
        purpose: status for kind, status in _STATUS_OF_KIND.items() for purpose in tags.get(kind, [])
    }
    return out


# -- formats ---------------------------------------------------------------------------------------------


def jsonl(members: Iterator[dict[str, Any]], batch: int = 200) -> Iterator[bytes]:
    """One JSON object per line."""
    lines: list[bytes] = []
    for member in members:
        lines.append(orjson.dumps(member, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE))
        if len(lines) >= batch:
            yield b"".join(lines)
            lines = []
    if lines:
        yield b"".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        value = "|".join(value)
    text = str(value)
    # A cell a spreadsheet would run as a formula (a city or category named "=HYPERLINK(...)") is
    # quoted as text: the OWASP advice against CSV injection.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(members: Iterator[dict[str, Any]], batch: int = 200) -> Iterator[bytes]:
    """A header row, then a row per member: lists joined with `|`, a `consent_<purpose>` column each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for written, member in enumerate(members, 1):
        consents = member["consents"]
        writer.writerow(
            [
                *(_cell(member[name]) for name in CSV_COLUMNS[: 2 + len(_SCALARS) + len(_SETS)]),
                *(consents.get(purpose, "") for purpose in PURPOSES),
            ]
        )
        if written % batch == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def stream(
    engine: Engine,
    segment: Segment,
    *,
    fmt: Format,
    purpose: str | None,
    reader: dict[str, Any],
    chunk: int = CHUNK,
) -> Iterator[bytes]:
    members = rows(engine, segment, purpose=purpose, reader=reader, chunk=chunk)
    return csv_lines(members) if fmt == "csv" else jsonl(members)
