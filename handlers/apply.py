"""Applies decoded events to the read model inside the caller's transaction. Never commits."""

from collections import Counter
from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.aggregate import Aggregate
from handlers.registry import route


async def apply_events(conn: AsyncConnection, registry: Mapping[str, Aggregate], events: Sequence) -> Counter:
    """One set-based upsert per table (two where deletes/cancels are present). Returns a Counter
    with "applied" and "stale"."""
    counts: Counter = Counter()
    for aggregate, group in route(registry, events).items():
        result = await aggregate.apply(conn, group)
        counts["applied"] += result.applied
        counts["stale"] += result.stale
    return counts
