"""Many rows in one SQLite statement (pagerd.store.sqlite_rows).

``execute_rows`` must leave a database exactly as ``executemany`` leaves it, row by
row in order: for plain inserts (their order shows in the rowids), upserts whose
update depends on what the earlier rows of the same batch wrote, inserts that keep
the first of a repeated key, and keyed updates where the last row for a key wins.
Keys are drawn from a few dozen so that batches repeat them, and batch lengths cross
``MIN_CHUNK_ROWS`` and the chunk sizes above it. Every keyed update of the real schema must
find its rows through the key's index, not by scanning the table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagerd.store.migrations import MIGRATIONS
from pagerd.store.schema import SQL
from pagerd.store.sqlite_rows import MAX_PARAMETERS, execute_rows, form_of

TABLES = """
CREATE TABLE t (k TEXT PRIMARY KEY, a INTEGER, b TEXT NOT NULL DEFAULT '');
CREATE TABLE log (id INTEGER PRIMARY KEY AUTOINCREMENT, k TEXT, a INTEGER);
"""

STATEMENTS = {
    "plain insert": "INSERT INTO log (k, a) VALUES (?, ?)",
    # The update reads the row as the batch's earlier rows left it: order shows.
    "upsert": "INSERT INTO t (k, a, b) VALUES (?, ?, ?)"
    " ON CONFLICT (k) DO UPDATE SET a = excluded.a, b = t.b || excluded.b",
    "first wins": "INSERT INTO t (k, a, b) VALUES (?, ?, ?) ON CONFLICT (k) DO NOTHING",
    "keyed update": "UPDATE t SET a = ?, b = ? WHERE k = ?",
    "other": "DELETE FROM t WHERE k = ?",
}

keys = st.integers(0, 60).map(lambda n: f"k{n}")
values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))
texts = st.text(alphabet="xyz", max_size=3)

ROWS = {
    "plain insert": st.tuples(keys, values),
    "upsert": st.tuples(keys, values, texts),
    "first wins": st.tuples(keys, values, texts),
    "keyed update": st.tuples(values, texts, keys),
    "other": st.tuples(keys),
}

batches = st.lists(
    st.sampled_from(sorted(STATEMENTS)).flatmap(
        lambda name: st.tuples(st.just(name), st.lists(ROWS[name], max_size=150))
    ),
    max_size=6,
)


def contents(conn: sqlite3.Connection) -> tuple[list[tuple[object, ...]], ...]:
    return (
        conn.execute("SELECT k, a, b FROM t ORDER BY k").fetchall(),
        conn.execute("SELECT id, k, a FROM log ORDER BY id").fetchall(),
    )


def run_both(batch: list[tuple[str, list[tuple[object, ...]]]]) -> tuple[object, object]:
    rowwise, at_once = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    with closing(rowwise), closing(at_once):
        for conn in (rowwise, at_once):
            conn.executescript(TABLES)
            conn.execute("INSERT INTO t (k, a, b) VALUES ('k1', 1, 'seed'), ('k4', 2, '')")
        for name, rows in batch:
            rowwise.executemany(STATEMENTS[name], rows)
            execute_rows(at_once, STATEMENTS[name], rows)
        return contents(rowwise), contents(at_once)


@settings(max_examples=300, deadline=None)
@given(batches)
def test_execute_rows_leaves_what_executemany_leaves(
    batch: list[tuple[str, list[tuple[object, ...]]]],
) -> None:
    rowwise, at_once = run_both(batch)
    assert at_once == rowwise


@pytest.mark.parametrize("name", ["plain insert", "upsert", "keyed update"])
def test_long_batches_cross_every_chunk_size(name: str) -> None:
    """10,000 rows: the largest chunks, smaller ones down to 32 rows, the rest row by row."""
    make: dict[str, Callable[[int], tuple[object, ...]]] = {
        "plain insert": lambda i: (f"k{i % 977}", i),
        "upsert": lambda i: (f"k{i % 977}", i, "x"),
        "keyed update": lambda i: (i, "y", f"k{i % 977}"),
    }
    seed: list[tuple[object, ...]] = [(f"k{i}", 0, "") for i in range(977)]
    rows = [make[name](i) for i in range(10_000)]
    rowwise, at_once = run_both([("upsert", seed), (name, rows)])
    assert at_once == rowwise


def test_a_wide_statement_stays_within_sqlites_parameter_bound() -> None:
    columns = ", ".join(f"c{i}" for i in range(40))
    sql = f"INSERT INTO wide ({columns}) VALUES ({', '.join('?' * 40)})"
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"CREATE TABLE wide ({columns})")
        execute_rows(conn, sql, [tuple(range(i, i + 40)) for i in range(3_000)])
        stored = conn.execute("SELECT count(*), sum(c0) FROM wide").fetchone()
    assert stored == (3_000, sum(range(3_000)))
    assert form_of(sql).largest_chunk * 40 <= MAX_PARAMETERS


@pytest.mark.parametrize("op", [op for op, sql in SQL.items() if sql.startswith("UPDATE")])
@pytest.mark.parametrize("rows", [2, 4096])
def test_a_keyed_update_of_the_schema_searches_by_its_key(op: object, rows: int) -> None:
    sql = SQL[op]  # type: ignore[index]
    form = form_of(sql)
    assert form.keyed, f"{sql!r} runs row by row"
    with closing(sqlite3.connect(":memory:")) as conn:
        for migration in MIGRATIONS:
            conn.executescript(migration)
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + form.statement(rows), [None] * (rows * form.columns)
        ).fetchall()
    steps = [row[3] for row in plan]
    table = sql.split()[1]
    assert any(step.startswith(f"SEARCH {table} USING") for step in steps), steps
    assert not any(step.startswith(f"SCAN {table}") for step in steps), steps
