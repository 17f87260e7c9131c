"""What the catalogue refuses, and why: the errors its changes and lookups raise.

The API answers each as its status (404, 409, 422, 503); the config file never meets
them, as its objects are checked before they are applied.
"""

from __future__ import annotations

MANAGED = "managed by config file"


class CatalogueError(Exception):
    """A change or lookup the catalogue refuses; the message says what and why."""


class NotFoundError(CatalogueError):
    """No such team, policy, service, schedule or override."""


class ConflictError(CatalogueError):
    """The change conflicts with what exists: a name taken, an object managed or in use."""


class InvalidError(CatalogueError):
    """A field of the change is wrong: ``field`` names it, ``problem`` says what."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotSavedError(CatalogueError):
    """The store did not commit the change; nothing changed. Trying again may work."""
