"""Profile's database: the engine lives on `app.state`; routes take `SessionDep`."""

from shared.db import SessionDep, make_engine

__all__ = ["SessionDep", "make_engine"]
