"""Bulk imports: files uploaded once, processed in the background through the same intake as the API.

Uploads are copied in chunks to `<import dir>/<job id>/` (constant memory). The `ImportWorker` thread
claims pending jobs, reads rows one at a time, sends them to `intake.accept` in batches, and records the
progress after every batch. A job whose worker died (no heartbeat for a minute) is taken over and resumes
after the last recorded row; rows processed twice are deduplicated by the intake.

The rejected-rows report (`rejected.jsonl`) holds row numbers and reasons only, never row content.

Personal data on disk: the uploaded files are the rows in clear (names, e-mails, documents, addresses),
needed only until the job ends, so they are deleted as soon as it is done or failed (a job stopped by a
shutdown keeps them: it resumes). What is left, the report, holds no personal data; it goes with the job
itself `RETENTION` (30 days) after the job ended: the worker deletes the folder and the `import_job` row
(`purge_finished`, at most once an hour). The records themselves are stored sealed (`intake`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from uuid import UUID, uuid4

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from services.ingest import importers, intake
from services.ingest.models import ImportJob
from shared.db import utcnow
from shared.errors import Invalid, NotFound

log = logging.getLogger("clientela.imports")

KINDS: dict[str, intake.Kind[Any]] = {
    "orders": intake.ORDERS,
    "customers": intake.CUSTOMERS,
    "events": intake.BEHAVIOUR,
}
FORMATS = ("csv", "jsonl", "olist")
BATCH = 500
STALE_AFTER = timedelta(seconds=60)
REPORT = "rejected.jsonl"
UPLOAD_SUFFIX = ".upload"
RETENTION = timedelta(days=30)
PURGE_EVERY = timedelta(hours=1)


def job_dir(import_dir: Path, job_id: UUID) -> Path:
    return import_dir / str(job_id)


def create_job(
    *,
    tenant_id: UUID,
    kind: str,
    fmt: str,
    uploads: Sequence[tuple[str, IO[bytes]]],
    import_dir: Path,
    session: Session,
) -> ImportJob:
    """Store the uploaded files and queue the job. `uploads` are (file name, binary stream) pairs."""
    if fmt not in FORMATS:
        raise Invalid(f"`format` must be one of {', '.join(FORMATS)}.")
    if kind not in KINDS:
        raise Invalid(f"`kind` must be one of {', '.join(KINDS)}.")
    if fmt == "olist" and kind != "orders":
        raise Invalid("The Olist format imports orders.")
    roles = _roles(fmt, [name for name, _ in uploads])
    job_id = uuid4()
    target = job_dir(import_dir, job_id)
    target.mkdir(parents=True, exist_ok=False)
    files: dict[str, str] = {}
    for (_name, stream), role in zip(uploads, roles, strict=True):
        stored = f"{role}{UPLOAD_SUFFIX}"
        with (target / stored).open("wb") as out:
            shutil.copyfileobj(stream, out, length=1 << 20)
        files[role] = stored
    job = ImportJob(id=job_id, tenant_id=tenant_id, kind=KINDS[kind].name, format=fmt, files=files)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def _roles(fmt: str, names: list[str]) -> list[str]:
    if not names:
        raise Invalid("Attach the file(s) to import as `files`.")
    if fmt != "olist":
        if len(names) != 1:
            raise Invalid(f"A {fmt} import takes exactly one file.")
        return ["data"]
    roles = [importers.olist_role(name) for name in names]
    if None in roles:
        raise Invalid(
            "Olist files must keep their published names (olist_orders_dataset.csv[.gz], ...); "
            f"expected: {', '.join(importers.OLIST_FILES.values())}."
        )
    missing = [r for r in importers.OLIST_REQUIRED if r not in roles]
    if missing:
        raise Invalid(f"Missing Olist tables: {', '.join(missing)}.")
    return [r for r in roles if r is not None]


def get_job(job_id: UUID, *, tenant_id: UUID, session: Session) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("No import with this id.")
    return job


def report_path(job: ImportJob, import_dir: Path) -> Path:
    return job_dir(import_dir, job.id) / REPORT


def drop_uploads(import_dir: Path, job_id: UUID) -> None:
    """Delete a job's uploaded files (the rows in clear): once it has ended they are of no use."""
    folder = job_dir(import_dir, job_id)
    if folder.is_dir():
        for path in folder.glob(f"*{UPLOAD_SUFFIX}"):
            path.unlink(missing_ok=True)


def purge_finished(*, import_dir: Path, session: Session, before: datetime) -> int:
    """Delete the jobs that ended before `before`, with their folders (the report); return how many."""
    ended = session.exec(
        select(ImportJob.id).where(
            col(ImportJob.status).in_(["done", "failed"]), col(ImportJob.finished_at) < before
        )
    ).all()
    for job_id in ended:
        shutil.rmtree(job_dir(import_dir, job_id), ignore_errors=True)
    if ended:
        session.execute(sa.delete(ImportJob).where(col(ImportJob.id).in_(ended)))
        session.commit()
    return len(ended)


def _rows(job: ImportJob, folder: Path, workdir: Path) -> Iterator[importers.Row]:
    if job.format == "olist":
        files = {role: folder / name for role, name in job.files.items()}
        return importers.read_olist(files, workdir)
    data = folder / job.files["data"]
    return importers.read_jsonl(data) if job.format == "jsonl" else importers.read_csv(data)


