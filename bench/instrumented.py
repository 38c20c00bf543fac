"""`python -m consumer run` with stage timers around the loop's steps, for `bench.run --profile`
(never the measured run: the wrappers cost a little). Production code is not changed: the
wrappers are installed on the names consumer.loop, consumer.batch and consumer.writer look up at
call time.

    EC_BENCH_STAGES=FILE  where to write the timings (JSON) when the consumer exits
    EC_BENCH_UVLOOP=1     run on uvloop (if installed) instead of the default asyncio loop

Stages (wall seconds). The loop prepares batch N+1 while N's transactions run, and the writers
run concurrently, so the database stages overlap each other and the CPU stages: read the CPU
stages (decode, prepare) as CPU time, the others as latency.
    kafka_fetch    awaiting AIOKafkaConsumer.getmany (includes waiting for the broker)
    decode         consumer.batch.add_records: pydantic per record (the Python path, and the isolating
                   path's ensure_decoded), pure CPU
    decode_native  Preparer._native_part: the native path's decode, collapse and COPY rows of one part
                   (GIL released), with pydantic for the records it declines
    prepare        Aggregate.prepare: the Python path's collapse and rows, pure CPU
    sql_lock       lock_positions (SELECT ... FOR UPDATE on consumer_offsets)
    sql_upserts    write_prepared: the set-based upserts, client side + server execution
    sql_offsets    save_positions
    sql_tx         the rest of one transaction (BatchWriter.write; ConsumerLoop._apply before
                   99b5c68): pool checkout, BEGIN, COMMIT (the WAL flush)
    kafka_commit   _commit_kafka (the Kafka offset commit round trip)
    dead_letter    _dead_letter (DLQ produce + acks)
    gc_gen0/1/2    time in the cyclic garbage collector (gc.callbacks), which runs inside the stages
    prepare_batch  ConsumerLoop._prepare: Preparer.prepare of one fetched batch (in the worker thread)
    write_batch    ConsumerLoop._process_parts: one batch's transactions, DLQ sends and Kafka commit

Every call is also kept as an interval (stage, start, end) under "intervals" in the file:
`python -m bench.timeline FILE` prints them in order, the pipeline's timeline.
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
# (stage, start, end) in perf_counter seconds, for a timeline of the pipeline (how stages overlap)
INTERVALS: list[tuple[str, float, float]] = []


def _timed_async(name, fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            t1 = time.perf_counter()
            TOTALS[name] += t1 - t0
            COUNTS[name] += 1
            INTERVALS.append((name, t0, t1))

    return wrapper


def _timed_sync(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            t1 = time.perf_counter()
            TOTALS[name] += t1 - t0
            COUNTS[name] += 1
            INTERVALS.append((name, t0, t1))

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


def _modules(*names: str) -> list:
    """The named modules of the package `consumer` that exist in its folder (the write step may
    live in consumer.loop or consumer.writer; a file missing here is not looked for elsewhere,
    e.g. through the editable install's finder when this runs on another tree's PYTHONPATH)."""
    import importlib
    from pathlib import Path

    import consumer

    folder = Path(consumer.__file__).parent
    return [importlib.import_module(name) for name in names if (folder / f"{name.rpartition('.')[2]}.py").exists()]


def _hook_function(stage: str, attr: str, wrap, modules: list) -> None:
    """Wraps the function `attr` in every module that looks it up by that name; at least one must."""
    found = [m for m in modules if hasattr(m, attr)]
    if not found:
        raise RuntimeError(f"bench.instrumented: no {attr} in {[m.__name__ for m in modules]} to time as {stage}")
    for m in found:
        setattr(m, attr, wrap(stage, getattr(m, attr)))


def _hook_method(stage: str, wrap, candidates: list[tuple[object, str]]) -> None:
    """Wraps the first (class, method) of `candidates` that exists (one only: they may nest)."""
    for owner, attr in candidates:
        if owner is not None and hasattr(owner, attr):
            setattr(owner, attr, wrap(stage, getattr(owner, attr)))
            return
    raise RuntimeError(f"bench.instrumented: none of {candidates} to time as {stage}")


def install() -> None:
    _gc_timer()
    from aiokafka import AIOKafkaConsumer

    import consumer.batch as batch
    import consumer.loop as loop

    AIOKafkaConsumer.getmany = _timed_async("kafka_fetch", AIOKafkaConsumer.getmany)
    from handlers.aggregate import Aggregate

    batch.add_records = _timed_sync("decode", batch.add_records)
    batch.Preparer._native_part = _timed_sync("decode_native", batch.Preparer._native_part)
    Aggregate.prepare = _timed_sync("prepare", Aggregate.prepare)
    # One transaction's steps: in consumer.writer (BatchWriter.write) since 99b5c68, in
    # consumer.loop (ConsumerLoop._apply) before it; either is timed, whichever the tree has.
    writers = _modules("consumer.loop", "consumer.writer")
    writer = next((m for m in writers if m.__name__ == "consumer.writer"), None)
    _hook_function("sql_lock", "lock_positions", _timed_async, writers)
    _hook_function("sql_upserts", "write_prepared", _timed_async, writers)
    _hook_function("sql_offsets", "save_positions", _timed_async, writers)
    _hook_method("apply_total", _timed_async,
                 [(loop.ConsumerLoop, "_apply"), (getattr(writer, "BatchWriter", None), "write")])
    loop.ConsumerLoop._commit_kafka = _timed_async("kafka_commit", loop.ConsumerLoop._commit_kafka)
    loop.ConsumerLoop._dead_letter = _timed_async("dead_letter", loop.ConsumerLoop._dead_letter)
    loop.ConsumerLoop.run = _timed_async("loop_run", loop.ConsumerLoop.run)
    loop.ConsumerLoop._prepare = _timed_async("prepare_batch", loop.ConsumerLoop._prepare)
    loop.ConsumerLoop._process_parts = _timed_async("write_batch", loop.ConsumerLoop._process_parts)


def main() -> int:
    if os.environ.get("EC_BENCH_UVLOOP") == "1":
        import uvloop  # not a project dependency: pip install uvloop into .venv to try it

        uvloop.install()
    if os.environ.get("EC_BENCH_STAGES"):
        install()
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
                    "intervals": [(name, round(a - t0, 4), round(b - t0, 4)) for name, a, b in INTERVALS],
                    "process_cpu_s": round(time.process_time() - cpu0, 3),
                    "uvloop": os.environ.get("EC_BENCH_UVLOOP") == "1",
                }))


if __name__ == "__main__":
    sys.exit(main())
