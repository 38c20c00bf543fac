"""Applies decoded events to the read model inside the caller's transaction. Never commits."""

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.aggregate import Aggregate
from handlers.registry import route


async def apply_events(
    conn: AsyncConnection, registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable] | None = None
) -> Counter:
    """One set-based upsert per table (two where deletes/cancels are present). Returns a Counter
    with the totals "applied" and "stale"; given `labels` (one per event, e.g. (topic, event_type)),
    also ("applied", label) and ("stale", label) per label."""
    counts: Counter = Counter()
    if labels is None:
        for aggregate, group in route(registry, events).items():
            result = await aggregate.apply(conn, group)
            counts["applied"] += result.applied
            counts["stale"] += result.stale
        return counts
    if len(labels) != len(events):
        raise ValueError("apply_events needs one label per event")
    for aggregate, pairs in route_labelled(registry, events, labels).items():
        result = await aggregate.apply(conn, [event for event, _ in pairs])
        counts["applied"] += result.applied
        counts["stale"] += result.stale
        for (_, label), applied in zip(pairs, result.outcomes, strict=True):
            counts[("applied" if applied else "stale", label)] += 1
    return counts


def route_labelled(registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable]) -> dict[Aggregate, list]:
    """Like handlers.registry.route, with each event's label carried along: {aggregate: [(event, label)]}."""
    groups: dict[Aggregate, list] = {}
    for event, label in zip(events, labels):
        groups.setdefault(registry[event.event_type], []).append((event, label))
    return groups
