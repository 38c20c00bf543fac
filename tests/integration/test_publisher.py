"""EventPublisher against the real broker: what it sends is read back with a plain consumer and
decoded with the consumer's own decode(); keys are the entity ids; partitioning is the same as
kcat's (librdkafka murmur2) for the same keys; invalid input raises before anything is sent."""

import os
import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import orjson
import pytest
from pydantic import ValidationError

import consumer.publisher as publisher_module
from consumer.generate import Generator
from consumer.publisher import EventPublisher, default_topics, load_publisher_settings, prepare, to_event
from consumer.settings import Settings, SettingsError
from handlers.decode import Poison, decode
from handlers.events import BIGINT_MAX, OrderCreated, OrderState, UserState, UserUpdated
from tests.integration.harness import ROOT, KafkaHelper, Topics, kcat_publish
from tests.services import Services


def settings_for(services: Services, topics: Topics) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        kafka_bootstrap_servers=services.kafka_bootstrap,
        kafka_topics=[topics.users, topics.orders],
        database_url=services.database_url,
    )


def tricky_events() -> list:
    """Typed events whose serialization could go wrong: Decimal totals, offsets, big ids, unicode."""
    plus_five = timezone(timedelta(hours=5, minutes=30))
    events: list = []
    for i, total in enumerate([Decimal("0"), Decimal("12.30"), Decimal("0.1"), Decimal("9999999999.99"), Decimal("1E+2")]):
        events.append(
            OrderCreated(
                event_type="order.created",
                event_id=UUID(int=i + 1, version=4),
                occurred_at=datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=plus_five),
                version=1,
                data=OrderState(id=BIGINT_MAX - i, user_id=BIGINT_MAX, total=total, status="paid"),
            )
        )
    events.append(
        UserUpdated(
            event_type="user.updated",
            event_id=UUID(int=99, version=4),
            occurred_at=datetime(2026, 3, 1, tzinfo=timezone.utc),
            version=BIGINT_MAX,
            data=UserState(id=BIGINT_MAX, email="zoë@example.com", name="Zoë \"quoted\" \\ 日本", is_active=False),
        )
    )
    # Plain dicts as a producer would build them: a float total, a string total, extra fields.
    events.append({"event_id": str(UUID(int=100, version=4)), "event_type": "order.updated", "occurred_at": "2026-03-01T00:00:00+02:00",
                   "version": 2, "data": {"id": 5, "user_id": 6, "total": 19.99, "status": "shipped"}, "extra": 1})
    events.append({"event_id": str(UUID(int=101, version=4)), "event_type": "order.cancelled", "occurred_at": "2026-03-01T00:00:00Z",
                   "version": 3, "data": {"id": 5}})
    return events


async def test_publish_many_round_trips_keyed_and_routed(
    kafka: KafkaHelper, topics: Topics, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher_module, "CHUNK", 97)  # several bulk-ack rounds
    inputs = tricky_events() + Generator(seed=11).stream(400, duplicates=0.05, older=0.05)
    expected = [to_event(item) for item in inputs]

    async with EventPublisher(settings_for(services, topics)) as pub:
        metas = await pub.publish_many(inputs)

    assert len(metas) == len(inputs)
    sent = {(m.topic, m.partition, m.offset): event for m, event in zip(metas, expected)}
    assert len(sent) == len(inputs), "every record got its own offset"
    records = await kafka.read_all(topics.users) + await kafka.read_all(topics.orders)
    assert len(records) == len(inputs)
    for r in records:
        event = decode(r.value)
        assert not isinstance(event, Poison), f"{r.topic}@{r.offset}: {event}"
        assert event == sent[(r.topic, r.partition, r.offset)], "the value decodes to the event sent at that offset"
        assert r.key == str(event.data.id).encode()
        assert r.topic == (topics.users if event.event_type.startswith("user.") else topics.orders)

    # Per key: one partition, offsets in input order.
    per_key: dict[tuple[str, int], list] = defaultdict(list)
    for m, event in zip(metas, expected):
        per_key[(m.topic, event.data.id)].append(m)
    for key, ms in per_key.items():
        assert len({m.partition for m in ms}) == 1, f"{key} spread over partitions"
        assert [m.offset for m in ms] == sorted(m.offset for m in ms), f"{key} out of order"

    # Decimal totals travel as strings, never as binary floats.
    for r in records:
        body = orjson.loads(r.value)
        if "total" in body["data"]:
            assert isinstance(body["data"]["total"], str)


