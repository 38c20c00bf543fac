"""An aggregate the shipped code has never seen, declared here alone (pydantic models, a table,
a projection), runs end to end through `run`'s machinery (consumer.loop.ConsumerLoop with the
real aiokafka group consumer and the real PostgreSQL) on the native path: no record falls back,
and the table equals a model that applies the events one by one. With it ride the users
aggregate's events carrying the fields a newer producer adds, which stay native too."""

import asyncio
import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Literal

import orjson
import pytest
from pydantic import AfterValidator, Field
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Numeric, String, Table, text
from sqlalchemy.schema import CreateTable, DropTable

from consumer.kafka_clients import build_group_consumer, build_producer
from consumer.loop import ConsumerLoop
from consumer.pipeline import build_pipeline
from consumer.retry import Backoff
from consumer.settings import load_settings
from handlers.events import EntityId, EntityRef, Money, _Envelope, _Model, _no_nul
from handlers.native import install_batch_tables
from handlers.projection import ENTITY_ID, FIRST_OCCURRED_AT, NULL, OCCURRED_AT, VERSION, Projection, data, on_insert
from handlers.registry import Contract
from handlers.users import USERS
from tests.integration.harness import kcat_publish, wait_db_positions

# -- the new aggregate, declared once ---------------------------------------------------------------

Sku = Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_no_nul)]


class ProductState(_Model):
    id: EntityId
    sku: Sku
    price: Money


class ProductCreated(_Envelope):
    event_type: Literal["product.created"]
    data: ProductState


class ProductUpdated(_Envelope):
    event_type: Literal["product.updated"]
    data: ProductState


class ProductDiscontinued(_Envelope):
    event_type: Literal["product.discontinued"]
    data: EntityRef


