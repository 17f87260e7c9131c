"""Who is on call: schedules of layered rotations, overrides, and the answer at any instant.

Pure: no asyncio, no clock reads. The only input from outside the arguments is the
IANA zone data, which ``zoneinfo`` reads once per key and caches.

A rotation hands over at local wall-clock times ``start + k * shift_s`` in its
schedule's zone. A hand-over happens at the first instant the zone's clocks show that
wall time or later: in a fold (clocks set back) that is the first occurrence, and in
a gap (clocks set forward) it is the first instant after the gap. That map from wall
time to instants never goes backwards, so shifts tile time with no gap and no overlap;
a shift that lies wholly inside a gap lasts no time at all and is skipped.
``on_call`` finds the shift that contains an instant by arithmetic on wall time, never
by walking shifts, and the override by bisection. The rules are in docs/schedules.md.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from heapq import heappop, heappush
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from pagerd.core.policy import DomainError

# Instants outside these bounds are refused: far from datetime's own limits, so no
# hand-over (at most MAX_SHIFT_S past the latest instant) and no zone conversion overflows.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
MAX_SHIFT_S = 366 * 24 * 3600
MAX_HANDOVERS = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = _EPOCH.replace(tzinfo=None)
_SECOND = timedelta(seconds=1)


class OnCall(msgspec.Struct, frozen=True, gc=False):
    """Who is on call (None: nobody), from ``since`` until ``until`` (None: without end).

    ``until`` is the next instant the answer may change: a hand-over of the layer that
    names the developer, the start of a later layer, or an override's boundary. The
    developer after it may be the same one (a rotation of one, an override for the
    developer already on call).
    """

    developer_id: int | None
    since: datetime | None
    until: datetime | None


@dataclass(frozen=True, slots=True)
class Rotation:
    """One layer: ``developer_ids`` take turns, in order, of ``shift_s`` local seconds each.

    ``start`` is naive: a wall-clock time in the schedule's zone. The schedule that
    holds a rotation checks it, so that a problem is named by its path in the schedule.
    """

    start: datetime
    shift_s: int
    developer_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Layer:
    """A rotation as ``on_call`` uses it: its shift as a timedelta, its first instant."""

    start: datetime  # naive local wall time
    local_start: datetime  # the same, in the schedule's zone
    shift: timedelta
    developer_ids: tuple[int, ...]
    begins: datetime  # the first hand-over, in UTC


@dataclass(frozen=True, slots=True)
class Schedule:
    """A team's schedule: rotations as layers, in an IANA time zone.

    Where a later rotation names someone (from its start on), it wins over the earlier
    ones; as a rotation names someone at every instant after its start, the layer that
    answers is the latest in the list of those that have started.
    """

    team_id: int
    time_zone: str
    rotations: tuple[Rotation, ...]
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _layers: tuple[_Layer, ...] = field(init=False, repr=False, compare=False)
    # Where the answering layer changes: sorted instants and the layer from each on.
    _step_starts: tuple[datetime, ...] = field(init=False, repr=False, compare=False)
    _step_layers: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _require_int(self.team_id, "team_id")
        zone = load_zone(self.time_zone, "time_zone")
        layers = tuple(
            _layer(rotation, zone, f"rotations[{index}]")
            for index, rotation in enumerate(self.rotations)
        )
        # Kept as tuples, so that a schedule compares and hashes by value.
        rotations = tuple(
            Rotation(rotation.start, rotation.shift_s, layer.developer_ids)
            for rotation, layer in zip(self.rotations, layers, strict=True)
        )
        step_starts: list[datetime] = []
        step_layers: list[int] = []
        for index in sorted(range(len(layers)), key=lambda i: (layers[i].begins, i)):
            if step_layers and index < step_layers[-1]:
                continue  # a later layer has started already: this one never answers
            if step_starts and step_starts[-1] == layers[index].begins:
                step_layers[-1] = index  # two layers begin together: the later one answers
            else:
                step_starts.append(layers[index].begins)
                step_layers.append(index)
        object.__setattr__(self, "rotations", rotations)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "_layers", layers)
        object.__setattr__(self, "_step_starts", tuple(step_starts))
        object.__setattr__(self, "_step_layers", tuple(step_layers))

    def rotation_answer(self, at: datetime) -> OnCall:
        """Who the rotations alone name at ``at`` (aware, UTC, within bounds)."""
        step = bisect_right(self._step_starts, at) - 1
        next_step = self._step_starts[step + 1] if step + 1 < len(self._step_starts) else None
        if step < 0:
            return OnCall(None, None, next_step)
        layer = self._layers[self._step_layers[step]]
        turn = _shift_index(layer, self._zone, at)
        since = _handover(layer, self._zone, turn)
        until = _handover(layer, self._zone, turn + 1)
        developer = layer.developer_ids[turn % len(layer.developer_ids)]
        return OnCall(developer, since, _earlier(until, next_step))


@dataclass(frozen=True, slots=True)
class Override:
    """During [start, end) ``developer_id`` is on call, whatever the rotations say.

    ``start`` and ``end`` must carry a UTC offset; they are kept in UTC. Where overrides
    overlap, the most recently created wins: the one with the highest ``id``.
    """

    id: int
    developer_id: int
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_int(self.id, "id")
        _require_int(self.developer_id, "developer_id")
        start = instant(self.start, "start")
        end = instant(self.end, "end")
        if end <= start:
            raise DomainError(
                "end", f"must be after start ({start.isoformat()}), got {end.isoformat()}"
            )
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


@dataclass(frozen=True, slots=True)
class _Segment:
    """A span in which one override wins."""

    start: datetime
    end: datetime
    override: Override


def _resolve(overrides: Sequence[Override]) -> tuple[_Segment, ...]:
    """Disjoint spans, in order, each won by the override with the highest id covering it."""
    bounds = sorted({o.start for o in overrides} | {o.end for o in overrides})
    by_start = sorted(overrides, key=lambda o: o.start)
    covering: list[tuple[int, Override]] = []  # a heap, highest id first; ids are unique
    segments: list[_Segment] = []
    taken = 0
    for left, right in pairwise(bounds):
        while taken < len(by_start) and by_start[taken].start <= left:
            heappush(covering, (-by_start[taken].id, by_start[taken]))
            taken += 1
        while covering and covering[0][1].end <= left:
            heappop(covering)  # ended: whatever is under it may win again
        if not covering:
            continue
        winner = covering[0][1]
        last = segments[-1] if segments else None
        if last is not None and last.override is winner and last.end == left:
            segments[-1] = _Segment(last.start, right, winner)
        else:
            segments.append(_Segment(left, right, winner))
    return tuple(segments)


class Overrides:
    """A schedule's overrides with their overlaps resolved into disjoint spans, for bisection."""

    __slots__ = ("_segments", "_starts", "overrides")

    def __init__(self, overrides: Iterable[Override] = ()) -> None:
        self.overrides = tuple(overrides)
        seen: dict[int, int] = {}
        for index, override in enumerate(self.overrides):
            if override.id in seen:
                raise DomainError(
                    f"overrides[{index}].id",
                    f"{override.id} is also the id of overrides[{seen[override.id]}]",
                )
            seen[override.id] = index
        self._segments = _resolve(self.overrides)
        self._starts = tuple(segment.start for segment in self._segments)

    def answer(self, at: datetime, rotations: Callable[[datetime], OnCall]) -> OnCall:
        """The override winning at ``at`` if any, else ``rotations(at)`` cut at overrides."""
        index = bisect_right(self._starts, at) - 1
        if index >= 0 and at < self._segments[index].end:
            segment = self._segments[index]
            return OnCall(segment.override.developer_id, segment.start, segment.end)
        ended = self._segments[index].end if index >= 0 else None
        begins = self._starts[index + 1] if index + 1 < len(self._starts) else None
        named = rotations(at)
        return OnCall(named.developer_id, _later(named.since, ended), _earlier(named.until, begins))


