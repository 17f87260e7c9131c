"""The database's files on disk: created private to pagerd's user, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path

from pagerd.telemetry.logs import get_logger

log = get_logger(__name__)

# The database holds every phone number and address, and the secret that signs
# acknowledge links: readable by pagerd's user alone, whatever the umask.
PRIVATE_MODE = 0o600
_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_files(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite writes anything
    to it (SQLite gives its WAL and shared-memory files the database file's mode), and
    narrow an existing one and its side files to the same."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _make_private(path, create=True)
    for suffix in _SIDE_FILES:
        _make_private(path.with_name(path.name + suffix), create=False)


def _make_private(file: Path, *, create: bool) -> None:
    try:
        descriptor = os.open(file, os.O_RDONLY | (os.O_CREAT if create else 0), PRIVATE_MODE)
    except FileNotFoundError:
        return
    except PermissionError as error:  # SQLite will say what it cannot open
        log.warning("store.file_mode_unchanged", path=str(file), error=error.strerror)
        return
    try:
        os.fchmod(descriptor, PRIVATE_MODE)
    except PermissionError as error:  # not the owner: the owner's choice stands
        log.warning("store.file_mode_unchanged", path=str(file), error=error.strerror)
    finally:
        os.close(descriptor)
