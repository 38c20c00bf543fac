"""Test harness for the integration tests: kcat as the outside producer, aiokafka admin for
offsets, the consumer as a real subprocess (`python -m consumer run`)."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.model import OrderRow, ReadModel, UserRow, diff, rows_from_db

ROOT = Path(__file__).resolve().parents[2]
KEY_DELIM = b"\x1f"
MSG_DELIM = b"\x1e"


@dataclass
class Topics:
    users: str
    orders: str
    group: str

    @property
    def all(self) -> list[str]:
        return [self.users, self.orders]


def kcat_publish(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes]],
    headers: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    compression: str = "none",
) -> None:
    """Publishes with kcat (librdkafka), a client this project did not write. A None key is sent
    as a null key; headers, if given, go on every message."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat is not installed (apt-get install kcat; scripts/services.sh install does it)"
    payload = bytearray()
    for key, value in messages:
        assert MSG_DELIM not in value and KEY_DELIM not in value, "test value uses a delimiter byte"
        payload += (value if key is None else key + KEY_DELIM + value) + MSG_DELIM
    proc = subprocess.run(
        [kcat, "-P", "-b", bootstrap, "-t", topic, "-K", "\\x1f", "-D", "\\x1e", "-z", compression,
         "-X", "enable.idempotence=true", "-X", "topic.partitioner=murmur2_random",
         *[arg for k, v in (headers or {}).items() for arg in ("-H", f"{k}={v}")], *extra_args],
        input=bytes(payload),
        capture_output=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def kcat_count(bootstrap: str, topic: str) -> int:
    proc = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\\n"],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return len(proc.stdout.splitlines())


def envelope_messages(events: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(str(e["data"]["id"]).encode(), orjson.dumps(e)) for e in events]


class KafkaHelper:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def start(self) -> None:
        """Starts a fresh admin client (an aiokafka client is not restartable after close)."""
        self.admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self.admin.start()

    async def close(self) -> None:
        await self.admin.close()

    async def create_topics(self, names: list[str], partitions: int = 3) -> None:
        try:
            await self.admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        except TopicAlreadyExistsError:
            pass

    async def end_offsets(self, topics: list[str]) -> dict[TopicPartition, int]:
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await c.start()
        try:
            tps = [TopicPartition(t, p) for t in topics for p in (c.partitions_for_topic(t) or await _partitions(c, t))]
            return await c.end_offsets(tps)
        finally:
            await c.stop()

    async def committed(self, group: str) -> dict[TopicPartition, int]:
        offsets = await self.admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def read_all(self, topic: str) -> list:
        """Every record of a topic, read with manual assignment, up to the end offsets."""
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        try:
            parts = await _partitions(c, topic)
            tps = [TopicPartition(topic, p) for p in parts]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            ends = await c.end_offsets(tps)
            out = []
            remaining = {tp for tp in tps if ends[tp] > 0}
            deadline = time.monotonic() + 60
            while remaining and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for tp, recs in batch.items():
                    out.extend(recs)
                    if recs and recs[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            assert not remaining, f"could not read {topic} to its end"
            return out
        finally:
            await c.stop()

    async def wait_committed(self, group: str, topics: list[str], timeout: float = 120) -> dict[TopicPartition, int]:
        """Waits until the group's committed offsets reach the log end offsets."""
        ends = await self.end_offsets(topics)
        deadline = time.monotonic() + timeout
        committed: dict = {}
        while time.monotonic() < deadline:
            committed = await self.committed(group)
            if all(committed.get(tp, 0) >= end for tp, end in ends.items()):
                return ends
            await asyncio.sleep(0.5)
        raise AssertionError(f"group {group} did not catch up: committed {committed}, end {ends}")


async def _partitions(c: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        parts = c.partitions_for_topic(topic)
        if parts:
            return parts
        await c._client.force_metadata_update()  # noqa: SLF001 - no public call for one topic
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no metadata")


async def db_positions(engine: AsyncEngine, group: str) -> dict[TopicPartition, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = :g"), {"g": group}
        )
        return {TopicPartition(r.topic, r.partition): r.next_offset for r in rows}


async def wait_db_positions(engine: AsyncEngine, group: str, ends: dict[TopicPartition, int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    pos: dict = {}
    while time.monotonic() < deadline:
        pos = await db_positions(engine, group)
        if all(pos.get(tp, 0) >= end for tp, end in ends.items() if end > 0):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"database positions did not reach the end: {pos} vs {ends}")


async def assert_matches_model(engine: AsyncEngine, model: ReadModel) -> None:
    async with engine.connect() as conn:
        users = rows_from_db(await conn.execute(text("SELECT * FROM users")), UserRow)
        orders = rows_from_db(await conn.execute(text("SELECT * FROM orders")), OrderRow)
    problems = diff(model.users, users) + diff(model.orders, orders)
    assert not problems, "database differs from the model:\n" + "\n".join(problems)
    assert len(users) == len(model.users) and len(orders) == len(model.orders)


class ConsumerProcesses:
    """`python -m consumer run` subprocesses with their logs in files."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self._files: list = []

    def start(self, **extra_env: str) -> subprocess.Popen:
        log = self.workdir / f"consumer-{len(self.procs)}.log"
        env = {**self.env, **extra_env}
        out = log.open("wb")
        self._files.append(out)
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run"],
            cwd=str(self.workdir),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def log_text(self, index: int = -1) -> str:
        return self.logs[index].read_text(errors="replace")

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for f in self._files:
            f.close()

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)


def alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def python_env() -> dict[str, str]:
    return dict(os.environ)
