"""Where the consumer's time goes, stage by stage, in one process (CPU-timed, so it stands up
to a busy machine better than the wall-clock race in bench.run). For the findings in
bench/README.md; nothing here changes production code.

    eval "$(bash scripts/services.sh env)"
    .venv/bin/python -m bench.breakdown [--events 100000] [--only fetch,decode,apply]

fetch   AIOKafkaConsumer.getmany over fresh topics with the consumer's fetch settings, nothing
        else: the Kafka client's ceiling.
decode  production: the native path (NativePart.add alone: decode and checks; and
        Preparer.prepare of one part: with collapse and the COPY rows) and Contract.decode
        (pydantic alone: the Python path, and the authority for what the native path declines);
        variants of the pydantic contract built here (a mirror of handlers/events.py) to price
        its parts: the UTC-range validator, EmailStr, orjson alone.
apply   the batches' upserts into a fresh database, three ways with the same collapse and the
        same final rows: production (handlers.apply.apply_events through SQLAlchemy: the rows as
        one JSON parameter), the same SQL through the raw asyncpg connection, and COPY into a
        temp table + INSERT ... SELECT; production at several batch sizes. Every variant's
        tables are checked against the model.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Literal, Union
from uuid import UUID

import orjson
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, TypeAdapter

from bench import workload
from bench.common import (
    RESULTS,
    ROOT,
    FreshDatabases,
    Kafka,
    check_tables,
    git_commit,
    machine,
    plain_dsn,
    publish,
    say,
    server_cpu_s,
    services_from_env,
    stamp,
    unique,
)

# -- decode variants ---------------------------------------------------------------------------

BIGINT_MAX = 2**63 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    return value


def _utc_astimezone(value: datetime) -> datetime:  # what handlers/events.py does (working tree)
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    return value


def _utc_cheap(value: datetime) -> datetime:
    # Same rule: only a date within a day of datetime.min/max can leave the range once shifted
    # by its offset (|offset| < 24 h), so the conversion is tried only there.
    if 1 < value.year < 9999:
        return value
    return _utc_astimezone(value)


EMAIL_PATTERN = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"


def make_adapter(utc_check, email: str) -> TypeAdapter:
    """The envelope of handlers/events.py rebuilt with one part swapped. email: 'EmailStr' (as in
    production), 'pattern' (a Rust-regex checked str), or 'str' (length only)."""
    EntityId = Annotated[int, Field(gt=0, le=BIGINT_MAX, strict=True)]
    Version = Annotated[int, Field(ge=1, le=BIGINT_MAX, strict=True)]
    if email == "EmailStr":
        Email = Annotated[EmailStr, Field(max_length=255), AfterValidator(_no_nul)]
    elif email == "pattern":
        Email = Annotated[str, Field(max_length=255, pattern=EMAIL_PATTERN)]
    else:
        Email = Annotated[str, Field(max_length=255), AfterValidator(_no_nul)]
    Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
    Money = Annotated[Decimal, Field(ge=0, lt=Decimal(10) ** 10, decimal_places=2, allow_inf_nan=False)]
    Occurred = Annotated[AwareDatetime, AfterValidator(utc_check)] if utc_check else AwareDatetime

    class _Model(BaseModel):
        model_config = ConfigDict(extra="ignore", frozen=True)

    class UserState(_Model):
        id: EntityId
        email: Email
        name: Name
        is_active: Annotated[bool, Field(strict=True)] = True

    class OrderState(_Model):
        id: EntityId
        user_id: EntityId
        total: Money
        status: Literal["pending", "paid", "shipped", "delivered", "cancelled"]

    class EntityRef(_Model):
        id: EntityId

    class _Envelope(_Model):
        event_id: UUID
        occurred_at: Occurred
        version: Version

    class UserCreated(_Envelope):
        event_type: Literal["user.created"]
        data: UserState

    class UserUpdated(_Envelope):
        event_type: Literal["user.updated"]
        data: UserState

    class UserDeleted(_Envelope):
        event_type: Literal["user.deleted"]
        data: EntityRef

    class OrderCreated(_Envelope):
        event_type: Literal["order.created"]
        data: OrderState

    class OrderUpdated(_Envelope):
        event_type: Literal["order.updated"]
        data: OrderState

    class OrderCancelled(_Envelope):
        event_type: Literal["order.cancelled"]
        data: EntityRef

    Event = Annotated[
        Union[UserCreated, UserUpdated, UserDeleted, OrderCreated, OrderUpdated, OrderCancelled],
        Field(discriminator="event_type"),
    ]
    return TypeAdapter(Event)


def _time_cpu(fn, values: list[bytes]) -> float:
    """CPU seconds for fn over all values (fn takes one value, or the whole list if it is a _Whole)."""
    gc.collect()
    t0 = time.process_time()
    if isinstance(fn, _Whole):
        fn(values)
        return time.process_time() - t0
    for v in values:
        try:
            fn(v)
        except Exception:  # noqa: BLE001 - poison records fail validation: that is part of the cost
            pass
    return time.process_time() - t0


class _Whole:
    """A variant that takes the whole list of values (the native path works on a part, not per value)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, values: list[bytes]) -> None:
        self.fn(values)