class ImportWorker:
    """Processes import jobs, one at a time per worker."""

    def __init__(self, engine: Engine, import_dir: Path, *, poll_interval_s: float = 0.5) -> None:
        self.engine = engine
        self.import_dir = import_dir
        self.poll_interval_s = poll_interval_s
        self._purged_at: datetime | None = None

    def claim(self) -> UUID | None:
        now = utcnow()
        with Session(self.engine) as session:
            candidates = session.exec(
                select(ImportJob.id, ImportJob.status, ImportJob.heartbeat_at)
                .where(col(ImportJob.status).in_(["pending", "running"]))
                .order_by(col(ImportJob.created_at))
            ).all()
            for job_id, status, heartbeat in candidates:
                if status == "running" and heartbeat is not None and heartbeat > now - STALE_AFTER:
                    continue  # another worker is on it
                claimed = session.execute(
                    sa.update(ImportJob)
                    .where(col(ImportJob.id) == job_id, col(ImportJob.status) == status)
                    .where(
                        col(ImportJob.heartbeat_at).is_(None)
                        if heartbeat is None
                        else col(ImportJob.heartbeat_at) == heartbeat
                    )
                    .values(
                        status="running",
                        heartbeat_at=now,
                        started_at=sa.func.coalesce(col(ImportJob.started_at), now),
                    )
                )
                session.commit()
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    return job_id
        return None

    def process(self, job_id: UUID, stop: threading.Event) -> None:
        with Session(self.engine) as session:
            job = session.get(ImportJob, job_id)
            assert job is not None
            folder = job_dir(self.import_dir, job.id)
            kind = next(k for k in KINDS.values() if k.name == job.kind)
            if job.rows_total is None and job.format != "olist":
                job.rows_total = importers.count_rows(folder / job.files["data"], header=job.format == "csv")
            elif job.rows_total is None:
                job.rows_total = importers.count_rows(folder / job.files["orders"], header=True)
            session.add(job)
            session.commit()
            done = job.rows_read
            batch: list[tuple[int, Any]] = []
            with (
                tempfile.TemporaryDirectory(prefix="clientela-import-") as workdir,
                (folder / REPORT).open("ab") as report,
            ):
                for number, row in _rows(job, folder, Path(workdir)):
                    if number <= done:
                        continue  # resumed: already processed
                    batch.append((number, row))
                    if len(batch) >= BATCH:
                        self._flush(session, job, kind, batch, report)
                        batch = []
                        if stop.is_set():
                            return  # resumed later from the recorded progress
                if batch:
                    self._flush(session, job, kind, batch, report)
            job.status = "done"
            job.finished_at = utcnow()
            session.add(job)
            session.commit()
            drop_uploads(self.import_dir, job.id)
            log.info("import finished", extra={"import_id": str(job.id), "rows": job.rows_read})

    def _flush(
        self,
        session: Session,
        job: ImportJob,
        kind: intake.Kind[Any],
        batch: list[tuple[int, Any]],
        report: IO[bytes],
    ) -> None:
        unreadable = [(n, row) for n, row in batch if isinstance(row, importers.RowError)]
        readable = [(n, row) for n, row in batch if not isinstance(row, importers.RowError)]
        results = intake.accept(kind, [row for _, row in readable], tenant_id=job.tenant_id, session=session)
        lines = [
            (n, orjson.dumps({"row": n, "errors": [{"loc": [], "msg": row.reason, "type": "unreadable"}]}))
            for n, row in unreadable
        ]
        counts = dict.fromkeys(intake.Outcome, 0)
        for (number, _), result in zip(readable, results, strict=True):
            counts[result.outcome] += 1
            if result.outcome == intake.Outcome.rejected:
                lines.append((number, orjson.dumps({"row": number, "errors": result.errors})))
            elif result.outcome == intake.Outcome.suppressed:
                erased = {"loc": [], "msg": "the person asked to be erased (LGPD)", "type": "suppressed"}
                lines.append((number, orjson.dumps({"row": number, "errors": [erased]})))
        if lines:
            report.write(b"\n".join(line for _, line in sorted(lines)) + b"\n")
            report.flush()
        job.rows_read = batch[-1][0]
        job.accepted += counts[intake.Outcome.accepted]
        job.updated += counts[intake.Outcome.updated]
        job.duplicates += counts[intake.Outcome.duplicate]
        job.stale += counts[intake.Outcome.stale]
        job.rejected += counts[intake.Outcome.rejected] + counts[intake.Outcome.suppressed] + len(unreadable)
        job.heartbeat_at = utcnow()
        session.add(job)
        session.commit()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                job_id = self.claim()
                if job_id is None:
                    self._purge_now_and_then()
                    stop.wait(self.poll_interval_s)
                    continue
                try:
                    self.process(job_id, stop)
                except SQLAlchemyError:
                    raise
                except Exception as exc:
                    self._fail(job_id, exc)
            except SQLAlchemyError as exc:
                log.warning(
                    "import worker cannot reach its database", extra={"error_type": type(exc).__name__}
                )
                time.sleep(1.0)

    def _purge_now_and_then(self) -> None:
        now = utcnow()
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
            self._purged_at = now
            with Session(self.engine) as session:
                purge_finished(import_dir=self.import_dir, session=session, before=now - RETENTION)

    def _fail(self, job_id: UUID, exc: Exception) -> None:
        log.error("import failed", extra={"import_id": str(job_id), "error_type": type(exc).__name__})
        with Session(self.engine) as session:
            session.execute(
                sa.update(ImportJob)
                .where(col(ImportJob.id) == job_id)
                .values(
                    status="failed", finished_at=utcnow(), error=f"The import stopped: {type(exc).__name__}."
                )
            )
            session.commit()
        drop_uploads(self.import_dir, job_id)
