"""`event-consumer offsets show|reset` against the real broker and database: the group's position
in Kafka and in `consumer_offsets` reported side by side, and moved together."""

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime, timezone

import orjson
from aiokafka import TopicPartition
from sqlalchemy import text

from consumer.generate import Generator, topic_for
from tests.integration.harness import (
    assert_matches_model,
    db_positions,
    envelope_messages,
    kcat_publish,
    wait_db_positions,
)
from tests.model import ReadModel


def cli(env: dict[str, str], cwd, *args: str, stdin=subprocess.DEVNULL, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env=env,
        cwd=str(cwd),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def show_json(env, cwd) -> dict:
    proc = cli(env, cwd, "offsets", "show", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def publish_events(kafka, topics, events: list[dict]) -> None:
    by_topic: dict[str, list] = {topics.users: [], topics.orders: []}
    for e in events:
        by_topic[topic_for(e, topics.users, topics.orders)].append(e)
    for topic, evs in by_topic.items():
        kcat_publish(kafka.bootstrap, topic, envelope_messages(evs))


async def table_rows(engine) -> tuple[list, list]:
    async with engine.connect() as conn:
        users = [tuple(r) for r in await conn.execute(text("SELECT * FROM users ORDER BY id"))]
        orders = [tuple(r) for r in await conn.execute(text("SELECT * FROM orders ORDER BY id"))]
    return users, orders


def stopped_stats(log_text: str) -> dict:
    for line in reversed(log_text.splitlines()):
        if '"stopped"' in line:
            return json.loads(line)
    raise AssertionError("no 'stopped' line in:\n" + log_text[-3000:])


async def consume_to_end(kafka, topics, consumers, engine) -> dict[TopicPartition, int]:
    proc = consumers.start()
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=120)
    await wait_db_positions(engine, topics.group, ends, timeout=60)
    assert consumers.stop(proc) == 0, consumers.log_text()
    return ends


async def wait_member(kafka, group: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for response in await kafka.admin.describe_consumer_groups([group]):
            for g in response.to_object()["groups"]:
                if g["group"] == group and g["members"] and g["state"] == "Stable":
                    return
        await asyncio.sleep(0.3)
    raise AssertionError(f"group {group} never got a stable member")


async def test_show_then_reset_to_earliest_reprocesses_to_the_same_state(kafka, topics, consumers, consumer_env, engine, clean_db, tmp_path):
    events = Generator(seed=5).stream(600, duplicates=0.05, older=0.05)
    publish_events(kafka, topics, events)
    ends = await consume_to_end(kafka, topics, consumers, engine)
    assert all(end > 0 for end in ends.values()), ends  # every partition has records

    doc = show_json(consumer_env, tmp_path)
    assert doc["group_id"] == topics.group and doc["members"] == 0
    rows = {TopicPartition(p["topic"], p["partition"]): p for p in doc["partitions"]}
    assert set(rows) == set(ends)
    for tp, end in ends.items():
        assert rows[tp]["committed"] == rows[tp]["database"] == rows[tp]["end"] == end, rows[tp]
        assert rows[tp]["lag"] == 0
    assert doc["total_lag"] == 0
    table = cli(consumer_env, tmp_path, "offsets", "show")
    assert table.returncode == 0, table.stderr
    assert "COMMITTED" in table.stdout and "LAG" in table.stdout and topics.users in table.stdout

    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)
    before = await table_rows(engine)

    reset = cli(consumer_env, tmp_path, "offsets", "reset", "--to", "earliest", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert "NEW" in reset.stdout  # the plan is printed
    committed = await kafka.committed(topics.group)
    assert {tp: committed.get(tp) for tp in ends} == {tp: 0 for tp in ends}
    positions = await db_positions(engine, topics.group)
    assert {tp: positions.get(tp) for tp in ends} == {tp: 0 for tp in ends}
    doc = show_json(consumer_env, tmp_path)
    assert doc["total_lag"] == sum(ends.values())

    # The tables stay as they were; the next run reprocesses everything, changing nothing.
    await consume_to_end(kafka, topics, consumers, engine)
    assert stopped_stats(consumers.log_text())["consumed"] == sum(ends.values())
    assert await table_rows(engine) == before
    await assert_matches_model(engine, model)
    doc = show_json(consumer_env, tmp_path)
    for p in doc["partitions"]:
        assert p["committed"] == p["database"] == p["end"] and p["lag"] == 0, p


async def test_reset_refuses_while_a_consumer_runs(kafka, topics, consumers, consumer_env, engine, clean_db, tmp_path):
    events = Generator(seed=6).stream(100)
    publish_events(kafka, topics, events)
    proc = consumers.start()
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=120)
    await wait_member(kafka, topics.group)

    refused = cli(consumer_env, tmp_path, "offsets", "reset", "--to", "earliest", "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refusing to reset" in refused.stderr and "active member" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    doc = show_json(consumer_env, tmp_path)
    assert doc["members"] >= 1
    assert consumers.stop(proc) == 0, consumers.log_text()

    committed = await kafka.committed(topics.group)
    positions = await db_positions(engine, topics.group)
    assert {tp: committed.get(tp) for tp in ends} == ends
    assert {tp: positions.get(tp) for tp in ends if ends[tp]} == {tp: e for tp, e in ends.items() if e}


async def test_reset_to_a_timestamp_lands_on_the_offsets_of_that_time(kafka, topics, consumers, consumer_env, engine, clean_db, tmp_path):
    gen = Generator(seed=8)
    first = gen.stream(300)
    publish_events(kafka, topics, first)
    time.sleep(1.5)
    cut = datetime.now(timezone.utc)
    time.sleep(1.5)
    publish_events(kafka, topics, gen.stream(300))
    ends_first = {tp: 0 for tp in await kafka.end_offsets(topics.all)}
    # Offsets at the cut = how many records each partition had before it.
    for r in (await kafka.read_all(topics.users)) + (await kafka.read_all(topics.orders)):
        tp = TopicPartition(r.topic, r.partition)
        if r.timestamp < cut.timestamp() * 1000:
            ends_first[tp] = max(ends_first[tp], r.offset + 1)
    ends = await consume_to_end(kafka, topics, consumers, engine)

    # Only one topic: the other keeps its position.
    stamp = cut.isoformat().replace("+00:00", "Z")
    proc = cli(consumer_env, tmp_path, "offsets", "reset", "--to", stamp, "--topic", topics.users, "--yes")
    assert proc.returncode == 0, proc.stderr
    expected = {tp: (ends_first[tp] if tp.topic == topics.users else ends[tp]) for tp in ends}
    committed = await kafka.committed(topics.group)
    positions = await db_positions(engine, topics.group)
    assert {tp: committed.get(tp) for tp in ends} == expected
    assert {tp: positions.get(tp) for tp in ends} == expected
    assert any(expected[tp] < ends[tp] for tp in ends if tp.topic == topics.users)

    # A time after every record: the end offsets.
    proc = cli(consumer_env, tmp_path, "offsets", "reset", "--to", "2999-01-01T00:00:00+00:00", "--yes")
    assert proc.returncode == 0, proc.stderr
    committed = await kafka.committed(topics.group)
    assert {tp: committed.get(tp) for tp in ends} == ends
    assert {tp: (await db_positions(engine, topics.group)).get(tp) for tp in ends} == ends


async def test_reset_without_yes_and_no_terminal_refuses(kafka, topics, consumers, consumer_env, engine, clean_db, tmp_path):
    publish_events(kafka, topics, Generator(seed=9).stream(60))
    ends = await consume_to_end(kafka, topics, consumers, engine)
    for stdin in (subprocess.DEVNULL, None):
        kwargs = {"stdin": stdin} if stdin is not None else {}
        if stdin is None:  # "y" piped in is still not a terminal
            proc = subprocess.run(
                [sys.executable, "-m", "consumer", "offsets", "reset", "--to", "earliest"],
                env=consumer_env, cwd=str(tmp_path), input="y\n", capture_output=True, text=True, timeout=90,
            )
        else:
            proc = cli(consumer_env, tmp_path, "offsets", "reset", "--to", "earliest", **kwargs)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "--yes" in proc.stderr and "not a terminal" in proc.stderr, proc.stderr
    committed = await kafka.committed(topics.group)
    assert {tp: committed.get(tp) for tp in ends} == ends
    positions = await db_positions(engine, topics.group)
    assert {tp: positions.get(tp) for tp in ends if ends[tp]} == {tp: e for tp, e in ends.items() if e}

    bad = cli(consumer_env, tmp_path, "offsets", "reset", "--to", "2026-03-01T10:00:00", "--yes")
    assert bad.returncode == 2 and "UTC offset" in bad.stderr