PART_RECORDS = 50_000  # the native path's values per part (BATCH_MAX_RECORDS' default)


def _native_variants(contract, values: list[bytes]) -> dict:
    from bench.limits import as_records
    from consumer.batch import Preparer

    preparer = Preparer(contract)
    if preparer.native is None:
        say(f"decode: native path unavailable ({preparer.native_unavailable}); its variants are left out")
        return {}
    path = preparer.native
    chunks = [values[start : start + PART_RECORDS] for start in range(0, len(values), PART_RECORDS)]
    parts = [as_records(chunk) for chunk in chunks]  # aiokafka records, built outside the timing

    def add_only(_values: list[bytes]) -> None:
        for chunk in chunks:
            path.part().add(chunk, "bench")

    def prepare(_values: list[bytes]) -> None:
        for records in parts:
            preparer.prepare(records, 1)

    return {
        f"production native path: NativePart.add per {PART_RECORDS:,} values (decode and checks; no collapse, no rows)": _Whole(add_only),
        f"production native path: Preparer.prepare per {PART_RECORDS:,} records (+ collapse, COPY rows; pydantic for what it declines)": _Whole(prepare),
    }


def _orjson_then_python():
    from handlers.events import event_adapter

    return lambda v: event_adapter.validate_python(orjson.loads(v))


def decode_variants(values: list[bytes], rounds: int = 3) -> dict:
    from handlers.registry import build_registry

    contract = build_registry()
    n = len(values)
    variants = {
        **_native_variants(contract, values),
        "production Contract.decode (pydantic alone: the Python path)": contract.decode,
        "mirror of production (sanity check)": make_adapter(_utc_astimezone, "EmailStr").validate_json,
        "UTC check only near year 1/9999": make_adapter(_utc_cheap, "EmailStr").validate_json,
        "no UTC check at all": make_adapter(None, "EmailStr").validate_json,
        "cheap UTC + email as Rust-regex pattern str": make_adapter(_utc_cheap, "pattern").validate_json,
        "cheap UTC + email as plain str (floor)": make_adapter(_utc_cheap, "str").validate_json,
        "orjson.loads + validate_python (production models)": _orjson_then_python(),
        "orjson.loads only": orjson.loads,
    }
    best: dict[str, float] = {}
    for _ in range(rounds):  # interleaved rounds, best of: robust against other load on the machine
        for name, fn in variants.items():
            best[name] = min(best.get(name, float("inf")), _time_cpu(fn, values))
    out = {}
    for name, cpu in best.items():
        out[name] = {"cpu_s": round(cpu, 3), "us_per_record": round(cpu / n * 1e6, 2), "records_per_s": round(n / cpu)}
        say(f"decode: {name}: {out[name]['us_per_record']} us/record, {out[name]['records_per_s']:,}/s")
    return out


# -- fetch -------------------------------------------------------------------------------------


async def fetch_only(bootstrap: str, topics: list[str], total: int, max_records: int = 2000) -> dict:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", isolation_level="read_committed",
                         fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=2 * 1024 * 1024)
    await c.start()
    try:
        tps = []
        for t in topics:
            parts = c.partitions_for_topic(t) or set()
            while not parts:
                await c._client.force_metadata_update()  # noqa: SLF001
                parts = c.partitions_for_topic(t) or set()
            tps.extend(TopicPartition(t, p) for p in parts)
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        got = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while got < total:
            batch = await c.getmany(timeout_ms=1000, max_records=max_records)
            got += sum(len(v) for v in batch.values())
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await c.stop()
    return {"records": got, "seconds": round(wall, 3), "cpu_s": round(cpu, 3), "records_per_s": round(got / wall),
            "us_cpu_per_record": round(cpu / got * 1e6, 2)}


# -- apply -------------------------------------------------------------------------------------


def _compiled(stmt, dialect) -> tuple[str, list[str]]:
    c = stmt.compile(dialect=dialect)
    return str(c), list(c.positiontup)


