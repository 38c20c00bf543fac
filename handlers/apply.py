"""Applies decoded events to the read model inside the caller's transaction. Never commits.

Two steps, so the loop can overlap them across batches: `prepare_events` (pure CPU: route,
collapse, serialize the rows) and `write_prepared` (the statements)."""

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
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


async def write_prepared(conn: AsyncConnection, prepared: PreparedEvents) -> Counter:
    """One set-based upsert per table (two where deletes/cancels are present). Returns a Counter
    with the totals "applied" and "stale"; for labelled events, also ("applied", label) and
    ("stale", label) per label."""
    counts: Counter = Counter()
    for part, labels in prepared.parts:
        result = await part.aggregate.write(conn, part)
        counts["applied"] += result.applied
        counts["stale"] += result.stale
        if labels is not None:
            applied = Counter(compress(labels, result.outcomes))
            stale = Counter(labels)
            stale.subtract(applied)
            counts.update({("applied", label): n for label, n in applied.items()})
            counts.update({("stale", label): n for label, n in stale.items() if n})
    return counts


async def apply_events(
    conn: AsyncConnection, registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable] | None = None
) -> Counter:
    """prepare_events + write_prepared: given `labels` (one per event, e.g. (topic, event_type)),
    the counts are also per label."""
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
