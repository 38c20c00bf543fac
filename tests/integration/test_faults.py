"""Crashes and outages mid-stream: the final state equals the model, nothing is missing, the DLQ
holds every poison record (at-least-once: duplicates by original offset are allowed)."""

import asyncio
import json
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


async def _assert_outcome(kafka, topics, engine, events: list[dict], poison: list[bytes]) -> None:
    """The tables equal the model of `events`, and the DLQ holds exactly `poison`."""
    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)
    await _assert_dlq(kafka, topics, poison)


async def _assert_dlq(kafka, topics, poison: list[bytes]) -> None:
    dlq = (await kafka.read_all(topics.users + ".dlq")) + (await kafka.read_all(topics.orders + ".dlq"))
    by_origin = {}
    for r in dlq:
        h = {k: v.decode() for k, v in r.headers}
        by_origin[(h["x-original-topic"], h["x-original-partition"], h["x-original-offset"])] = r.value
    assert sorted(by_origin.values()) == sorted(poison)


class PositionWatcher:
    """Samples the group's database positions every 100 ms and records any that moved backwards."""

    def __init__(self, engine, group: str) -> None:
        self.backwards: list = []
        self._seen: dict = {}
        self._task = asyncio.create_task(self._watch(engine, group))

    async def _watch(self, engine, group: str) -> None:
        while True:
            for tp, pos in (await db_positions(engine, group)).items():
                if pos < self._seen.get(tp, 0):
                    self.backwards.append((tp, self._seen[tp], pos))
                self._seen[tp] = max(self._seen.get(tp, 0), pos)
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self._task.cancel()


@pytest.mark.parametrize(("kills", "n_events"), [(3, 12_000), (5, 20_000)], ids=["3-kills", "5-kills-20k"])
async def test_sigkill_at_random_moments_mid_stream(kafka, topics, consumers, engine, clean_db, kills, n_events):
    rng = random.Random(5 + kills)
    events = Generator(seed=23 + kills).stream(n_events, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=6, poison_per_chunk=2, rng=rng)
    publisher = _publish_chunks(kafka.bootstrap, chunks, pause_s=1.0)
    env = {"BATCH_MAX_RECORDS": "150"}
    proc = consumers.start(**env)
    kills_mid_stream = 0
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
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

    await _assert_outcome(kafka, topics, engine, events, poison)
    positions = await db_positions(engine, topics.group)
    assert {tp: positions.get(tp) for tp in ends if ends[tp]} == {tp: e for tp, e in ends.items() if e}


@pytest.mark.parametrize("outage_s", [20, 30])
async def test_postgres_stopped_mid_stream(kafka, topics, consumers, engine, clean_db, control, outage_s):
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
        await asyncio.sleep(outage_s)
        assert alive(proc), "consumer exited while PostgreSQL was down:\n" + consumers.log_text()
    finally:
        await asyncio.to_thread(control.pg_start)
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=180)
    assert alive(proc)
    assert consumers.stop(proc) == 0, consumers.log_text()
    assert "apply failed; retrying" in consumers.log_text() or "dead-letter failed; retrying" in consumers.log_text()

    await _assert_outcome(kafka, topics, engine, events, poison)
    assert sum(ends.values()) == len(events) + len(poison)


async def test_postgres_restarted_fast_mid_batch(kafka, topics, consumers, engine, clean_db, control):
    """A fast shutdown terminates the consumer's sessions inside open transactions."""
    rng = random.Random(11)
    events = Generator(seed=29).stream(20_000, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=1, poison_per_chunk=3, rng=rng)
    for topic, messages in chunks[0]:
        kcat_publish(kafka.bootstrap, topic, messages)
    proc = consumers.start(BATCH_MAX_RECORDS="500")
    for _ in range(400):  # restart once the stream is flowing
        if sum((await db_positions(engine, topics.group)).values()) > 0:
            break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(control.pg_stop, "fast")
    await asyncio.to_thread(control.pg_start)
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=180)
    assert alive(proc)
    assert consumers.stop(proc) == 0, consumers.log_text()
    await _assert_outcome(kafka, topics, engine, events, poison)
    assert sum(ends.values()) == len(events) + len(poison)


