"""`event-consumer publish`: validated, keyed, idempotent publishing of NDJSON envelopes."""

import sys
from collections.abc import Iterable, Iterator

import orjson
from aiokafka import AIOKafkaProducer

from consumer.kafka_clients import build_producer
from consumer.generate import Generator, topic_for
from consumer.settings import Settings
from handlers.decode import Poison, Tombstone, decode

CHUNK = 5000


def build_publisher(settings: Settings) -> AIOKafkaProducer:
    return build_producer(settings, linger_ms=5, max_batch_size=256 * 1024)


def validate_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes | None, bytes, str | None]]:
    """Yields (line number, key, value, error) for each non-blank line."""
    for number, raw in enumerate(lines, start=1):
        value = raw.rstrip(b"\r\n")
        if not value.strip():
            continue
        decoded = decode(value)
        if isinstance(decoded, Poison):
            yield number, None, value, f"{decoded.error_type}: {decoded.message}"
        elif isinstance(decoded, Tombstone):  # pragma: no cover - a line is never None
            continue
        else:
            yield number, str(decoded.data.id).encode(), value, None


async def _send_all(producer: AIOKafkaProducer, items: Iterable[tuple[str, bytes, bytes]]) -> int:
    sent = 0
    pending = []
    for topic, key, value in items:
        pending.append(await producer.send(topic, value=value, key=key))
        if len(pending) >= CHUNK:
            for fut in pending:
                await fut
            sent += len(pending)
            pending = []
    for fut in pending:
        await fut
    return sent + len(pending)


async def publish_file(settings: Settings, topic: str, lines: Iterable[bytes]) -> int:
    invalid = 0
    valid: list[tuple[str, bytes, bytes]] = []
    for number, key, value, error in validate_lines(lines):
        if error is not None:
            invalid += 1
            print(f"line {number}: {error}", file=sys.stderr)
        else:
            valid.append((topic, key, value))  # type: ignore[arg-type]
    producer = build_publisher(settings)
    await producer.start()
    try:
        sent = await _send_all(producer, valid)
    finally:
        await producer.stop()
    print(f"published {sent} events to {topic}; {invalid} invalid lines not sent", file=sys.stderr)
    return 1 if invalid else 0


async def publish_generated(settings: Settings, n: int, topic: str | None, seed: int) -> int:
    events = Generator(seed=seed).stream(n, duplicates=0.05, older=0.05)
    users_topic, orders_topic = (settings.kafka_topics + settings.kafka_topics)[:2] if len(settings.kafka_topics) < 2 else settings.kafka_topics[:2]

    def items() -> Iterator[tuple[str, bytes, bytes]]:
        for event in events:
            t = topic or topic_for(event, users_topic, orders_topic)
            yield t, str(event["data"]["id"]).encode(), orjson.dumps(event)

    producer = build_publisher(settings)
    await producer.start()
    try:
        sent = await _send_all(producer, items())
    finally:
        await producer.stop()
    print(f"published {sent} generated events", file=sys.stderr)
    return 0
