"""Crashes and outages mid-stream: the final state equals the model, nothing is missing, the DLQ
holds every poison record (at-least-once: duplicates by original offset are allowed)."""

import asyncio
import random
import signal
import threading

import orjson
import pytest

from consumer.generate import Generator, topic_for
from tests.integration.harness import (
    alive,
    assert_matches_model,
    db_positions,
    envelope_messages,
    kcat_publish,
)
from tests.model import ReadModel

pytestmark = pytest.mark.slow


@pytest.fixture
def control(services):
    if services.control is None:
        pytest.fail("fault tests stop and start services: run them with scripts/services.sh (EC_SERVICES_SCRIPT)", pytrace=False)
    return services.control


def _chunks(events: list[dict], topics, n_chunks: int, poison_per_chunk: int, rng: random.Random):
    """Splits the stream into chunks of (topic, messages), with poison records mixed in."""
    size = len(events) // n_chunks + 1
    chunks, poison = [], []
    for i in range(0, len(events), size):
        part = events[i : i + size]
        by_topic: dict[str, list] = {topics.users: [], topics.orders: []}
        for e in part:
            by_topic[topic_for(e, topics.users, topics.orders)].append(e)
        chunk = []
        for topic, evs in by_topic.items():
            messages = envelope_messages(evs)
            for j in range(poison_per_chunk):
                value = b'{"broken": ' + str(len(poison)).encode() + b"}"
                poison.append(value)
                messages.insert(rng.randrange(len(messages) + 1), (b"0", value))
            chunk.append((topic, messages))
        chunks.append(chunk)
    return chunks, poison


def _publish_chunks(bootstrap: str, chunks, pause_s: float) -> threading.Thread:
    def work():
        for chunk in chunks:
            for topic, messages in chunk:
                kcat_publish(bootstrap, topic, messages)
            threading.Event().wait(pause_s)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    return t


async def _assert_dlq(kafka, topics, poison: list[bytes]) -> None:
    dlq = (await kafka.read_all(topics.users + ".dlq")) + (await kafka.read_all(topics.orders + ".dlq"))
    by_origin = {}
    for r in dlq:
        h = {k: v.decode() for k, v in r.headers}
        by_origin[(h["x-original-topic"], h["x-original-partition"], h["x-original-offset"])] = r.value
    assert sorted(by_origin.values()) == sorted(poison)


async def test_sigkill_three_times_mid_stream(kafka, topics, consumers, engine, clean_db):
    rng = random.Random(5)
    events = Generator(seed=23).stream(12_000, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=6, poison_per_chunk=2, rng=rng)
    publisher = _publish_chunks(kafka.bootstrap, chunks, pause_s=1.0)
    env = {"BATCH_MAX_RECORDS": "150"}
    proc = consumers.start(**env)
    kills_mid_stream = 0
    for _ in range(3):
        await asyncio.sleep(rng.uniform(1.0, 2.5))
        ends = await kafka.end_offsets(topics.all)
        positions = await db_positions(engine, topics.group)
        if sum(positions.values()) < sum(ends.values()):
            kills_mid_stream += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc = consumers.start(**env)
    await asyncio.to_thread(publisher.join, 300)
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=180)
    assert consumers.stop(proc) == 0, consumers.log_text()
    assert kills_mid_stream >= 1, "no kill landed while there was lag"

    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)
    await _assert_dlq(kafka, topics, poison)
    positions = await db_positions(engine, topics.group)
    assert {tp: positions.get(tp) for tp in ends if ends[tp]} == {tp: e for tp, e in ends.items() if e}


async def test_postgres_stopped_for_20_seconds_mid_stream(kafka, topics, consumers, engine, clean_db, control):
    rng = random.Random(9)
    events = Generator(seed=31).stream(6_000, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=2, poison_per_chunk=3, rng=rng)
    for topic, messages in chunks[0]:
        kcat_publish(kafka.bootstrap, topic, messages)
    proc = consumers.start(BATCH_MAX_RECORDS="200")
    await kafka.wait_committed(topics.group, topics.all, timeout=120)
    await asyncio.to_thread(control.pg_stop, "fast")
    try:
        for topic, messages in chunks[1]:
            kcat_publish(kafka.bootstrap, topic, messages)
        await asyncio.sleep(20)
        assert alive(proc), "consumer exited while PostgreSQL was down:\n" + consumers.log_text()
    finally:
        await asyncio.to_thread(control.pg_start)
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=180)
    assert alive(proc)
    assert consumers.stop(proc) == 0, consumers.log_text()
    assert "apply failed; retrying" in consumers.log_text() or "dead-letter failed; retrying" in consumers.log_text()

    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)
    await _assert_dlq(kafka, topics, poison)
    assert sum(ends.values()) == len(events) + len(poison)