class RawApplier:
    """Aggregate.prepare + the same statements as Aggregate.write, executed on the raw asyncpg
    connection (what SQLAlchemy's execution adds per statement)."""

    def __init__(self, aggregate, dialect) -> None:
        self.a = aggregate
        self.full_sql, self.full_order = _compiled(aggregate._versions_with_full, dialect)
        self.only_sql, self.only_order = _compiled(aggregate._versions_only, dialect)
        self.patch_sql, self.patch_order = _compiled(aggregate._patch_upsert, dialect)

    async def apply(self, conn, events) -> None:
        prepared = self.a.prepare(events)
        if not prepared.entities:
            return
        if prepared.full_rows is not None:
            params = {"entity_ids": prepared.entity_ids, **prepared.full_rows}
            await conn.fetch(self.full_sql, *[params[k] for k in self.full_order])
        else:
            await conn.fetch(self.only_sql, prepared.entity_ids)
        if prepared.patch_rows is not None:
            await conn.execute(self.patch_sql, *[prepared.patch_rows[k] for k in self.patch_order])


class CopyApplier:
    """The same collapse and rows, written by binary COPY into a temp table, then
    WITH up AS (INSERT ... SELECT FROM temp ON CONFLICT ... WHERE newer) SELECT id, version ..."""

    def __init__(self, aggregate) -> None:
        self.a = aggregate
        t = aggregate.table.name
        cols = aggregate.columns
        col_list = ", ".join(cols)
        full_update = ", ".join(f"{c} = excluded.{c}" for c in aggregate.projection.updates("full"))
        patch_update = ", ".join(f"{c} = excluded.{c}" for c in aggregate.projection.updates("patch"))
        self.temp_full, self.temp_patch = f"bench_full_{t}", f"bench_patch_{t}"
        self.create = [
            f"CREATE TEMP TABLE IF NOT EXISTS {self.temp_full} (LIKE {t}) ON COMMIT DELETE ROWS",
            f"CREATE TEMP TABLE IF NOT EXISTS {self.temp_patch} (LIKE {t}) ON COMMIT DELETE ROWS",
        ]
        self.full_sql = (
            f"WITH up AS (INSERT INTO {t} ({col_list}) SELECT {col_list} FROM {self.temp_full} "
            f"ON CONFLICT (id) DO UPDATE SET {full_update} WHERE excluded.version > {t}.version) "
            f"SELECT id, version FROM {t} WHERE id = ANY($1::bigint[])"
        )
        self.only_sql = f"SELECT id, version FROM {t} WHERE id = ANY($1::bigint[])"
        self.patch_sql = (
            f"INSERT INTO {t} ({col_list}) SELECT {col_list} FROM {self.temp_patch} "
            f"ON CONFLICT (id) DO UPDATE SET {patch_update} WHERE excluded.version > {t}.version"
        )

    async def apply(self, conn, events) -> None:
        from handlers.collapse import collapse

        a = self.a
        changes, _ = collapse(events, a._is_full)
        if not changes:
            return
        ids = [c.entity_id for c in changes]
        cols = a.columns
        full_rows = [a._full_row(c) for c in changes if c.full is not None]
        if full_rows:
            await conn.copy_records_to_table(self.temp_full, records=full_rows, columns=cols)
            await conn.fetch(self.full_sql, ids)
        else:
            await conn.fetch(self.only_sql, ids)
        patch_rows = [a._patch_row(c) for c in changes if c.patch is not None]
        if patch_rows:
            await conn.copy_records_to_table(self.temp_patch, records=patch_rows, columns=cols)
            await conn.execute(self.patch_sql)


