"""A node's role, as its HTTP routes answer it (CONTRACT §7).

On a node of a cluster, only the active node takes writes: a standby answers every
route that is not a read (API, integrations, acknowledge links, console) with 503 and
``Retry-After: 1``, serves reads from the database, and says on ``/readyz`` which node
is active and why it cannot be. A SQLite node has no role, and none of this applies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from pagerd.telemetry import metrics

# Methods that change nothing: a standby serves them.
READS = frozenset({"GET", "HEAD"})
RETRY_AFTER_S = "1"
# Never depend on the database: a standby's view is not refreshed for them.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class Hold(Protocol):
    """The node's hold on the lease (``pagerd.store.lease.Tenure``)."""

    def held(self) -> bool: ...


class NodeRole:
    """Whether this node is active, and what a standby knows of the cluster."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.active_node: str | None = None  # the lease's holder, as last seen
        self.reason: str | None = "starting"  # why this node cannot act (or serve), if so
        self._hold: Hold | None = None
        self._serving = False  # the active node's runtime is recovered and takes writes
        # Brings a standby's view of the database up to date before a read (the node sets it).
        self.refresh_view: Callable[[], Awaitable[None]] | None = None
        _count("standby")

    @property
    def role(self) -> str:
        """``active`` while this node holds the lease, by its own clock; else ``standby``."""
        return "active" if self._hold is not None and self._hold.held() else "standby"

    @property
    def serving(self) -> bool:
        """Whether writes are taken: the lease is held and the runtime recovered."""
        return self._serving and self.role == "active"

    def taking_over(self, hold: Hold) -> None:
        """The lease is this node's; its runtime is being recovered."""
        self._hold = hold
        self._serving = False
        self.active_node = self.node_id
        self.reason = "taking over: recovering open incidents and pending pages"
        _count("active")

    def serve(self) -> None:
        """Recovered: writes are taken from now on."""
        self._serving = True
        self.reason = None

    def stand_by(self, reason: str | None = None) -> None:
        """This node acts no more (its lease lapsed, or it never held it)."""
        self._hold = None
        self._serving = False
        if self.active_node == self.node_id:
            self.active_node = None
        self.reason = reason
        _count("standby")

    def saw(self, active_node: str | None, reason: str | None) -> None:
        """A standby's latest look at the lease: who holds it, and why it cannot act."""
        self.active_node = active_node
        self.reason = reason

    def readiness(self, not_ready: list[str]) -> tuple[int, dict[str, object]]:
        """The status and body of ``/readyz``: 200 only for the active node, ready."""
        if self.role == "active":
            if self._serving and not not_ready:
                return 200, {"role": "active"}
            why = "; ".join(not_ready) or self.reason or "taking over"
            return 503, {"role": "active", "active": self.node_id, "reason": why}
        body: dict[str, object] = {"role": "standby", "active": self.active_node}
        if self.reason:
            body["reason"] = self.reason
        return 503, body

    def refusal(self) -> str:
        """Why a write is refused here, and where to send it."""
        if self.role == "active":
            return f"node {self.node_id!r} is taking over as the active node: try again"
        active = self.active_node
        where = f"the active node is {active!r}" if active else "no node is active"
        return f"node {self.node_id!r} is standby ({where}): try again, or ask the active node"


def _count(role: str) -> None:
    for each in ("active", "standby"):
        metrics.ROLE.labels(role=each).set(1 if each == role else 0)
