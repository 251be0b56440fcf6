"""Alembic environment: runs on the connection `migrate()` hands over, or on its own engine.

`ticket_core.db.migrate(url)` passes an open connection in `config.attributes["connection"]`.
Run from the alembic command line instead (`alembic -x url=… upgrade head` with a config whose
script_location points here), it builds an async engine from `-x url=`, `sqlalchemy.url` or
INTAKE_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from ticket_core.db import WRITE, Base, make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = (context.get_x_argument(as_dictionary=True).get("url")
           or config.get_main_option("sqlalchemy.url")
           or os.environ.get("INTAKE_DATABASE_URL"))
    if not url:
        raise RuntimeError("no database URL: pass -x url=… or set INTAKE_DATABASE_URL")
    return url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.execution_options(**{WRITE: True})
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    asyncio.run(_run_async())