async def test_kafka_broker_restarted_mid_stream(kafka, topics, consumers, engine, clean_db, control):
    """The consumer reconnects by itself: same process before and after the broker restart."""
    rng = random.Random(13)
    events = Generator(seed=37).stream(8_000, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=2, poison_per_chunk=2, rng=rng)
    for topic, messages in chunks[0]:
        kcat_publish(kafka.bootstrap, topic, messages)
    proc = consumers.start(BATCH_MAX_RECORDS="200")
    await kafka.wait_committed(topics.group, topics.all, timeout=120)
    await kafka.close()
    await asyncio.to_thread(control.kafka_stop)
    try:
        await asyncio.sleep(5)
        assert alive(proc), "consumer exited while Kafka was down:\n" + consumers.log_text()
    finally:
        await asyncio.to_thread(control.kafka_start)
        await kafka.start()
    for topic, messages in chunks[1]:
        kcat_publish(kafka.bootstrap, topic, messages)
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=240)
    assert alive(proc)
    assert consumers.stop(proc) == 0, consumers.log_text()
    await _assert_outcome(kafka, topics, engine, events, poison)
    assert sum(ends.values()) == len(events) + len(poison)


async def test_frozen_member_comes_back_without_moving_offsets_backwards(kafka, topics, consumers, engine, clean_db):
    """SIGSTOP freezes one of two members past its session timeout (the zombie case of a stall past
    max.poll.interval.ms); the other takes over; SIGCONT revives it. Its late batch and late commit
    must neither move any position backwards nor lose or double-apply anything."""
    rng = random.Random(19)
    events = Generator(seed=47).stream(12_000, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=6, poison_per_chunk=1, rng=rng)
    env = {"BATCH_MAX_RECORDS": "100", "SESSION_TIMEOUT_MS": "6000", "MAX_POLL_INTERVAL_MS": "8000"}
    a = consumers.start(**env)
    b = consumers.start(**env)
    await asyncio.sleep(3)
    publisher = _publish_chunks(kafka.bootstrap, chunks, pause_s=1.0)

    watcher = PositionWatcher(engine, topics.group)
    try:
        await asyncio.sleep(1.5)
        a.send_signal(signal.SIGSTOP)
        await asyncio.sleep(12)  # past session timeout and max poll interval: b takes everything
        a.send_signal(signal.SIGCONT)
        await asyncio.to_thread(publisher.join, 300)
        ends = await kafka.wait_committed(topics.group, topics.all, timeout=240)
    finally:
        watcher.stop()
    assert not watcher.backwards, f"database positions moved backwards: {watcher.backwards}"
    assert alive(a) and alive(b)
    assert consumers.stop(a) == 0 and consumers.stop(b) == 0
    committed = await kafka.committed(topics.group)
    assert {tp: committed.get(tp, 0) for tp in ends} == ends
    await _assert_outcome(kafka, topics, engine, events, poison)


async def test_database_rejects_one_row_it_is_dead_lettered_and_the_rest_applies(kafka, topics, consumers, engine, clean_db):
    from sqlalchemy import text

    gen = Generator(seed=53)
    good = [gen.envelope("user.created", 1, gen.user_state(i)) for i in range(1, 301)]
    bad = gen.envelope("user.created", 1, {"id": 9999, "email": "bad@example.com", "name": "Rejected By Check"})
    later = gen.envelope("user.updated", 2, gen.user_state(5))
    stream = good[:150] + [bad] + good[150:] + [later]
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE users ADD CONSTRAINT ck_users_test_no_rejected CHECK (name <> 'Rejected By Check')"))
    try:
        kcat_publish(kafka.bootstrap, topics.users, [(str(e["data"]["id"]).encode(), orjson.dumps(e)) for e in stream])
        proc = consumers.start()
        await kafka.wait_committed(topics.group, topics.all, timeout=120)
        assert consumers.stop(proc) == 0, consumers.log_text()
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE users DROP CONSTRAINT ck_users_test_no_rejected"))
    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in stream if e is not bad])
    await assert_matches_model(engine, model)
    dlq = await kafka.read_all(topics.users + ".dlq")
    assert [r.value for r in dlq] == [orjson.dumps(bad)]
    headers = {k: v.decode() for k, v in dlq[0].headers}
    assert headers["x-error-type"] == "database_error"
    assert "ck_users_test_no_rejected" in headers["x-error-message"]


