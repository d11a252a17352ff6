"""In-process wake-up calls for background workers that poll a table (the outbox relay, the webhook
dispatcher): a transaction that adds work rings the worker's bell when it commits, so a waiting worker
starts at once instead of at its next poll. The poll stays, less often, for work that other processes
write or that becomes due with time."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlmodel import Session

_bells: weakref.WeakSet[Doorbell] = weakref.WeakSet()


class Doorbell:
    def __init__(self, name: str) -> None:
        self._waiters: weakref.WeakSet[threading.Event] = weakref.WeakSet()
        self._pending = f"clientela.doorbell.{name}"  # in session.info: the next commit rings
        _bells.add(self)

    def ring(self) -> None:
        """Wake every worker waiting on this bell in this process."""
        for waiter in list(self._waiters):
            waiter.set()

    def ring_after_commit(self, session: Session) -> None:
        """Ring when the session's transaction commits (it added work); nothing if it rolls back."""
        if not session.info.get(self._pending):
            session.info[self._pending] = True
            sa.event.listen(session, "after_commit", self._rung, once=True)

    def _rung(self, session: Session) -> None:
        session.info.pop(self._pending, None)
        self.ring()

    @contextmanager
    def listening(self) -> Iterator[threading.Event]:
        """An event set when the bell rings (or `ring_every_bell` is called) while the block runs; clear it
        before looking for work, wait on it after finding none."""
        waiter = threading.Event()
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)


def ring_every_bell() -> None:
    """Wake every waiting worker of this process (it is time to stop)."""
    for bell in list(_bells):
        bell.ring()
