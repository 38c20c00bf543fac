"""Applies decoded events to the read model inside the caller's transaction. Never commits.

Two steps, so the loop can overlap them across batches: `prepare_events` (pure CPU: route,
collapse, serialize the rows) and `write_prepared` (the statements)."""

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress

from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.aggregate import Aggregate, Prepared


@dataclass(frozen=True, slots=True)
class PreparedEvents:
    parts: list[tuple[Prepared, list | None]]  # per aggregate: its prepared rows and the events' labels


def prepare_events(registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable] | None = None) -> PreparedEvents:
    """Per aggregate, its prepared rows and the labels of its events."""
    if labels is not None and len(labels) != len(events):
        raise ValueError("apply_events needs one label per event")
    return PreparedEvents(
        [(aggregate.prepare(group), group_labels) for aggregate, (group, group_labels) in route_labelled(registry, events, labels).items()]
    )


@dataclass(slots=True)
class Outcomes:
    """What became of a batch's events, per (topic, event_type) label (None for unlabelled events)."""

    applied: Counter = field(default_factory=Counter)
    stale: Counter = field(default_factory=Counter)
    dead_lettered: Counter = field(default_factory=Counter)  # rejected by the database

    def add(self, other: "Outcomes") -> None:
        self.applied.update(other.applied)
        self.stale.update(other.stale)
        self.dead_lettered.update(other.dead_lettered)

    def totals(self) -> Counter:
        """Counter(applied=..., stale=...) (and dead_lettered when there are any)."""
        totals = Counter(applied=self.applied.total(), stale=self.stale.total())
        if self.dead_lettered:
            totals["dead_lettered"] = self.dead_lettered.total()
        return totals


async def write_prepared(conn: AsyncConnection, prepared: PreparedEvents) -> Outcomes:
    """One set-based upsert per table (two where deletes/cancels are present)."""
    outcomes = Outcomes()
    for part, labels in prepared.parts:
        result = await part.aggregate.write(conn, part)
        if labels is None:
            outcomes.applied[None] += result.applied
            outcomes.stale[None] += result.stale
            continue
        applied = Counter(compress(labels, result.outcomes))
        stale = Counter(labels)
        stale.subtract(applied)
        outcomes.applied.update(applied)
        outcomes.stale.update(+stale)
    return outcomes


async def apply_events(
    conn: AsyncConnection, registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable] | None = None
) -> Outcomes:
    """prepare_events + write_prepared; given `labels` (one per event, e.g. (topic, event_type)),
    the outcomes are per label."""
    return await write_prepared(conn, prepare_events(registry, events, labels))


def route_labelled(
    registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable] | None
) -> dict[Aggregate, tuple[list, list | None]]:
    """Like handlers.registry.route, with each event's label carried along:
    {aggregate: ([event, ...], [label, ...] or None)}, offset order kept within each group."""
    groups: dict[Aggregate, tuple[list, list | None]] = {}
    for i, event in enumerate(events):
        aggregate = registry[event.event_type]
        group = groups.get(aggregate)
        if group is None:
            group = groups[aggregate] = ([], [] if labels is not None else None)
        group[0].append(event)
        if labels is not None:
            group[1].append(labels[i])  # type: ignore[union-attr]
    return groups