async def test_publish_one_with_default_and_explicit_topic(kafka: KafkaHelper, topics: Topics, services: Services) -> None:
    user = Generator(seed=3).envelope("user.created", 1, {"id": 77, "email": "a@example.com", "name": "A"})
    async with EventPublisher(settings_for(services, topics)) as pub:
        routed = await pub.publish(user)
        explicit = await pub.publish(user, topic=topics.orders)
    assert routed.topic == topics.users and explicit.topic == topics.orders
    for topic in topics.all:
        (record,) = await kafka.read_all(topic)
        assert record.key == b"77"
        assert decode(record.value) == to_event(user)


async def test_partitioning_matches_kcat_murmur2(kafka: KafkaHelper, topics: Topics, services: Services) -> None:
    """Same keys, same partition count: EventPublisher (aiokafka) and kcat (librdkafka murmur2) agree."""
    events = [Generator(seed=i).envelope("user.created", 1, {"id": i, "email": f"u{i}@example.com", "name": "U"}) for i in range(1, 301)]
    async with EventPublisher(settings_for(services, topics)) as pub:
        metas = await pub.publish_many(events)  # to topics.users
    records = [prepare(e, topics.users, topics.orders) for e in events]
    kcat_publish(services.kafka_bootstrap, topics.orders, [(r.key, r.value) for r in records])  # the same bytes

    ours = {str(e["data"]["id"]).encode(): m.partition for e, m in zip(events, metas)}
    theirs = {r.key: r.partition for r in await kafka.read_all(topics.orders)}
    assert theirs == ours
    assert len(set(ours.values())) == 3, "300 keys should use all 3 partitions"


async def test_invalid_input_raises_before_anything_is_sent(kafka: KafkaHelper, topics: Topics, services: Services) -> None:
    gen = Generator(seed=5)
    valid = gen.stream(20)
    bad_email = dict(valid[0], event_type="user.created", data={"id": 1, "email": "not-an-email", "name": "X"})
    bad_total = dict(valid[0], event_type="order.created", data={"id": 1, "user_id": 2, "total": "1.234", "status": "paid"})
    string_id = dict(valid[0], event_type="user.deleted", data={"id": "1"})
    unknown = dict(valid[0], event_type="user.renamed")
    constructed = UserUpdated.model_construct(  # skips validation: the JSON round-trip check catches it
        event_type="user.updated", event_id=UUID(int=1, version=4), occurred_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        version=0, data=UserState.model_construct(id=1, email="x@example.com", name="X", is_active=True),
    )

    async with EventPublisher(settings_for(services, topics)) as pub:
        for bad in (bad_email, bad_total, string_id, unknown, constructed):
            with pytest.raises(ValidationError):
                await pub.publish_many([*valid, bad])
            with pytest.raises(ValidationError):
                await pub.publish(bad)
        with pytest.raises(TypeError):
            await pub.publish(UserState(id=1, email="x@example.com", name="X"))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await pub.publish(orjson.dumps(valid[0]))  # type: ignore[arg-type]

    ends = await kafka.end_offsets(topics.all)
    assert ends and all(end == 0 for end in ends.values()), f"something was sent: {ends}"


async def test_publish_before_start_is_an_error(topics: Topics, services: Services) -> None:
    pub = EventPublisher(settings_for(services, topics))
    with pytest.raises(RuntimeError, match="not started"):
        await pub.publish(Generator().stream(1)[0])


def test_publisher_settings_do_not_need_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("KAFKA_TOPICS", "a,b")
    settings = load_publisher_settings(_env_file=None)
    assert settings.database_url is None and settings.kafka_topics == ["a", "b"]
    assert default_topics(settings) == ("a", "b")
    monkeypatch.setenv("DATABASE_URL", "mysql://someone:secret@db/x")  # not ours to judge
    assert load_publisher_settings(_env_file=None).kafka_topics == ["a", "b"]
    monkeypatch.setenv("KAFKA_TOPICS", "only")
    assert default_topics(load_publisher_settings(_env_file=None)) == ("only", "only")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "carrier-pigeon")
    with pytest.raises(SettingsError, match="KAFKA_SECURITY_PROTOCOL") as err:
        load_publisher_settings(_env_file=None)
    assert "secret" not in str(err.value)


async def test_example_publishes_a_user_and_an_order(kafka: KafkaHelper, topics: Topics, services: Services) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap, KAFKA_TOPICS=f"{topics.users},{topics.orders}")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "publish_example.py"), "314", "2718"],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (user,) = await kafka.read_all(topics.users)
    (order,) = await kafka.read_all(topics.orders)
    assert user.key == b"314" and decode(user.value).event_type == "user.created"
    assert order.key == b"2718" and decode(order.value).data.user_id == 314
    assert f"-> {topics.users}[{user.partition}]@0" in proc.stdout