NO_OVERRIDES = Overrides()


def on_call(schedule: Schedule, overrides: Overrides, at: datetime) -> OnCall:
    """Who is on call at ``at`` (aware; past or future), since when and until when."""
    moment = instant(at, "at")
    return overrides.answer(moment, schedule.rotation_answer)


def next_handovers(
    schedule: Schedule, overrides: Overrides, after: datetime, count: int
) -> tuple[OnCall, ...]:
    """The next ``count`` answers after ``after``, each from the hand-over that begins it.

    Fewer when the answer never changes again, or would change only at or past LATEST.
    """
    moment = instant(after, "after")
    _require_int(count, "count")
    if not 0 <= count <= MAX_HANDOVERS:
        raise DomainError("count", f"must be between 0 and {MAX_HANDOVERS}, got {count}")
    current = on_call(schedule, overrides, moment)
    handovers: list[OnCall] = []
    while len(handovers) < count and current.until is not None and current.until < LATEST:
        current = on_call(schedule, overrides, current.until)
        handovers.append(current)
    return tuple(handovers)


@dataclass(frozen=True, slots=True)
class Rota:
    """A schedule as a page reads it: its layers, its overrides resolved once, and how to
    reach its team's developers (``phones``, by developer id).

    Made again whenever the schedule, its overrides or its team's developers change, so
    a page asks only the arithmetic of ``on_call``.
    """

    schedule_id: str
    schedule: Schedule
    overrides: Overrides
    phones: Mapping[int, str]

    def on_call(self, at: datetime) -> OnCall:
        """Who is on call at ``at``."""
        return on_call(self.schedule, self.overrides, at)

    def reach(self, at: datetime) -> tuple[int | None, str | None, str]:
        """(developer on call, their phone number, why not) at ``at``.

        Nobody on call: (None, None, why). On call but not of the team any more (the
        config file dropped them): (developer, None, why).
        """
        developer_id = self.on_call(at).developer_id
        if developer_id is None:
            return None, None, f"nobody is on call on schedule {self.schedule_id!r}"
        phone = self.phones.get(developer_id)
        if phone is None:
            where = f"on call on schedule {self.schedule_id!r}"
            return developer_id, None, f"developer {developer_id}, {where}, is not in its team"
        return developer_id, phone, ""