METADATA = MetaData()
PRODUCTS_TABLE = Table(
    f"products_{uuid.uuid4().hex[:8]}",
    METADATA,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("sku", String(40)),
    Column("price", Numeric(12, 2)),
    Column("discontinued_at", DateTime(timezone=True)),
    Column("version", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

PRODUCTS = Projection(
    table=PRODUCTS_TABLE,
    full=(ProductCreated, ProductUpdated),
    patch=(ProductDiscontinued,),
    columns={
        "id": ENTITY_ID,
        "sku": (data("sku"), on_insert(NULL)),
        "price": (data("price"), on_insert(NULL)),
        "discontinued_at": (NULL, OCCURRED_AT),
        "version": VERSION,
        "created_at": FIRST_OCCURRED_AT,
        "updated_at": OCCURRED_AT,
    },
)


# -- the model: the events applied one by one with the version guard -----------------------------


def apply_one_by_one(events: list[dict]) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for e in events:
        d, at, version = e["data"], datetime.fromisoformat(e["occurred_at"]), e["version"]
        row = rows.get(d["id"])
        if row is not None and version <= row["version"]:
            continue
        if e["event_type"] == "product.discontinued":
            if row is None:
                row = rows[d["id"]] = {"id": d["id"], "sku": None, "price": None, "created_at": at}
            row.update(discontinued_at=at, version=version, updated_at=at)
        else:
            if row is None:
                row = rows[d["id"]] = {"id": d["id"], "created_at": at}
            row.update(sku=d["sku"], price=Decimal(str(d["price"])), discontinued_at=None, version=version, updated_at=at)
    return rows


def product_events(n: int, rng: random.Random) -> list[dict]:
    base = datetime(2026, 5, 1, tzinfo=timezone(timedelta(hours=2)))
    versions: dict[int, int] = {}
    out = []
    for i in range(n):
        pid = rng.randint(1, 60)
        version = versions.get(pid, 0) + 1
        if rng.random() < 0.1:
            version = max(1, version - 2)  # a late, older version
        versions[pid] = max(versions.get(pid, 0), version)
        kind = rng.choices(["product.created", "product.updated", "product.discontinued"], [3, 5, 1])[0]
        at = base + timedelta(seconds=i, microseconds=rng.randint(0, 999_999))
        body = {"id": pid} if kind == "product.discontinued" else {
            "id": pid, "sku": f"SKU-{pid}-" + rng.choice(["a", "b", "ü", '"q"', "{x}"]),
            "price": rng.choice([f"{rng.randint(0, 99999)}.{rng.randint(0, 99):02d}", rng.randint(0, 5000), rng.randint(0, 99999) / 100]),
        }
        event = {"event_id": str(uuid.UUID(int=rng.getrandbits(128))), "event_type": kind,
                 "occurred_at": at.isoformat(), "version": version, "data": body}
        if rng.random() < 0.5:  # a newer producer's fields: ignored, and still native
            event["trace_id"] = uuid.uuid4().hex
            body["tags"] = ["x", {"nested": [1, 2.5, None]}]
        out.append(event)
    return out


def user_events(n: int) -> list[dict]:
    return [
        {"event_id": str(uuid.uuid4()), "event_type": "user.created", "occurred_at": "2026-05-01T00:00:00Z", "version": 1,
         "schema_version": 2, "trace_id": "abc", "data": {"id": i, "email": f"u{i}@example.com", "name": f"U {i}", "source": "web"}}
        for i in range(1, n + 1)
    ]


@pytest.fixture
async def products_table(engine):
    async with engine.begin() as conn:
        await conn.execute(CreateTable(PRODUCTS_TABLE))
        await conn.execute(text("TRUNCATE users"))
    yield PRODUCTS_TABLE
    async with engine.begin() as conn:
        await conn.execute(DropTable(PRODUCTS_TABLE))


async def test_a_new_aggregate_runs_end_to_end_on_the_native_path(kafka, topics, engine, products_table, database_url, services):
    contract = Contract([USERS, PRODUCTS])
    products_topic = f"products-{topics.group}"
    await kafka.create_topics([products_topic, products_topic + ".dlq"], partitions=3)
    rng = random.Random(12)
    events = product_events(1500, rng)
    users = user_events(40)
    kcat_publish(kafka.bootstrap, products_topic, [(str(e["data"]["id"]).encode(), orjson.dumps(e)) for e in events])
    kcat_publish(kafka.bootstrap, topics.users, [(str(e["data"]["id"]).encode(), orjson.dumps(e)) for e in users])
    ends = await kafka.end_offsets([products_topic, topics.users])
    assert sum(ends.values()) == len(events) + len(users)

    settings = load_settings(
        kafka_bootstrap_servers=services.kafka_bootstrap, database_url=database_url, kafka_group_id=topics.group,
        kafka_topics=[topics.users, products_topic], batch_max_records=300,
    )
    consumer, producer = build_group_consumer(settings), build_producer(settings)
    install_batch_tables(engine, contract.aggregates)
    loop = ConsumerLoop(
        consumer=consumer, pipeline=build_pipeline(contract, engine, producer, ".dlq", group_id=topics.group), group_id=topics.group,
        batch_max_records=300, backoff=Backoff(0.05, 1.0), shutdown_timeout_s=10,
    )
    assert loop.native, loop.native_unavailable
    consumer.subscribe([topics.users, products_topic])
    await producer.start()
    await consumer.start()
    task = asyncio.create_task(loop.run())
    try:
        await wait_db_positions(engine, topics.group, ends, timeout=90)
    finally:
        loop.request_stop()
        await asyncio.wait_for(task, 30)
        await consumer.stop()
        await producer.stop()

    fallbacks = {s.labels["reason"]: s.value for m in loop.metrics.registry.collect() for s in m.samples
                 if s.name == "event_consumer_native_fallback_records_total"}
    assert fallbacks == {}, fallbacks
    assert loop.stats.dead_lettered == 0 and loop.stats.applied + loop.stats.stale == len(events) + len(users)

    async with engine.connect() as conn:
        rows = {r.id: r._asdict() for r in await conn.execute(PRODUCTS_TABLE.select())}
        user_rows = (await conn.execute(text("SELECT count(*) FROM users"))).scalar_one()
    want = apply_one_by_one(events)
    assert rows.keys() == want.keys()
    for pid, row in want.items():
        assert rows[pid] == row, pid
    assert user_rows == len(users)
