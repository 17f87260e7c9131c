"""Where pagerd keeps its state: SQLite (the default) or PostgreSQL, behind one port."""

from __future__ import annotations

from pathlib import Path

from pagerd.core.ports import Store


async def open_store(*, path: str = "", url: str = "") -> Store:
    """The store the configuration names: PostgreSQL at ``url`` if set, else SQLite at ``path``.

    Each adapter is imported only when chosen: a SQLite node never loads asyncpg.
    """
    if url:
        from pagerd.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    from pagerd.store.sqlite import Store as SqliteStore

    return await SqliteStore.open(Path(path))