# --- validation --------------------------------------------------------------------------


def load_zone(key: str, path: str = "time_zone") -> ZoneInfo:
    """The IANA zone named ``key``, or DomainError naming ``path``."""
    if not isinstance(key, str) or not key:
        raise DomainError(path, f"must be an IANA time zone name, got {key!r}")
    # localtime is whatever the host is set to; right/ zones count leap seconds, so their
    # clocks run 27 s off civil time. Neither is a place's time.
    if key == "localtime" or key.startswith("right/"):
        raise DomainError(path, f"must be the IANA name of a place's time zone, got {key!r}")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise DomainError(path, f"unknown time zone {key!r}") from None


def instant(value: datetime, path: str) -> datetime:
    """``value`` in UTC, if it carries an offset and lies within bounds; else DomainError."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise DomainError(path, f"must be a time with a UTC offset, got {value!r}")
    bounds = f"must be between {EARLIEST.year} and {LATEST.year}"
    try:
        moment = value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59-05:00 is past datetime's last instant in UTC
        raise DomainError(path, f"{bounds}, got {value.isoformat()}") from None
    if not EARLIEST <= moment < LATEST:
        raise DomainError(path, f"{bounds}, got {moment.isoformat()}")
    return moment


def _require_int(value: object, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DomainError(path, f"must be an integer, got {value!r}")


def _layer(rotation: Rotation, zone: ZoneInfo, path: str) -> _Layer:
    """Check ``rotation`` (problems named under ``path``) and prepare it for ``on_call``."""
    start = rotation.start
    if not isinstance(start, datetime) or start.tzinfo is not None:
        raise DomainError(
            f"{path}.start",
            f"must be a local wall-clock time without a UTC offset, got {start!r}",
        )
    if not EARLIEST.year <= start.year < LATEST.year:
        raise DomainError(
            f"{path}.start",
            f"must be between {EARLIEST.year} and {LATEST.year}, got {start.isoformat()}",
        )
    _require_int(rotation.shift_s, f"{path}.shift_s")
    if not 0 < rotation.shift_s <= MAX_SHIFT_S:
        raise DomainError(
            f"{path}.shift_s",
            f"must be positive and at most {MAX_SHIFT_S} (a year), got {rotation.shift_s}",
        )
    developer_ids = tuple(rotation.developer_ids)
    if not developer_ids:
        raise DomainError(f"{path}.developer_ids", "a rotation needs at least one developer")
    for index, developer_id in enumerate(developer_ids):
        _require_int(developer_id, f"{path}.developer_ids[{index}]")
    return _Layer(
        start=start,
        local_start=start.replace(tzinfo=zone),
        shift=timedelta(seconds=rotation.shift_s),
        developer_ids=developer_ids,
        begins=_first_instant_showing(start, zone),
    )


# --- wall-clock arithmetic ---------------------------------------------------------------


def _offset(zone: ZoneInfo, wall: datetime) -> timedelta:
    """``zone``'s offset at the wall time ``wall`` (its own tzinfo ignored, its fold used)."""
    offset = zone.utcoffset(wall)
    assert offset is not None, "a ZoneInfo has an offset at every wall time"
    return offset


