"""The README's shell blocks, as its tests find them: each is marked with the test that runs it.

A ```sh block preceded by ``<!-- test: KIND -->`` is run by a test: ``start`` and
``commands`` by tests/test_readme.py against a fresh ``make run``, ``logs`` there too (on
pagerd's log instead of the journal), the ``systemd-*`` blocks by tests/test_install.py
in a container booted with systemd. An ``example`` is a pagerd command whose paths and
URLs the reader puts in: tests/test_readme.py has pagerd's own parser read it, and the
command's own tests run it (``pagerd migrate``: tests/test_migrate.py).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.harness import REPO

README = REPO / "README.md"
KINDS = (
    "start",
    "commands",
    "logs",
    "systemd-install",
    "systemd-start",
    "systemd-check",
    "example",
)
_MARKER = re.compile(r"<!-- test: ([\w-]+) -->")


@dataclass(frozen=True)
class Block:
    kind: str | None  # None: a shell block no test runs
    line: int  # of the opening fence, 1-based
    commands: tuple[str, ...]


def shell_blocks(path: Path = README) -> list[Block]:
    """Every ```sh block of the file, in order, with the kind its marker gives it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    kind: str | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if marker := _MARKER.fullmatch(line.strip()):
            kind = marker.group(1)
        elif line.strip() == "```sh":
            end = lines.index("```", index + 1)
            blocks.append(Block(kind, index + 1, split_commands(lines[index + 1 : end])))
            kind, index = None, end
        elif line.strip():
            kind = None  # a marker applies to the block right after it only
        index += 1
    return blocks


def blocks_of(kind: str, path: Path = README) -> list[Block]:
    return [block for block in shell_blocks(path) if block.kind == kind]


def split_commands(lines: list[str]) -> tuple[str, ...]:
    """One command per entry: lines joined while they end in a backslash or a quote is open."""
    commands: list[str] = []
    current: list[str] = []
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        text = "\n".join(current)
        if text.endswith("\\"):
            continue
        try:
            shlex.split(text, comments=True)
        except ValueError:  # "No closing quotation": the command goes on
            continue
        commands.append(text)
        current = []
    if current:
        raise ValueError(f"unterminated command: {current}")
    return tuple(commands)
