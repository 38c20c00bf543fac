"""A typed publishing API for services that emit the events this consumer reads.

    async with EventPublisher(settings) as pub:
        await pub.publish(UserUpdated(...))            # or a plain dict, validated like the consumer does
        await pub.publish_many([event, event, ...])    # acks awaited in bulk

Every event is validated with the consumer's own model (handlers.events), serialized with
model_dump_json(by_alias=True) and checked to decode back to an equal event through the consumer's
JSON path before anything is sent, so a record this publisher sends is never dead-lettered as
poison. The record key is the entity id as a decimal string; the producer is idempotent with
acks=all (consumer.kafka_clients.build_producer). Routing: user.* events go to the first of
KAFKA_TOPICS, order.* events to the second (the first when only one is configured), unless an
explicit topic= is given.
"""

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from pydantic import BaseModel, SecretStr, field_validator

from consumer.kafka_clients import build_producer
from consumer.settings import Settings, load_settings
from handlers.events import EVENT_TYPES, Event, event_adapter

CHUNK = 5000  # sends in flight before publish_many awaits their acks

EventInput = Event | Mapping[str, Any]


class RoundTripError(ValueError):
    """The serialized event would not decode back to an equal event (never expected; a guard)."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One validated event, ready to send."""

    topic: str
    key: bytes
    value: bytes
    event: Event


def to_event(item: EventInput) -> Event:
    """An event model as is, or a mapping validated with the consumer's adapter (ValidationError)."""
    if isinstance(item, EVENT_TYPES):
        return item  # type: ignore[return-value]
    if isinstance(item, Mapping):
        return event_adapter.validate_python(dict(item))
    if isinstance(item, BaseModel):
        raise TypeError(f"{type(item).__name__} is not an event model (one of {', '.join(c.__name__ for c in EVENT_TYPES)})")
    raise TypeError(f"cannot publish {type(item).__name__}: pass an event model or a dict")


def serialize(event: Event) -> bytes:
    """The record value: model_dump_json(by_alias=True), checked to decode to an equal event with the
    consumer's JSON validation (raises ValidationError, e.g. for a model_construct()ed event)."""
    value = event.model_dump_json(by_alias=True).encode("utf-8")
    decoded = event_adapter.validate_json(value)
    if decoded != event:
        raise RoundTripError(f"{event.event_type} event {event.event_id} does not survive JSON serialization unchanged")
    return value


def default_topics(settings: Settings) -> tuple[str, str]:
    """(users topic, orders topic): the first two of KAFKA_TOPICS, or the only one twice."""
    topics = settings.kafka_topics
    return topics[0], topics[1] if len(topics) > 1 else topics[0]


def route(event: Event, users_topic: str, orders_topic: str) -> str:
    return users_topic if event.event_type.startswith("user.") else orders_topic


def prepare(item: EventInput, users_topic: str, orders_topic: str, topic: str | None = None) -> OutgoingRecord:
    """Validate, serialize, key and route one event. Pure: raises before anything is sent."""
    event = to_event(item)
    return OutgoingRecord(
        topic=topic or route(event, users_topic, orders_topic),
        key=str(event.data.id).encode("ascii"),
        value=serialize(event),
        event=event,
    )


class EventPublisher:
    """Publishes events keyed by entity id with an idempotent, acks=all producer.

    Use as an async context manager (or call start() and stop()). Extra keyword arguments go to
    the AIOKafkaProducer (e.g. linger_ms=5); acks and idempotence stay as build_producer sets them.
    """

    def __init__(self, settings: Settings, **producer_overrides: Any) -> None:
        self.settings = settings
        self.users_topic, self.orders_topic = default_topics(settings)
        self._producer_overrides = producer_overrides
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is not None:
            return
        producer = build_producer(self.settings, **self._producer_overrides)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()  # close whatever connections the failed bootstrap opened
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Flushes what is pending and closes the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> "EventPublisher":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def prepare(self, item: EventInput, topic: str | None = None) -> OutgoingRecord:
        return prepare(item, self.users_topic, self.orders_topic, topic)

    async def publish(self, event: EventInput, *, topic: str | None = None) -> RecordMetadata:
        """Validates, sends and waits for the broker's ack. Raises ValidationError (nothing sent)
        for an invalid event, or the Kafka error if the send fails."""
        record = self.prepare(event, topic)
        (metadata,) = await self._send_and_wait([record])
        return metadata

    async def publish_many(self, events: Iterable[EventInput], *, topic: str | None = None) -> list[RecordMetadata]:
        """Validates every event first (one invalid event raises ValidationError and nothing is
        sent), then sends them all and awaits the acks in bulk. Returns the metadata in input
        order. Per key, records keep their input order (one partition, idempotent producer)."""
        records = [self.prepare(event, topic) for event in events]
        return await self._send_and_wait(records)

    async def _send_and_wait(self, records: list[OutgoingRecord]) -> list[RecordMetadata]:
        producer = self._producer
        if producer is None:
            raise RuntimeError("EventPublisher is not started: use `async with EventPublisher(settings) as pub:`")
        results: list[RecordMetadata] = []
        for start in range(0, len(records), CHUNK):
            futures: list[asyncio.Future] = []
            try:
                for record in records[start : start + CHUNK]:
                    futures.append(await producer.send(record.topic, value=record.value, key=record.key))
            finally:
                # Settle every enqueued send, even when a later send() raised, so no ack is left unobserved.
                outcomes = await asyncio.gather(*futures, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            results.extend(outcomes)  # type: ignore[arg-type]
        return results


class PublisherSettings(Settings):
    """Settings for a service that only publishes: the Kafka settings of Settings, read the same way
    (environment and .env), without requiring DATABASE_URL (which is ignored if set)."""

    database_url: SecretStr | None = None  # type: ignore[assignment]

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:  # replaces the consumer's check
        return value


def load_publisher_settings(**overrides: object) -> PublisherSettings:
    """PublisherSettings from the environment; SettingsError names the variable, never a secret."""
    return load_settings(PublisherSettings, **overrides)  # type: ignore[return-value]
