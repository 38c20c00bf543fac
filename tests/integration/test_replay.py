"""`event-consumer replay` against the real broker and database, as a real subprocess: it rebuilds
what `run` built, never touches the live group's positions, honours --since/--until, --dry-run
and --dlq, and shows a progress bar on a terminal and plain log lines elsewhere."""

import asyncio
import fcntl
import os
import pty
import random
import struct
import subprocess
import sys
import termios
import threading
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson
from sqlalchemy import text

from consumer.generate import Generator, topic_for
from tests.integration.harness import assert_matches_model, envelope_messages, kcat_publish
from tests.integration.test_end_to_end import DLQ_HEADERS, malformed_values
from tests.model import ReadModel


@dataclass
class Replay:
    returncode: int
    stdout: str
    stderr: str

    @property
    def log(self) -> list[dict]:
        out = []
        for line in self.stderr.splitlines():
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    @property
    def summary(self) -> dict:
        found = [e for e in self.log if e.get("event") == "replay finished"]
        assert len(found) == 1, self.stderr[-5000:]
        return found[0]


def _replay(env: dict[str, str], *args: str, timeout: float = 300) -> Replay:
    proc = subprocess.run(
        [sys.executable, "-m", "consumer", "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )
    return Replay(proc.returncode, proc.stdout, proc.stderr)


async def replay(env: dict[str, str], *args: str, timeout: float = 300) -> Replay:
    result = await asyncio.to_thread(_replay, env, *args, timeout=timeout)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    return result


def publish_split(bootstrap: str, topics, events: list[dict], extra: dict[str, list] | None = None, seed: int = 0) -> None:
    """User events to the users topic, order events to the orders topic (keyed by entity id);
    `extra` records (key, value) go in at random places of their topic."""
    rng = random.Random(seed)
    by_topic: dict[str, list] = {topics.users: [], topics.orders: []}
    for e in events:
        by_topic[topic_for(e, topics.users, topics.orders)].append(e)
    for topic, evs in by_topic.items():
        messages = envelope_messages(evs)
        for item in (extra or {}).get(topic, []):
            messages.insert(rng.randrange(len(messages) + 1), item)
        kcat_publish(bootstrap, topic, messages)


async def table_rows(engine) -> dict[str, list]:
    async with engine.connect() as conn:
        return {
            table: [tuple(r) for r in await conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
            for table in ("users", "orders")
        }


async def offset_rows(engine) -> list[tuple]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM consumer_offsets ORDER BY group_id, topic, partition"))
        return [tuple(r) for r in rows]


async def truncate_tables(engine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE users, orders"))


def model_of(events: list[dict]) -> ReadModel:
    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    return model


async def test_replay_from_beginning_rebuilds_what_run_built_and_leaves_the_group_alone(
    kafka, topics, consumers, consumer_env, engine, clean_db
):
    events = Generator(seed=101).stream(20_000, duplicates=0.05, older=0.05)
    publish_split(kafka.bootstrap, topics, events)
    live = consumers.start()
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=240)
    assert sum(ends.values()) == 20_000
    model = model_of(events)
    await assert_matches_model(engine, model)
    built = await table_rows(engine)
    committed_before = await kafka.committed(topics.group)
    positions_before = await offset_rows(engine)
    assert {(t, p): n for _, t, p, n, *_ in positions_before} == {(tp.topic, tp.partition): n for tp, n in ends.items() if n}

    # The live consumer keeps running (idle) while the read model is rebuilt beside it.
    await truncate_tables(engine)
    first = await replay(consumer_env, "--topic", topics.users, "--topic", topics.orders, "--from-beginning")
    s = first.summary
    assert s["mode"] == "apply" and s["records"] == s["planned"] == 20_000
    assert s["applied"] + s["stale"] == 20_000 and s["applied"] > 0
    assert s["malformed"] == s["dead_lettered"] == s["tombstones"] == 0
    assert await table_rows(engine) == built
    await assert_matches_model(engine, model)

    second = await replay(consumer_env, "--topic", topics.users, "--topic", topics.orders, "--from-beginning")
    s = second.summary
    assert s["records"] == 20_000 and s["applied"] == 0 and s["stale"] == 20_000
    assert await table_rows(engine) == built

    assert live.poll() is None, consumers.log_text()
    assert await kafka.committed(topics.group) == committed_before
    assert await offset_rows(engine) == positions_before
    assert consumers.stop(live) == 0, consumers.log_text()


async def test_since_and_until_select_records_by_broker_timestamp(kafka, topics, consumer_env, engine, clean_db):
    first = Generator(seed=201).stream(2000, duplicates=0.05, older=0.05)
    second = Generator(seed=202, user_id_base=10**6, order_id_base=10**6).stream(2000, duplicates=0.05, older=0.05)
    publish_split(kafka.bootstrap, topics, first)
    await asyncio.sleep(1.5)
    cut = datetime.now(timezone.utc)
    await asyncio.sleep(1.5)
    publish_split(kafka.bootstrap, topics, second)

    result = await replay(consumer_env, "--topic", topics.users, "--topic", topics.orders, "--since", cut.isoformat())
    assert result.summary["records"] == 2000
    await assert_matches_model(engine, model_of(second))

    await truncate_tables(engine)
    until = cut.isoformat().replace("+00:00", "Z")
    result = await replay(consumer_env, "--topic", topics.users, "--topic", topics.orders, "--from-beginning", "--until", until)
    assert result.summary["records"] == 2000
    await assert_matches_model(engine, model_of(first))
    assert await offset_rows(engine) == []


async def test_dry_run_writes_nothing_and_malformed_records_are_dead_lettered_only_with_dlq(
    kafka, topics, consumer_env, engine, clean_db
):
    events = Generator(seed=301).stream(3000, duplicates=0.05, older=0.05)
    poison = malformed_values(20, random.Random(3))
    extra = {topics.users: [(k, v) for k, v, _ in poison[:10]], topics.orders: [(k, v) for k, v, _ in poison[10:]]}
    publish_split(kafka.bootstrap, topics, events, extra, seed=3)
    # Three tombstones (null values; kcat -Z sends an empty value as null).
    kcat_publish(kafka.bootstrap, topics.users, [(b"1", b""), (b"2", b""), (b"3", b"")], extra_args=("-Z",))
    total = 3000 + 20 + 3
    args = ("--topic", topics.users, "--topic", topics.orders, "--from-beginning")

    async def dlq_size() -> int:
        ends = await kafka.end_offsets([topics.users + ".dlq", topics.orders + ".dlq"])
        return sum(ends.values())

    dry = await replay(consumer_env, *args, "--dry-run")
    s = dry.summary
    assert s["mode"] == "dry-run"
    assert (s["records"], s["events"], s["malformed"], s["tombstones"], s["dead_lettered"]) == (total, 3000, 20, 3, 0)
    assert "applied" not in s
    assert await table_rows(engine) == {"users": [], "orders": []}
    assert await dlq_size() == 0

    counted = await replay(consumer_env, *args)
    s = counted.summary
    assert (s["records"], s["malformed"], s["dead_lettered"], s["tombstones"]) == (total, 20, 0, 3)
    assert s["applied"] + s["stale"] == 3000
    assert len([e for e in counted.log if e.get("event", "").startswith("malformed record skipped")]) == 20
    await assert_matches_model(engine, model_of(events))
    assert await dlq_size() == 0

    dead_lettered = await replay(consumer_env, *args, "--dlq")
    s = dead_lettered.summary
    assert (s["malformed"], s["dead_lettered"], s["applied"], s["stale"]) == (20, 20, 0, 3000)
    await assert_matches_model(engine, model_of(events))
    dlq = (await kafka.read_all(topics.users + ".dlq")) + (await kafka.read_all(topics.orders + ".dlq"))
    assert sorted(r.value for r in dlq) == sorted(v for _, v, _ in poison)
    assert sorted(r.key for r in dlq) == sorted(k for k, _, _ in poison)
    kinds = {v: kind for _, v, kind in poison}
    for r in dlq:
        headers = {k: v.decode() for k, v in r.headers}
        assert DLQ_HEADERS <= headers.keys()
        assert headers["x-error-type"] == kinds[r.value]
        assert headers["x-original-topic"] + ".dlq" == r.topic

    # One partition from an offset: exactly the rest of that partition.
    ends = await kafka.end_offsets([topics.users])
    tp0 = next(tp for tp in ends if tp.partition == 0)
    part = await replay(consumer_env, "--topic", topics.users, "--partition", "0", "--from-offset", "10", "--dry-run")
    assert part.summary["records"] == max(0, ends[tp0] - 10)
    assert await offset_rows(engine) == []


def _run_on_a_terminal(env: dict[str, str], args: list[str], timeout: float = 120) -> tuple[int, str]:
    """Runs replay with stderr on a pseudo-terminal (stdout a pipe); returns (exit code, terminal output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "replay", *args],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd="/",
        )
    finally:
        os.close(slave)
    try:
        proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


async def test_progress_bar_on_a_terminal_and_plain_log_lines_off_it(kafka, topics, consumer_env, engine, clean_db):
    events = Generator(seed=401).stream(4000, duplicates=0.05, older=0.05)
    publish_split(kafka.bootstrap, topics, events)
    args = ["--topic", topics.users, "--topic", topics.orders, "--from-beginning"]
    drop = ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "NO_COLOR", "COLUMNS", "LINES", "TERM")
    env = {k: v for k, v in consumer_env.items() if k not in drop} | {"TERM": "xterm-256color", "BATCH_MAX_RECORDS": "200"}

    code, screen = await asyncio.to_thread(_run_on_a_terminal, env, args)
    assert code == 0, screen[-5000:]
    assert topics.users in screen and topics.orders in screen
    assert "records/s" in screen and "100%" in screen and "ETA" in screen
    assert "\x1b[" in screen  # the live display's control sequences
    assert "replay finished" in screen and "applied" in screen  # the summary table
    await assert_matches_model(engine, model_of(events))

    await truncate_tables(engine)
    piped = await replay(env, *args, "--progress-interval", "0.05")
    assert "\x1b" not in piped.stderr and "\r" not in piped.stderr and "━" not in piped.stderr
    lines = [e for e in piped.log if e.get("event") == "replay progress"]
    assert len(lines) >= 2, piped.stderr[-5000:]
    assert {e["topic"] for e in lines} <= {topics.users, topics.orders}
    assert all({"done", "total", "percent", "records_per_s", "eta_s"} <= e.keys() for e in lines)
    assert piped.summary["records"] == 4000
    await assert_matches_model(engine, model_of(events))


async def test_a_row_the_database_rejects_is_counted_or_dead_lettered_and_the_rest_applies(
    kafka, topics, consumer_env, engine, clean_db
):
    gen = Generator(seed=501)
    good = [gen.envelope("user.created", 1, gen.user_state(i)) for i in range(1, 201)]
    bad = gen.envelope("user.created", 1, {"id": 9999, "email": "bad@example.com", "name": "Rejected In Replay"})
    stream = good[:100] + [bad] + good[100:]
    kcat_publish(kafka.bootstrap, topics.users, envelope_messages(stream))
    args = ("--topic", topics.users, "--from-beginning")
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE users ADD CONSTRAINT ck_users_test_replay CHECK (name <> 'Rejected In Replay')"))
    try:
        counted = await replay(consumer_env, *args)
        dead_lettered = await replay(consumer_env, *args, "--dlq")
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE users DROP CONSTRAINT ck_users_test_replay"))
    s = counted.summary
    assert (s["records"], s["applied"], s["stale"], s["malformed"], s["dead_lettered"]) == (201, 200, 0, 1, 0)
    s = dead_lettered.summary
    assert (s["records"], s["applied"], s["stale"], s["malformed"], s["dead_lettered"]) == (201, 0, 200, 1, 1)
    await assert_matches_model(engine, model_of(good))
    dlq = await kafka.read_all(topics.users + ".dlq")
    assert [r.value for r in dlq] == [orjson.dumps(bad)]
    headers = {k: v.decode() for k, v in dlq[0].headers}
    assert headers["x-error-type"] == "database_error" and "ck_users_test_replay" in headers["x-error-message"]
