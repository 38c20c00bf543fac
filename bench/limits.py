"""The two ceilings, each run by bench.run as a child process that prints one JSON line.

    python -m bench.limits decode --values FILE
        every raw record value through handlers.fast_decode.decode_fast (the consumer's own
        decoding: msgspec, and pydantic for what msgspec declines), no Kafka, no database;
        handlers.decode.decode (pydantic alone) and orjson.loads alone are timed too, for reference.

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
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.workload import ORDER_COLUMNS, USER_COLUMNS, read_values


def decode_limit(values_path: Path) -> dict:
    from bench.common import Interference, self_hwm_bytes
    from handlers.decode import decode
    from handlers.fast_decode import _decode_msgspec, decode_fast

    values = read_values(values_path)
    gc.collect()
    meter = Interference()
    cpu0, t0 = time.process_time(), time.perf_counter()
    events, poison = _count(decode_fast, values)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    interference = meter.end(0.0)  # this process is the contestant
    gc.collect()
    t1 = time.perf_counter()
    pydantic_events, pydantic_poison = _count(decode, values)
    pydantic_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    for value in values:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    orjson_s = time.perf_counter() - t2
    fast_path = sum(1 for value in values if _decode_msgspec(value) is not None)
    return {
        "decoder": "handlers.fast_decode.decode_fast",
        "records": len(values),
        "events": events,
        "poison": poison,
        "seconds": round(seconds, 4),
        "cpu_s": round(cpu, 3),
        "records_per_s": round(len(values) / seconds, 1),
        "fast_path_records": fast_path,  # taken by msgspec; the rest went to pydantic
        "pydantic_events": pydantic_events,
        "pydantic_poison": pydantic_poison,
        "pydantic_seconds": round(pydantic_s, 4),
        "pydantic_records_per_s": round(len(values) / pydantic_s, 1),
        "speedup_over_pydantic": round(pydantic_s / seconds, 2),
        "orjson_loads_seconds": round(orjson_s, 4),
        "orjson_loads_per_s": round(len(values) / orjson_s, 1),
        "hwm_bytes": self_hwm_bytes(),
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
    b = sub.add_parser("db")
    b.add_argument("--database-url", required=True)
    b.add_argument("--rows", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.which == "decode":
        result = decode_limit(args.values)
    else:
        result = asyncio.run(db_limit(args.database_url, args.rows))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
