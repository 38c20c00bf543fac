"""Scale-out and graceful stop: several `run` processes in one group share the partitions, and
SIGTERM in the middle of the stream finishes and commits the batch in flight."""

import asyncio
import json
import random
import signal

import pytest

from consumer.generate import Generator
from tests.integration.harness import alive, db_positions, kcat_publish
from tests.integration.test_faults import _assert_outcome, _chunks, _publish_chunks

pytestmark = pytest.mark.slow


def _stopped_stats(log_text: str) -> dict:
    for line in reversed(log_text.splitlines()):
        if '"stopped"' in line:
            return json.loads(line)
    raise AssertionError("no 'stopped' line in:\n" + log_text[-3000:])


async def test_three_processes_share_partitions_while_members_die_join_and_leave(kafka, topics, consumers, engine, clean_db):
    rng = random.Random(17)
    events = Generator(seed=41).stream(15_000, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=6, poison_per_chunk=2, rng=rng)
    env = {"BATCH_MAX_RECORDS": "200"}
    procs = [consumers.start(**env) for _ in range(3)]
    await asyncio.sleep(3)  # let the group form before the stream starts
    publisher = _publish_chunks(kafka.bootstrap, chunks, pause_s=1.0)
    await asyncio.sleep(2.5)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=30)
    await asyncio.sleep(1.5)
    procs.append(consumers.start(**env))
    await asyncio.sleep(2.5)
    procs.append(consumers.start(**env))  # a second one joins...
    await asyncio.sleep(2.0)
    assert consumers.stop(procs[2]) == 0  # ...and another leaves gracefully, mid-stream
    await asyncio.to_thread(publisher.join, 300)
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=240)
    for p in (procs[1], procs[3], procs[4]):
        assert alive(p)
        assert consumers.stop(p) == 0

    await _assert_outcome(kafka, topics, engine, events, poison)
    positions = await db_positions(engine, topics.group)
    assert {tp: positions.get(tp, 0) for tp in ends} == ends
    # The partitions really were shared: the survivors each consumed part of the stream.
    consumed = [_stopped_stats(consumers.log_text(i))["consumed"] for i in (1, 2, 3, 4)]
    assert sum(1 for c in consumed if c > 0) >= 2, consumed
    logs = [consumers.log_text(i) for i in range(5)]
    assert all("partitions assigned" in text for text in logs)


async def test_sigterm_mid_stream_exits_0_and_next_start_neither_loses_nor_reapplies(
    kafka, topics, consumers, engine, clean_db
):
    events = Generator(seed=43).stream(30_000, duplicates=0.05, older=0.05)
    chunks, poison = _chunks(events, topics, n_chunks=1, poison_per_chunk=3, rng=random.Random(3))
    for topic, messages in chunks[0]:
        kcat_publish(kafka.bootstrap, topic, messages)
    total = len(events) + len(poison)
    proc = consumers.start(BATCH_MAX_RECORDS="1000")
    # Wait for the first progress, then stop while most of the stream is still ahead.
    for _ in range(400):
        if sum((await db_positions(engine, topics.group)).values()) > 0:
            break
        await asyncio.sleep(0.05)
    assert consumers.stop(proc, signal.SIGTERM) == 0, consumers.log_text()
    first = _stopped_stats(consumers.log_text())
    after_stop_db = await db_positions(engine, topics.group)
    after_stop_kafka = await kafka.committed(topics.group)
    done = sum(after_stop_db.values())
    assert 0 < done < total, "SIGTERM did not land mid-stream"
    # Everything the first run consumed is in the database and in Kafka: the batch in flight was finished.
    assert first["consumed"] == done
    assert {tp: after_stop_kafka.get(tp, 0) for tp in after_stop_db} == after_stop_db

    proc = consumers.start(BATCH_MAX_RECORDS="1000")
    await kafka.wait_committed(topics.group, topics.all, timeout=180)
    assert consumers.stop(proc) == 0
    second = _stopped_stats(consumers.log_text())
    assert second["consumed"] == total - done  # nothing lost, nothing fetched twice
    await _assert_outcome(kafka, topics, engine, events, poison)
