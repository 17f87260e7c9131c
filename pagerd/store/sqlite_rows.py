"""Many rows in one SQLite statement.

The database thread holds the GIL to bind a statement's values and lets it go while
SQLite steps it. ``executemany`` binds and steps once per row, so while the event loop
is busy the thread waits for the GIL after every row, up to a switch interval each
time. A statement whose VALUES list carries many rows binds them at once and runs
them in one step: the thread asks for the GIL once per chunk of rows.

Two forms are rewritten, each equivalent to running it row by row in order:
- ``INSERT INTO t (...) VALUES (?, ...) [ON CONFLICT ...]``: SQLite inserts (or
  upserts) the rows of one VALUES list in their order;
- ``UPDATE t SET a = ?, ... WHERE k = ?``: an UPDATE ... FROM (VALUES ...) joined on the
  key. The same key twice in one statement would update its row with either, so only
  the last row per key is kept: setting the same columns to plain values in turn
  leaves the last one's.
Any other statement, and what is left of fewer than ``MIN_CHUNK_ROWS`` rows, runs with
``executemany``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

# SQLite's bound on the parameters of one statement (3.32 and later).
MAX_PARAMETERS = 32_766
# Chunks are powers of two rows, at most this many: six statements per write to
# prepare once and cache, a few MiB in all for a table's largest ones.
MAX_CHUNK_ROWS = 1024
# Fewer rows go row by row: without a busy event loop to wait for, binding many at once
# gains nothing, and one cached statement serves them all.
MIN_CHUNK_ROWS = 32
# Room in the connection's statement cache for all of them, and the store's reads.
STATEMENT_CACHE_SIZE = 256

_INSERT = re.compile(r"^(INSERT INTO .*? VALUES )(\([?, ]+\))(.*)$", re.DOTALL)
_UPDATE = re.compile(r"^UPDATE (\w+) SET ((?:\w+ = \?, )*\w+ = \?) WHERE (\w+) = \?$")


class RowsForm:
    """How one statement runs many rows at once; ``columns`` is 0 when it cannot."""

    def __init__(self, sql: str) -> None:
        self.columns = 0
        self.keyed = False  # an update: a row's last value is its key
        self._render: Callable[[int], str] = lambda rows: sql
        if insert := _INSERT.match(sql):
            head, row, tail = insert.groups()
            self.columns = row.count("?")
            self._render = lambda rows: f"{head}{', '.join([row] * rows)}{tail}"
        elif update := _UPDATE.match(sql):
            table, assignments, key = update.groups()
            names = [part.split(" = ")[0] for part in assignments.split(", ")]
            self.columns = len(names) + 1
            self.keyed = True
            sets = ", ".join(f"{name} = v.column{i}" for i, name in enumerate(names, 1))
            row = f"({', '.join('?' * self.columns)})"
            # Names come from pagerd's own statements, never from input.
            self._render = lambda rows: (
                f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([row] * rows)}) AS v"  # noqa: S608
                f" WHERE {table}.{key} = v.column{self.columns}"
            )
        bound = min(MAX_CHUNK_ROWS, MAX_PARAMETERS // max(self.columns, 1))
        self.largest_chunk = 1 << (bound.bit_length() - 1)

    @cache  # noqa: B019 - a form lives as long as the process, as its statements do
    def statement(self, rows: int) -> str:
        """The statement for a chunk of ``rows`` rows."""
        return self._render(rows)


@cache
def form_of(sql: str) -> RowsForm:
    return RowsForm(sql)


def execute_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run ``sql`` once per row of ``rows``, in their order, in as few steps as it can."""
    form = form_of(sql)
    if not form.columns or len(rows) < MIN_CHUNK_ROWS:
        conn.executemany(sql, rows)
        return
    if form.keyed:
        rows = list({row[-1]: row for row in rows}.values())
    start = 0
    while (left := len(rows) - start) >= MIN_CHUNK_ROWS:
        size = min(form.largest_chunk, 1 << (left.bit_length() - 1))
        chunk = rows[start : start + size]
        conn.execute(form.statement(size), [value for row in chunk for value in row])
        start += size
    if start < len(rows):
        conn.executemany(sql, rows[start:])
