"""Alembic helpers: each service keeps its own environment under `services/<name>/migrations/`.

`run_env` is what each service's `env.py` calls; `upgrade` is used at start-up and by `make migrate`
(``uv run alembic -c services/<name>/alembic.ini upgrade head`` works as well).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config

from shared.db import make_engine


def alembic_config(service_dir: Path, url: str | None = None) -> Config:
    cfg = Config(str(service_dir / "alembic.ini"))
    cfg.set_main_option("script_location", str(service_dir / "migrations"))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(service_dir: Path, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service_dir, url), revision)


def downgrade(service_dir: Path, url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(service_dir, url), revision)


def run_env(metadata: Sequence[sa.MetaData], default_url: Callable[[], str]) -> None:
    """Body of a service's env.py: migrate the URL given in the config, else the service's settings."""
    url = context.config.get_main_option("sqlalchemy.url") or default_url()
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=list(metadata), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = (
        make_engine(url, poolclass=sa.pool.NullPool) if not url.startswith("sqlite") else make_engine(url)
    )
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several processes of a service may start at once: one migrates, the others wait and find
            # nothing left to do.
            connection.execute(sa.text("SELECT pg_advisory_lock(7345012)"))
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=list(metadata),
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
