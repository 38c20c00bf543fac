"""The contract end to end: events published by kcat, consumed by the real `event-consumer run`
process, checked against the model, the DLQ and the group's committed offsets."""

import random
import signal

import orjson

from consumer.generate import Generator, topic_for
from tests.integration.harness import (
    assert_matches_model,
    envelope_messages,
    kcat_publish,
)
from tests.model import ReadModel

DLQ_HEADERS = {"x-error-type", "x-error-message", "x-original-topic", "x-original-partition", "x-original-offset"}


def malformed_values(n: int, rng: random.Random) -> list[tuple[bytes, bytes, str]]:
    """(key, value, expected x-error-type) for n malformed records of every kind."""
    good = {
        "event_id": "6f1c1d2e-4f70-4c0e-9b1e-2a3b4c5d6e7f",
        "event_type": "user.created",
        "occurred_at": "2026-03-01T10:00:00+02:00",
        "version": 1,
        "data": {"id": 7, "email": "a@example.com", "name": "A"},
    }
    kinds = [
        (b"\xff\xfe\x00garbage", "not_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'"just a string"', "not_object"),
        (orjson.dumps({**good, "event_type": "user.exploded"}), "unknown_event_type"),
        (orjson.dumps({**good, "version": 0}), "validation_error"),
        (orjson.dumps({**good, "data": {"id": 7, "email": "not-an-email", "name": "A"}}), "validation_error"),
        (orjson.dumps({**good, "occurred_at": "2026-03-01T10:00:00"}), "validation_error"),
        (orjson.dumps({k: v for k, v in good.items() if k != "event_id"}), "validation_error"),
        (
            orjson.dumps({**good, "event_type": "order.created", "data": {"id": 1, "user_id": 1, "total": "1.001", "status": "paid"}}),
            "validation_error",
        ),
    ]
    out = []
    for i in range(n):
        value, kind = kinds[i % len(kinds)]
        out.append((str(rng.randint(1, 10**6)).encode(), value + b" " * (i // len(kinds)) if kind != "not_utf8" else value + bytes([0x80 + i % 64]), kind))
    return out


async def test_one_event_lands_in_one_row(kafka, topics, consumers, engine, clean_db):
    event = Generator(seed=7).envelope("user.created", 1, {"id": 42, "email": "ada@example.com", "name": "Ada Lovelace"})
    kcat_publish(kafka.bootstrap, topics.users, envelope_messages([event]))
    proc = consumers.start()
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=90)
    assert consumers.stop(proc) == 0, consumers.log_text()
    model = ReadModel()
    model.apply_bytes([orjson.dumps(event)])
    await assert_matches_model(engine, model)
    assert sum(ends.values()) == 1


async def test_ten_thousand_events_with_duplicates_old_versions_and_poison(kafka, topics, consumers, engine, clean_db):
    rng = random.Random(2)
    events = Generator(seed=11).stream(10_000, duplicates=0.05, older=0.05)
    by_topic: dict[str, list] = {topics.users: [], topics.orders: []}
    for e in events:
        by_topic[topic_for(e, topics.users, topics.orders)].append(e)
    poison = malformed_values(50, rng)
    # Poison records go in among the valid ones, on both topics.
    for topic, evs in by_topic.items():
        messages = envelope_messages(evs)
        for key, value, _ in poison[: 25] if topic == topics.users else poison[25:]:
            messages.insert(rng.randrange(len(messages)), (key, value))
        kcat_publish(kafka.bootstrap, topic, messages)

    proc = consumers.start()
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=180)
    assert consumers.stop(proc, signal.SIGTERM) == 0, consumers.log_text()

    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)

    dlq = (await kafka.read_all(topics.users + ".dlq")) + (await kafka.read_all(topics.orders + ".dlq"))
    assert len(dlq) == 50
    assert sorted(r.value for r in dlq) == sorted(v for _, v, _ in poison)
    assert sorted(r.key for r in dlq) == sorted(k for k, _, _ in poison)
    expected_type = {v: kind for _, v, kind in poison}
    for r in dlq:
        headers = {k: v.decode() for k, v in r.headers}
        assert DLQ_HEADERS <= headers.keys()
        assert headers["x-error-type"] == expected_type[r.value]
        assert headers["x-original-topic"] + ".dlq" == r.topic
        assert headers["x-error-message"]
        int(headers["x-original-partition"]), int(headers["x-original-offset"])

    committed = await kafka.committed(topics.group)
    assert {tp: committed.get(tp) for tp in ends} == ends
    assert sum(ends.values()) == 10_050