async def test_dlq_write_failing_holds_the_source_offset_until_it_succeeds(kafka, topics, consumers, engine, clean_db):
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from tests.integration.harness import kcat_count

    # The DLQ topic refuses every record (max.message.bytes too small): producing fails.
    dlq = topics.users + ".dlq"
    await kafka.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, dlq, configs={"max.message.bytes": "16"})])
    gen = Generator(seed=59)
    before = [gen.envelope("user.created", 1, gen.user_state(i)) for i in range(1, 51)]
    after = [gen.envelope("user.created", 1, gen.user_state(i)) for i in range(51, 101)]
    poison_value = b'{"this is": "not an event"}'
    messages = [(b"1", orjson.dumps(e)) for e in before] + [(b"1", poison_value)] + [(b"1", orjson.dumps(e)) for e in after]
    kcat_publish(kafka.bootstrap, topics.users, messages)  # one key: one partition, in this order
    proc = consumers.start(RETRY_MAX_S="0.5")
    await asyncio.sleep(8)
    committed = await kafka.committed(topics.group)
    positions = await db_positions(engine, topics.group)
    poison_offset = len(before)
    assert all(off <= poison_offset for off in committed.values()), committed
    assert all(pos <= poison_offset for pos in positions.values()), positions
    assert "dead-letter failed; retrying" in consumers.log_text()
    assert kcat_count(kafka.bootstrap, dlq) == 0

    await kafka.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, dlq, configs={"max.message.bytes": "1048576"})])
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=120)
    assert consumers.stop(proc) == 0
    assert sum(ends.values()) == 101
    records = await kafka.read_all(dlq)
    assert [r.value for r in records] == [poison_value]
    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in before + after])
    await assert_matches_model(engine, model)


def _last_assignment(log_text: str) -> list[str]:
    for line in reversed(log_text.splitlines()):
        if '"partitions assigned"' in line:
            return json.loads(line)["partitions"]
    return []


async def test_member_stalled_past_max_poll_interval_comes_back(kafka, topics, consumers, engine, clean_db):
    """One member's batch waits on a database lock (the event loop and heartbeats keep running)
    for longer than max.poll.interval.ms: aiokafka makes it leave the group and the other member
    takes its partitions (and waits on the same lock). When the lock goes, the stalled member's
    late batch meets the position fence; nothing moves backwards, nothing is lost."""
    from sqlalchemy import text

    gen = Generator(seed=83)
    first = gen.stream(3_000)
    more = Generator(seed=89, user_id_base=100_000, order_id_base=100_000).stream(6_000)
    chunks1, _ = _chunks(first, topics, n_chunks=1, poison_per_chunk=0, rng=random.Random(1))
    chunks2, poison = _chunks(more, topics, n_chunks=3, poison_per_chunk=1, rng=random.Random(2))
    env = {"BATCH_MAX_RECORDS": "200", "MAX_POLL_INTERVAL_MS": "5000", "SHUTDOWN_TIMEOUT_S": "5", "RETRY_MAX_S": "1"}
    a = consumers.start(**env)
    b = consumers.start(**env)
    for topic, messages in chunks1[0]:
        kcat_publish(kafka.bootstrap, topic, messages)
    await kafka.wait_committed(topics.group, topics.all, timeout=120)
    for _ in range(300):  # both members hold partitions before the stall begins
        if all(_last_assignment(consumers.log_text(i)) for i in (0, 1)):
            break
        await asyncio.sleep(0.1)
    assert all(_last_assignment(consumers.log_text(i)) for i in (0, 1)), consumers.all_logs()
    revocations_before = consumers.all_logs().count('"partitions revoked"')

    watcher = PositionWatcher(engine, topics.group)
    try:
        async with engine.connect() as locker:
            # Hold the position row of users partition 0: whoever owns it blocks in its batch.
            await locker.execute(
                text("SELECT 1 FROM consumer_offsets WHERE group_id = :g AND topic = :t AND partition = 0 FOR UPDATE"),
                {"g": topics.group, "t": topics.users},
            )
            publisher = _publish_chunks(kafka.bootstrap, chunks2, pause_s=0.5)
            await asyncio.sleep(12)  # well past max.poll.interval.ms
            await locker.rollback()
        await asyncio.to_thread(publisher.join, 300)
        ends = await kafka.wait_committed(topics.group, topics.all, timeout=240)
    finally:
        watcher.stop()
    assert not watcher.backwards, f"database positions moved backwards: {watcher.backwards}"
    assert alive(a) and alive(b)
    assert consumers.stop(a) == 0 and consumers.stop(b) == 0
    # The stall really pushed a member out of the group: the partitions moved while it waited.
    assert consumers.all_logs().count('"partitions revoked"') > revocations_before, consumers.all_logs()
    committed = await kafka.committed(topics.group)
    assert {tp: committed.get(tp, 0) for tp in ends} == ends
    await _assert_outcome(kafka, topics, engine, first + more, poison)
