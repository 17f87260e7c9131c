"""The database's files are private to pagerd's user, whatever the umask (issue 13, point 12)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pagerd.core.records import WriteBatch
from pagerd.store.sqlite import Store


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """The umask of a shell, not of systemd's UMask=0077: files readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("lax_umask")
async def test_a_new_database_and_its_wal_and_shm_files_are_0600(tmp_path: Path) -> None:
    """Given a umask of 022, when pagerd creates its database and writes to it, then the
    database, its WAL and its shared-memory file are 0600, and a directory it made 0700."""
    path = tmp_path / "state" / "pagerd.db"
    store = await Store.open(path)
    try:
        await store.write(WriteBatch(meta=(("ack_link_secret", "s3cret"),)))
        files = [path, path.with_name("pagerd.db-wal"), path.with_name("pagerd.db-shm")]
        assert {file.name: oct(mode(file)) for file in files} == dict.fromkeys(
            ["pagerd.db", "pagerd.db-wal", "pagerd.db-shm"], "0o600"
        )
        assert mode(path.parent) == 0o700
    finally:
        await store.close()


@pytest.mark.usefixtures("lax_umask")
async def test_an_existing_database_readable_by_others_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "pagerd.db"
    store = await Store.open(path)
    await store.close()
    path.chmod(0o644)
    wal = path.with_name("pagerd.db-wal")
    wal.touch(mode=0o644)  # left by a crash of an older pagerd

    store = await Store.open(path)
    try:
        assert (mode(path), mode(wal)) == (0o600, 0o600)
    finally:
        await store.close()
