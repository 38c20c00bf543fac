"""The two ceilings, each run by bench.run as a child process that prints one JSON line.

    python -m bench.limits decode --values FILE [--python-path]
        every raw record value through the consumer's own preparation of a batch,
        consumer.batch.Preparer(build_registry()).prepare (the native path: decode, validate,
        collapse and the rows; what it declines decided by pydantic), as one part of aiokafka
        ConsumerRecords built beforehand, no Kafka, no database. Timed too, for reference: the
        same with Preparer(contract, native=False) (the Python path: pydantic, then the Python
        collapse and row builders), the contract's pydantic decode alone per value
        (Contract.decode) and orjson.loads alone. --python-path makes the Python path the
        measured one (records_per_s), as the consumer runs without the native extension.

    python -m bench.limits db --database-url URL --rows FILE
        the final rows (from the model) written the fastest way PostgreSQL offers: in one
        transaction, asyncpg COPY into a temporary table, then one
        INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE ... WHERE excluded.version > t.version
        per table. No Kafka, no decoding. Timed from BEGIN to COMMIT.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import pickle
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.workload import ORDER_COLUMNS, USER_COLUMNS, read_values


# The records of the values file, as partitions of this many consecutive records of one topic
# (one part, as one writer of a fetched batch gets it; the consumer's batches are smaller).
PARTITION_RECORDS = 20_000


def as_records(values: list[bytes], topic: str = "bench") -> dict:
    """The values as aiokafka ConsumerRecords, PARTITION_RECORDS per TopicPartition."""
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    records = {}
    for partition, start in enumerate(range(0, len(values), PARTITION_RECORDS)):
        chunk = values[start : start + PARTITION_RECORDS]
        records[TopicPartition(topic, partition)] = [
            ConsumerRecord(topic, partition, offset, 0, 0, None, value, None, 0, len(value), ())
            for offset, value in enumerate(chunk)
        ]
    return records


def _prepare(preparer, records: dict) -> tuple[int, int, int, Counter]:
    """(events, poison, tombstones, fallbacks by reason) of preparing `records` as one part."""
    events = poison = tombstones = 0
    fallbacks: Counter = Counter()
    for batch in preparer.prepare(records, 1):
        events += len(batch.labels)
        poison += len(batch.poison)
        tombstones += sum(batch.tombstones.values())
        fallbacks.update(batch.fallbacks)
    return events, poison, tombstones, fallbacks


def decode_limit(values_path: Path, python_path: bool = False) -> dict:
    from bench.common import Interference, self_hwm_bytes
    from consumer.app import _tune_gc
    from consumer.batch import Preparer
    from handlers.registry import build_registry

    values = read_values(values_path)
    contract = build_registry()
    preparers = {"native_path": Preparer(contract), "python_path": Preparer(contract, native=False)}
    measured = "python_path" if python_path else "native_path"
    other = "native_path" if python_path else "python_path"
    records = as_records(values)
    # The consumer's collector settings (frozen start-up objects, young collections every 50,000
    # allocations): a part holds every event and row until it is written. The input is frozen
    # with the rest, as Kafka's records are not part of this limit.
    _tune_gc()
    meter = Interference()
    cpu0, t0 = time.process_time(), time.perf_counter()
    events, poison, tombstones, fallbacks = _prepare(preparers[measured], records)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    interference = meter.end(0.0)  # this process is the contestant
    hwm = self_hwm_bytes()  # the measured path's peak (the reference runs below hold more)
    gc.collect()
    t1 = time.perf_counter()
    other_events, other_poison, _, other_fallbacks = _prepare(preparers[other], records)
    other_s = time.perf_counter() - t1
    gc.collect()
    t2 = time.perf_counter()
    pydantic_events, pydantic_poison = _count(contract.decode, values)
    pydantic_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    for value in values:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    orjson_s = time.perf_counter() - t3
    native = preparers["native_path"]
    runs = {
        measured: (events, poison, fallbacks, seconds),
        other: (other_events, other_poison, other_fallbacks, other_s),
    }
    return {
        "decoder": "consumer.batch.Preparer.prepare, "
        + ("native=False (the Python path)" if python_path else
           "native path" if native.native is not None else f"Python path (native path unavailable: {native.native_unavailable})"),
        "native": preparers[measured].native is not None,
        "native_unavailable": native.native_unavailable,
        "records": len(values),
        "events": events,
        "poison": poison,
        "tombstones": tombstones,
        "seconds": round(seconds, 4),
        "cpu_s": round(cpu, 3),
        "records_per_s": round(len(values) / seconds, 1),
        # events the native path declined and pydantic accepted (put back in their slots), i.e.
        # sum(batch.fallbacks.values()); on the Python path every event counts, as "unavailable"
        "native_declined_records": sum(fallbacks.values()),
        **{
            f"{name}_{key}": value
            for name, (n_events, n_poison, n_fallbacks, s) in runs.items()
            for key, value in (
                ("events", n_events),
                ("poison", n_poison),
                ("fallbacks", dict(n_fallbacks)),
                ("seconds", round(s, 4)),
                ("records_per_s", round(len(values) / s, 1)),
            )
        },
        "pydantic_events": pydantic_events,
        "pydantic_poison": pydantic_poison,
        "pydantic_seconds": round(pydantic_s, 4),
        "pydantic_records_per_s": round(len(values) / pydantic_s, 1),
        "speedup_over_pydantic": round(pydantic_s / seconds, 2),
        "orjson_loads_seconds": round(orjson_s, 4),
        "orjson_loads_per_s": round(len(values) / orjson_s, 1),
        "hwm_bytes": hwm,
        "hwm_bytes_with_references": self_hwm_bytes(),
        **interference,
    }


def _count(decode_one: Callable[[bytes], object], values: list[bytes]) -> tuple[int, int]:
    """(events, poison) of decoding every value."""
    from handlers.decode import Poison, Tombstone

    events = poison = 0
    for value in values:
        result = decode_one(value)
        if isinstance(result, Poison):
            poison += 1
        elif not isinstance(result, Tombstone):
            events += 1
    return events, poison


def _upsert_sql(table: str, columns: tuple[str, ...], temp: str) -> str:
    cols = ", ".join(columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("id", "created_at"))
    return (
        f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {temp} "
        f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE excluded.version > {table}.version"
    )


async def db_limit(database_url: str, rows_path: Path) -> dict:
    import asyncpg

    from bench.common import Interference, plain_dsn, self_hwm_bytes

    rows = pickle.loads(rows_path.read_bytes())
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        gc.collect()
        meter = Interference()
        cpu0, t0 = time.process_time(), time.perf_counter()
        async with conn.transaction():
            for table, columns in (("users", USER_COLUMNS), ("orders", ORDER_COLUMNS)):
                temp = f"bench_{table}"
                await conn.execute(f"CREATE TEMP TABLE {temp} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
                await conn.copy_records_to_table(temp, records=rows[table], columns=list(columns))
                await conn.execute(_upsert_sql(table, columns, temp))
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        interference = meter.end(0.0)  # this process is the contestant
    finally:
        await conn.close()
    total = len(rows["users"]) + len(rows["orders"])
    return {
        "rows": total,
        "users": len(rows["users"]),
        "orders": len(rows["orders"]),
        "seconds": round(seconds, 4),
        "cpu_s": round(cpu, 3),
        "rows_per_s": round(total / seconds, 1),
        "hwm_bytes": self_hwm_bytes(),
        **interference,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    d = sub.add_parser("decode")
    d.add_argument("--values", type=Path, required=True)
    d.add_argument("--python-path", action="store_true",
                   help="measure Preparer(contract, native=False), the consumer without the native extension")
    b = sub.add_parser("db")
    b.add_argument("--database-url", required=True)
    b.add_argument("--rows", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.which == "decode":
        result = decode_limit(args.values, args.python_path)
    else:
        result = asyncio.run(db_limit(args.database_url, args.rows))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