def _first_instant_showing(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) at which ``zone``'s clocks show ``wall`` (naive) or later.

    A wall time that happens once: that instant. In a fold: its first occurrence. In a
    gap: the transition, the first instant after the gap. Never decreasing in ``wall``.
    """
    # fold=0 gives the offset in force before a transition, fold=1 the one after.
    before = _offset(zone, wall)
    after = _offset(zone, wall.replace(fold=1))
    if before >= after:  # once, or a fold (clocks set back): the first occurrence
        return _utc(wall - before)
    # A gap: read with the later offset, wall is an instant before the clocks jumped;
    # read with the earlier one, an instant after.
    return _transition(zone, _utc(wall - after), _utc(wall - before), after)


def _utc(naive: datetime) -> datetime:
    """``naive``, a UTC wall time, made aware (by arithmetic: ``replace`` parses keywords)."""
    return _EPOCH + (naive - _NAIVE_EPOCH)


def _transition(zone: ZoneInfo, before: datetime, after: datetime, offset: timedelta) -> datetime:
    """The first instant in (``before``, ``after``] at which ``zone``'s offset is ``offset``.

    By bisection over whole seconds: zone data counts transitions in seconds. Only a
    hand-over in a gap, or an instant in the second pass of a fold, needs it.
    """
    low = (before - _EPOCH) // _SECOND  # floor: at or before ``before``
    high = -((_EPOCH - after) // _SECOND)  # ceiling: at or after ``after``
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(zone, (_EPOCH + middle * _SECOND).astimezone(zone)) == offset:
            high = middle
        else:
            low = middle
    return _EPOCH + high * _SECOND


def _shift_index(layer: _Layer, zone: ZoneInfo, at: datetime) -> int:
    """The index of the latest hand-over of ``layer`` at or before ``at``."""
    local = at.astimezone(zone)
    if local.fold:
        # The second pass through a fold: every hand-over before the fold's end, the wall
        # time at which the clocks were set back, happened during the first pass.
        fold_end = _fold_end(local, zone)
        return -((layer.start - fold_end) // layer.shift) - 1
    # Two datetimes of one tzinfo subtract as wall-clock times, offsets ignored.
    return (local - layer.local_start) // layer.shift


def _fold_end(local: datetime, zone: ZoneInfo) -> datetime:
    """The naive wall time at which the fold that ``local`` (its second pass) is in ends."""
    before = _offset(zone, local.replace(fold=0))
    after = _offset(zone, local)
    at = local.astimezone(UTC)
    set_back = _transition(zone, at - (before - after), at, after)
    return (set_back + before).replace(tzinfo=None)


def _handover(layer: _Layer, zone: ZoneInfo, index: int) -> datetime:
    return _first_instant_showing(layer.start + index * layer.shift, zone)


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two ends, None being no end."""
    if a is None:
        return b
    return a if b is None else min(a, b)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    """The later of two beginnings, None being no beginning."""
    if a is None:
        return b
    return a if b is None else max(a, b)
