"""What `run` and `replay` share about records that cannot be applied: sending them to the DLQ,
and isolating the one event the database rejects so the rest of a batch still applies."""

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence

import orjson
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.batch import PoisonRecord, Record, dead_letter_headers
from consumer.ports import Producer
from consumer.retry import is_data_error, is_transient_db_error, short_error
from handlers.aggregate import Aggregate
from handlers.decode import Poison

log = structlog.get_logger("consumer.dead_letter")


async def send_dead_letters(producer: Producer, dlq_suffix: str, items: Sequence[PoisonRecord]) -> None:
    """Original key, value and headers plus the x-* headers, to `<topic><suffix>`; every ack awaited."""
    futures = []
    for item in items:
        r = item.record
        futures.append(await producer.send(r.topic + dlq_suffix, value=r.value, key=r.key, headers=dead_letter_headers(item)))
        record_log = log.bind(topic=r.topic, partition=r.partition, offset=r.offset)
        event_id = _event_id_of(r.value)
        if event_id is not None:
            record_log = record_log.bind(event_id=event_id)
        # The error says why, never the payload (it may hold personal data).
        record_log.warning("record dead-lettered", error_type=item.poison.error_type, error=item.poison.message[:200])
    await asyncio.gather(*futures)


async def apply_isolating(
    conn: AsyncConnection, registry: Mapping[str, Aggregate], events: Sequence, records: Sequence[Record]
) -> tuple[Counter, list[PoisonRecord]]:
    """Slow path after a non-transient database error: each event in its own savepoint inside the
    caller's transaction. Returns the counts (totals and per (topic, event_type)) and the rejected
    records, as `database_error` poison."""
    counts: Counter = Counter()
    rejected: list[PoisonRecord] = []
    for event, record in zip(events, records, strict=True):
        try:
            async with conn.begin_nested():
                result = await registry[event.event_type].apply(conn, [event])
        except DBAPIError as exc:
            if is_transient_db_error(exc) or not is_data_error(exc):
                raise
            message = f"{type(exc.orig).__name__ if exc.orig else type(exc).__name__}: {short_error(exc)}"
            rejected.append(PoisonRecord(record, Poison("database_error", message[:1000])))
            counts[("dead_lettered", (record.topic, event.event_type))] += 1
            continue
        counts["applied"] += result.applied
        counts["stale"] += result.stale
        if result.applied:
            counts[("applied", (record.topic, event.event_type))] += result.applied
        if result.stale:
            counts[("stale", (record.topic, event.event_type))] += result.stale
    return counts, rejected


def _event_id_of(value: bytes | None) -> str | None:
    """The envelope's event_id, when a dead-lettered value still has one (for the log line only)."""
    if not value:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    event_id = parsed.get("event_id") if isinstance(parsed, dict) else None
    return event_id[:64] if isinstance(event_id, str) else None
