"""`python -m consumer run` with stage timers around the loop's steps, for `bench.run --profile`
(never the measured run: the wrappers cost a little). Production code is not changed: the
wrappers are installed on the names consumer.loop looks up at call time.

    EC_BENCH_STAGES=FILE  where to write the timings (JSON) when the consumer exits
    EC_BENCH_UVLOOP=1     run on uvloop (if installed) instead of the default asyncio loop
    EC_BENCH_WHATIF=a,b   experiments, each swapping one part for what a suggestion would put there:
        fast_email    the envelope with `email` checked by a Rust regex (pydantic `pattern`)
                      instead of EmailStr (bench.breakdown.make_adapter); everything else the same
        raw_asyncpg   Aggregate.apply unchanged, but its statements (compiled once by SQLAlchemy)
                      run on the raw asyncpg connection of the same transaction
        gc_tuned      gc.freeze() once started + gc.set_threshold(50_000, 20, 100): fewer, cheaper
                      collections (the batches allocate many short-lived objects)

Stages (wall seconds; the loop is sequential, so they add up to the loop's time):
    kafka_fetch    awaiting AIOKafkaConsumer.getmany (includes waiting for the broker)
    decode         build_batch: handlers.decode.decode per record (pydantic), pure CPU
    sql_lock       lock_positions (SELECT ... FOR UPDATE on consumer_offsets)
    sql_upserts    apply_events: the set-based upserts, client encode + server execution
    sql_offsets    save_positions
    sql_tx         the rest of _apply: pool checkout, BEGIN, COMMIT (the WAL flush)
    kafka_commit   _commit_kafka (the Kafka offset commit round trip)
    dead_letter    _dead_letter (DLQ produce + acks)
    gc_gen0/1/2    time in the cyclic garbage collector (gc.callbacks), which runs inside the stages
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import defaultdict

import orjson

TOTALS: dict[str, float] = defaultdict(float)
COUNTS: dict[str, int] = defaultdict(int)


def _timed_async(name, fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            TOTALS[name] += time.perf_counter() - t0
            COUNTS[name] += 1

    return wrapper


def _timed_sync(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TOTALS[name] += time.perf_counter() - t0
            COUNTS[name] += 1

    return wrapper


def _gc_timer() -> None:
    import gc

    started: list[float] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            name = f"gc_gen{info.get('generation', '?')}"
            TOTALS[name] += time.perf_counter() - started.pop()
            COUNTS[name] += 1

    gc.callbacks.append(callback)


def install() -> None:
    _gc_timer()
    from aiokafka import AIOKafkaConsumer

    import consumer.loop as loop

    AIOKafkaConsumer.getmany = _timed_async("kafka_fetch", AIOKafkaConsumer.getmany)
    loop.build_batch = _timed_sync("decode", loop.build_batch)
    loop.lock_positions = _timed_async("sql_lock", loop.lock_positions)
    loop.apply_events = _timed_async("sql_upserts", loop.apply_events)
    loop.save_positions = _timed_async("sql_offsets", loop.save_positions)
    loop.ConsumerLoop._apply = _timed_async("apply_total", loop.ConsumerLoop._apply)
    loop.ConsumerLoop._commit_kafka = _timed_async("kafka_commit", loop.ConsumerLoop._commit_kafka)
    loop.ConsumerLoop._dead_letter = _timed_async("dead_letter", loop.ConsumerLoop._dead_letter)
    loop.ConsumerLoop.run = _timed_async("loop_run", loop.ConsumerLoop.run)


class _Row(tuple):
    __slots__ = ()
    id = property(lambda self: self[0])
    version = property(lambda self: self[1])


class _DriverConn:
    """What Aggregate.apply needs of a connection (execute -> rows with .id/.version), on the
    asyncpg connection underneath SQLAlchemy's, with each statement compiled once."""

    _cache: dict = {}

    def __init__(self, driver, dialect) -> None:
        self._driver = driver
        self._dialect = dialect

    async def execute(self, stmt, params):
        compiled = self._cache.get(id(stmt))
        if compiled is None:
            c = stmt.compile(dialect=self._dialect)
            compiled = self._cache[id(stmt)] = (str(c), list(c.positiontup), stmt)  # keep stmt alive: id() stays unique
        sql, order, _ = compiled
        rows = await self._driver.fetch(sql, *[params[k] for k in order])
        return [_Row((r[0], r[1])) for r in rows] if rows and len(rows[0]) == 2 else []


def whatif(names: set[str]) -> None:
    if "fast_email" in names:
        import handlers.decode

        from bench.breakdown import _utc_astimezone, make_adapter

        handlers.decode.event_adapter = make_adapter(_utc_astimezone, "pattern")
    if "raw_asyncpg" in names:
        from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

        from handlers.aggregate import Aggregate

        original = Aggregate.apply
        dialect = asyncpg_dialect()

        async def apply(self, conn, events):
            raw = await conn.get_raw_connection()
            return await original(self, _DriverConn(raw.driver_connection, dialect), events)

        Aggregate.apply = apply
    if "gc_tuned" in names:
        import gc

        import consumer.app

        original_run = consumer.app.run

        async def run(settings):
            gc.collect()
            gc.freeze()  # everything imported and built so far: never scanned again
            gc.set_threshold(50_000, 20, 100)
            return await original_run(settings)

        consumer.app.run = run
    unknown = names - {"fast_email", "raw_asyncpg", "gc_tuned"}
    if unknown:
        raise SystemExit(f"unknown EC_BENCH_WHATIF: {sorted(unknown)}")


def main() -> int:
    if os.environ.get("EC_BENCH_UVLOOP") == "1":
        import uvloop  # not a project dependency: pip install uvloop into .venv to try it

        uvloop.install()
    if os.environ.get("EC_BENCH_STAGES"):
        install()
    names = {n for n in os.environ.get("EC_BENCH_WHATIF", "").split(",") if n}
    if names:
        whatif(names)
    from consumer.cli import main as cli_main

    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        return cli_main(["run"])
    finally:
        out = os.environ.get("EC_BENCH_STAGES")
        if out:
            totals = dict(TOTALS)
            totals["sql_tx"] = totals.get("apply_total", 0.0) - sum(
                totals.get(k, 0.0) for k in ("sql_lock", "sql_upserts", "sql_offsets")
            )
            with open(out, "wb") as fh:
                fh.write(orjson.dumps({
                    "seconds": {k: round(v, 3) for k, v in totals.items()},
                    "calls": dict(COUNTS),
                    "process_wall_s": round(time.perf_counter() - t0, 3),
                    "process_cpu_s": round(time.process_time() - cpu0, 3),
                    "uvloop": os.environ.get("EC_BENCH_UVLOOP") == "1",
                    "whatif": sorted(names),
                }))


if __name__ == "__main__":
    sys.exit(main())
