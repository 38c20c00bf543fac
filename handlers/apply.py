"""Applies decoded events to the read model inside the caller's transaction. Never commits."""

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.aggregate import Aggregate


async def apply_events(
    conn: AsyncConnection, registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable] | None = None
) -> Counter:
    """One set-based upsert per table (two where deletes/cancels are present). Returns a Counter
    with the totals "applied" and "stale"; given `labels` (one per event, e.g. (topic, event_type)),
    also ("applied", label) and ("stale", label) per label."""
    if labels is not None and len(labels) != len(events):
        raise ValueError("apply_events needs one label per event")
    counts: Counter = Counter()
    groups = route_labelled(registry, events, labels if labels is not None else [None] * len(events))
    for aggregate, pairs in groups.items():
        result = await aggregate.apply(conn, [event for event, _ in pairs])
        counts["applied"] += result.applied
        counts["stale"] += result.stale
        if labels is not None:
            for (_, label), applied in zip(pairs, result.outcomes, strict=True):
                counts[("applied" if applied else "stale", label)] += 1
    return counts


def route_labelled(registry: Mapping[str, Aggregate], events: Sequence, labels: Sequence[Hashable]) -> dict[Aggregate, list]:
    """Like handlers.registry.route, with each event's label carried along: {aggregate: [(event, label)]}."""
    groups: dict[Aggregate, list] = {}
    for event, label in zip(events, labels):
        groups.setdefault(registry[event.event_type], []).append((event, label))
    return groups