async def apply_variants(dbs: FreshDatabases, events: list, model, batch_sizes: list[int], rounds: int = 3) -> dict:
    """Each variant `rounds` times on a fresh database, interleaved; reports the best round
    (least wall time) and the least client CPU seen."""
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

    from database.engine import make_engine
    from handlers.apply import apply_events
    from handlers.registry import build_registry, route

    registry = build_registry()
    aggregates = list(registry.aggregates)
    n = len(events)

    async def production(url: str, batches: list) -> None:
        engine = make_engine(url, pool_size=1, max_overflow=0)
        try:
            async with engine.connect():  # warm the pool: connecting is not part of the work
                pass
            for b in batches:
                async with engine.begin() as conn:
                    await apply_events(conn, registry, b)
        finally:
            await engine.dispose()

    dialect = asyncpg_dialect()
    raw = {a: RawApplier(a, dialect) for a in aggregates}
    copy = {a: CopyApplier(a) for a in aggregates}

    async def raw_sql(url: str, batches: list) -> None:
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            for b in batches:
                async with conn.transaction():
                    for a, group in route(registry, b).items():
                        await raw[a].apply(conn, group)
        finally:
            await conn.close()

    async def copy_sql(url: str, batches: list) -> None:
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            for c in copy.values():
                for sql in c.create:
                    await conn.execute(sql)
            for b in batches:
                async with conn.transaction():
                    for a, group in route(registry, b).items():
                        await copy[a].apply(conn, group)
        finally:
            await conn.close()

    variants = [(f"production SQLAlchemy apply_events, batch {b}", b, production) for b in batch_sizes]
    variants += [
        ("same SQL on raw asyncpg, batch 2000", 2000, raw_sql),
        ("COPY to temp + INSERT SELECT on raw asyncpg, batch 2000", 2000, copy_sql),
    ]
    out: dict = {}
    for r in range(rounds):
        for name, batch, fn in variants:
            url = await dbs.create("apply")
            batches = [events[i : i + batch] for i in range(0, n, batch)]
            gc.collect()
            server0 = server_cpu_s()["postgres"]
            cpu0, t0 = time.process_time(), time.perf_counter()
            await fn(url, batches)
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            server = server_cpu_s()["postgres"] - server0
            check = await check_tables(url, model)
            await dbs.drop()
            row = {"batch": batch, "batches": len(batches), "seconds": round(wall, 3), "events_per_s": round(n / wall),
                   "us_wall_per_event": round(wall / n * 1e6, 1), "us_client_cpu_per_event": round(cpu / n * 1e6, 1),
                   "us_postgres_cpu_per_event": round(server / n * 1e6, 1),
                   "ms_wall_per_batch": round(wall / len(batches) * 1000, 1), "tables_ok": check["ok"]}
            prev = out.get(name)
            if prev is None or row["seconds"] < prev["seconds"]:
                row["best_client_cpu_per_event"] = min(row["us_client_cpu_per_event"], (prev or row)["best_client_cpu_per_event"]
                                                       if prev else row["us_client_cpu_per_event"])
                row["tables_ok"] = row["tables_ok"] and (prev or row)["tables_ok"]
                out[name] = row
            else:
                prev["best_client_cpu_per_event"] = min(prev["best_client_cpu_per_event"], row["us_client_cpu_per_event"])
                prev["tables_ok"] = prev["tables_ok"] and row["tables_ok"]
            say(f"apply round {r + 1}: {name}: {row['us_wall_per_event']} us/event wall, "
                f"{row['us_client_cpu_per_event']} client CPU, {row['us_postgres_cpu_per_event']} postgres CPU; "
                f"tables {'OK' if check['ok'] else 'DIFFER'}")
    for name, row in out.items():
        say(f"apply best: {name}: {row['us_wall_per_event']} us/event wall ({row['events_per_s']:,}/s), "
            f"client CPU best {row['best_client_cpu_per_event']} us/event, tables {'OK' if row['tables_ok'] else 'DIFFER'}")
    return out


# -- main --------------------------------------------------------------------------------------


async def amain(args) -> dict:
    services = services_from_env()
    only = set(args.only.split(","))
    wl = workload.build(args.events, args.seed, malformed=20)
    values = list(wl.values())
    result: dict = {"timestamp": stamp(), **machine(), "git": git_commit(), "n": args.events, "rounds": args.rounds}
    if "decode" in only:
        result["decode"] = decode_variants(values, rounds=args.rounds)
    kafka = Kafka(services.bootstrap)
    await kafka.start()
    dbs = FreshDatabases(services.database_url)
    try:
        if "fetch" in only:
            topics = [unique("bench-fetch-users"), unique("bench-fetch-orders")]
            await kafka.create_topics(topics, 3)
            for topic, role in zip(topics, (workload.USERS, workload.ORDERS)):
                await publish(services.bootstrap, topic, wl.messages[role])
            result["fetch"] = await fetch_only(services.bootstrap, topics, args.events)
            f = result["fetch"]
            say(f"fetch: {f['records_per_s']:,} records/s, {f['us_cpu_per_record']} us CPU/record")
        if "apply" in only:
            from handlers.decode import Poison
            from handlers.registry import build_registry

            decode = build_registry().decode
            events = [e for e in (decode(v) for v in values) if not isinstance(e, Poison)]
            # the same events in the same order per entity as the topics hold them (per role)
            result["apply"] = await apply_variants(dbs, events, wl.model, [int(b) for b in args.batch_sizes.split(",")],
                                                   rounds=args.rounds)
    finally:
        await dbs.drop()
        await kafka.delete_created()
        await kafka.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", default="fetch,decode,apply")
    p.add_argument("--batch-sizes", default="500,2000,5000", help="production apply batch sizes (default 500,2000,5000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant, best kept (default 3)")
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/breakdown-*.json")
    args = p.parse_args(argv)
    result = asyncio.run(amain(args))
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2)
    print(text.decode())
    if args.json:
        with open(args.json, "wb") as fh:
            fh.write(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"breakdown-{result['timestamp']}.json"
        path.write_bytes(text)
        print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
