"""The one reach into aiosqlite's insides: a whole transaction in one hand-off to its thread.

aiosqlite has no public API for this: each of its calls is one hand-off to its
thread, and a group commit of BEGIN, one executemany per table and COMMIT would pay
each hand-off while the event loop is busy. Nothing else in pagerd touches a private
attribute of a third-party package.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

import aiosqlite

_T = TypeVar("_T")


async def on_db_thread(db: aiosqlite.Connection, fn: Callable[..., _T], *args: object) -> _T:
    """Run ``fn(connection, *args)`` on ``db``'s own thread and return its result."""
    connection: sqlite3.Connection = db._conn
    return await db._execute(lambda: fn(connection, *args))  # type: ignore[no-untyped-call,no-any-return]
