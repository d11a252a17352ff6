"""A segment's membership history (`segment_membership_event`, written by `segments.announce`) and the
statistics computed from it: entries and exits over the last days, and the size at the end of each day.

Sizes over time are not snapshotted: the size at the end of a day is today's size minus what entered
after that day plus what left after it. That is exact as long as the history is complete, which it is
from the segment's creation (segments older than the history table start with an `entered` row per
member at the upgrade, so their earlier exits are unknown). Days are UTC days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlmodel import Session, col, select

from services.segmentation import evaluations, segments
from services.segmentation.models import (
    MembershipChange,
    ProfileTag,
    SegmentEvaluation,
    SegmentMember,
    SegmentMembershipEvent,
    TagKind,
)
from shared.errors import Invalid

WINDOWS = (1, 7, 30)
MAX_DAYS = 366


@dataclass(frozen=True)
class DaySize:
    day: date
    size: int  # at the end of the day (now, for today)
    entered: int
    exited: int


@dataclass(frozen=True)
class Window:
    days: int
    entered: int
    exited: int


@dataclass(frozen=True)
class Stats:
    size: int
    purpose: str | None
    reachable: int | None
    windows: list[Window]
    daily: list[DaySize]
    history_since: datetime | None
    last_evaluation: SegmentEvaluation | None


def sizes_by_day(
    size_now: int, today: date, days: int, changes: Mapping[date, tuple[int, int]]
) -> list[DaySize]:
    """The size at the end of each of the last `days` days (oldest first, today last), walking back from
    today's size with each day's (entered, exited). A day with more exits than the history can explain
    (members older than the history) is shown as 0, never below."""
    found: list[DaySize] = []
    size = size_now
    for offset in range(days):
        day = today - timedelta(days=offset)
        entered, exited = changes.get(day, (0, 0))
        found.append(DaySize(day, max(size, 0), entered, exited))
        size = size - entered + exited
    return found[::-1]


def _day(session: Session, at: Any) -> Any:
    """The UTC date of a stored timestamp, in SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.date(sa.func.timezone("UTC", at))
    return sa.func.date(at)  # SQLite keeps UTC timestamps as text


def _as_date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def daily_changes(
    session: Session, segment_id: UUID, *, since: datetime, today: date
) -> dict[date, tuple[int, int]]:
    """(entered, exited) per UTC day from `since`; later days (a clock ahead) count as today."""
    event = SegmentMembershipEvent
    day = _day(session, col(event.at)).label("day")
    rows = session.execute(
        sa.select(day, col(event.change), sa.func.count())
        .where(col(event.segment_id) == segment_id, col(event.at) >= since)
        .group_by(day, col(event.change))
    ).all()
    found: dict[date, tuple[int, int]] = {}
    for raw_day, change, count in rows:
        when = min(_as_date(raw_day), today)
        entered, exited = found.get(when, (0, 0))
        if change == MembershipChange.entered:
            entered += int(count)
        else:
            exited += int(count)
        found[when] = (entered, exited)
    return found


def windows(
    session: Session, segment_id: UUID, *, now: datetime, spans: Iterable[int] = WINDOWS
) -> list[Window]:
    """Entries and exits over each of the last `spans` days (rolling: now minus n days until now)."""
    spans = sorted(spans)
    event = SegmentMembershipEvent

    def counted(days: int, change: MembershipChange) -> Any:
        inside = sa.and_(col(event.at) >= now - timedelta(days=days), col(event.change) == change)
        return sa.func.coalesce(sa.func.sum(sa.case((inside, 1), else_=0)), 0)

    columns = [counted(days, change) for days in spans for change in MembershipChange]
    row = session.execute(
        sa.select(*columns).where(
            col(event.segment_id) == segment_id, col(event.at) >= now - timedelta(days=spans[-1])
        )
    ).one()
    values = [int(v) for v in row]
    return [Window(days, values[2 * i], values[2 * i + 1]) for i, days in enumerate(spans)]


def reachable(session: Session, segment_id: UUID, purpose: str) -> int:
    """Members whose latest decision for the purpose is `granted` (whom an export includes by default)."""
    granted = (
        sa.exists()
        .where(
            col(ProfileTag.profile_id) == col(SegmentMember.profile_id),
            col(ProfileTag.kind) == TagKind.consent_granted,
            col(ProfileTag.value) == purpose,
        )
        .correlate(SegmentMember)
    )
    query = sa.select(sa.func.count()).where(col(SegmentMember.segment_id) == segment_id, granted)
    return int(session.execute(query).scalar_one())


def stats(segment_id: UUID, *, tenant_id: UUID, session: Session, days: int, now: datetime) -> Stats:
    if not 1 <= days <= MAX_DAYS:
        raise Invalid(f"`days` is 1 to {MAX_DAYS}.")
    segment = segments.get_segment(segment_id, tenant_id=tenant_id, session=session)
    size = segments.segment_size(segment.id, session=session)
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=days - 1)
    since = datetime.combine(first_day, time(), tzinfo=UTC)
    changes = daily_changes(session, segment.id, since=since, today=today)
    started = session.execute(
        sa.select(sa.func.min(col(SegmentMembershipEvent.at))).where(
            col(SegmentMembershipEvent.segment_id) == segment.id
        )
    ).scalar_one()
    return Stats(
        size=size,
        purpose=segment.purpose,
        reachable=reachable(session, segment.id, segment.purpose) if segment.purpose else None,
        windows=windows(session, segment.id, now=now),
        daily=sizes_by_day(size, today, days, changes),
        history_since=started,
        last_evaluation=evaluations.latest(session, segment.id, finished=True),
    )


def list_history(
    segment_id: UUID,
    *,
    tenant_id: UUID,
    session: Session,
    profile_id: UUID | None,
    after: int | None,
    limit: int,
) -> list[SegmentMembershipEvent]:
    """The segment's entries and exits, newest first (keyset on at, id), optionally of one profile."""
    segments.get_segment(segment_id, tenant_id=tenant_id, session=session)
    event = SegmentMembershipEvent
    query = select(event).where(event.segment_id == segment_id)
    if profile_id is not None:
        query = query.where(event.profile_id == profile_id)
    if after is not None:
        cursor = session.get(event, after)
        if cursor is None or cursor.segment_id != segment_id:
            raise Invalid("`cursor` is not an entry of this segment's history.")
        query = query.where(
            sa.or_(
                col(event.at) < cursor.at,
                sa.and_(col(event.at) == cursor.at, col(event.id) < after),
            )
        )
    query = query.order_by(col(event.at).desc(), col(event.id).desc()).limit(limit)
    return list(session.exec(query).all())
