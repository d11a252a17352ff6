"""Group commit: single records posted at the same time are stored in one transaction.

`POST /v1/orders` (and `/v1/customers`, `/v1/events`) without an `Idempotency-Key` hands its record to the
app's `GroupCommit`. A record is stored at once, alone, when nothing of its tenant and kind is being stored
(no added wait); records of that tenant and kind arriving meanwhile wait for that transaction and are then
stored together with one `intake.accept` (one transaction, one `COPY`, one outbox insert), up to
`max_group` at a time. Under load a request then costs a share of a batch instead of a transaction of its
own, and the records of one tenant and kind are stored in the order they arrived.

Each request still gets its own result after the commit that made its record durable: accepted means
durable, as everywhere. If storing a group fails, each of its records is tried again on its own, so a
record that breaks something fails only its own request. Requests with an `Idempotency-Key` take the
per-request path (their stored answer belongs to their own transaction).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.ingest import intake
from services.ingest.intake import ItemResult, Kind
from shared.metrics import INGEST_GROUP_SIZE


@dataclass
class _Waiting:
    item: Any  # the request's parsed JSON
    correlation_id: str | None
    result: asyncio.Future[ItemResult]


class GroupCommit:
    """See the module docstring. Used from one event loop (the app's)."""

    def __init__(self, engine: Engine, *, max_group: int = 1000) -> None:
        self.engine = engine
        self.max_group = max_group
        self._waiting: dict[tuple[str, UUID], list[_Waiting]] = {}
        self._draining: dict[tuple[str, UUID], asyncio.Task[None]] = {}

    async def accept(
        self, kind: Kind[Any], tenant_id: UUID, item: Any, correlation_id: str | None
    ) -> ItemResult:
        """Store one record (validated by `intake.accept`) with whatever else of its tenant and kind is
        waiting; its result once committed."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(item, correlation_id, loop.create_future())
        slot = (kind.name, tenant_id)
        self._waiting.setdefault(slot, []).append(waiting)
        if slot not in self._draining:
            self._draining[slot] = loop.create_task(self._drain(kind, tenant_id, slot))
        return await asyncio.shield(waiting.result)  # a client that goes away does not cancel the group

    async def _drain(self, kind: Kind[Any], tenant_id: UUID, slot: tuple[str, UUID]) -> None:
        try:
            while queue := self._waiting.get(slot):
                group = queue[: self.max_group]
                del queue[: len(group)]
                await self._store(kind, tenant_id, group)
        finally:
            del self._draining[slot]
            if not self._waiting.get(slot):
                self._waiting.pop(slot, None)

    async def _store(self, kind: Kind[Any], tenant_id: UUID, group: list[_Waiting]) -> None:
        INGEST_GROUP_SIZE.observe(len(group))
        try:
            results = await run_in_threadpool(
                self._accept, kind, tenant_id, [w.item for w in group], [w.correlation_id for w in group]
            )
        except Exception as exc:
            if len(group) == 1:
                group[0].result.set_exception(exc)
                return
            for waiting in group:  # one at a time: only what fails on its own fails
                await self._store(kind, tenant_id, [waiting])
            return
        for waiting, result in zip(group, results, strict=True):
            waiting.result.set_result(dataclasses.replace(result, index=0))

    def _accept(
        self, kind: Kind[Any], tenant_id: UUID, items: list[Any], correlation_ids: list[str | None]
    ) -> list[ItemResult]:
        with Session(self.engine) as session:
            return intake.accept(
                kind, items, tenant_id=tenant_id, session=session, correlation_id=correlation_ids
            )
