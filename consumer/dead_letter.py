"""Sending records that cannot be applied to the DLQ (`run`, and `replay --dlq`)."""

import asyncio
from collections.abc import Sequence

import orjson
import structlog

from consumer.batch import PoisonRecord, dead_letter_headers
from consumer.ports import Producer

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
