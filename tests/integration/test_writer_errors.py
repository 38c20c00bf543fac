"""consumer.writer.BatchWriter against rows the real PostgreSQL refuses, on both paths: the refused
event becomes a `database_error` dead letter and the rest of the part applies, whether the refusal
comes from SQLAlchemy's statements (a CHECK constraint on the upsert) or from the native path's
COPY through the driver (a character a LATIN1 database cannot hold: asyncpg's own error)."""

import json
import uuid

import pytest
from aiokafka import TopicPartition
from sqlalchemy import text

from consumer.batch import Preparer
from consumer.writer import BatchWriter
from database.engine import make_engine
from handlers.native import install_batch_tables
from handlers.registry import build_registry
from tests.conftest import fresh_database
from tests.unit.records import Rec

TP = TopicPartition("users", 0)
NAMES = ["Ada", "\u65e5\u672c", "Bob", "Cy"]  # the second has no LATIN1 form


def records(names: list[str]) -> dict:
    values = [
        json.dumps({"event_id": str(uuid.uuid4()), "event_type": "user.created", "occurred_at": "2026-01-01T00:00:00Z", "version": 1,
                    "data": {"id": i + 1, "email": f"u{i}@example.com", "name": name}}).encode()
        for i, name in enumerate(names)
    ]
    return {TP: [Rec("users", 0, i, str(i + 1).encode(), v, ()) for i, v in enumerate(values)]}


@pytest.fixture(scope="module")
async def latin1_url(services):
    async with fresh_database(services.database_url, "ec_latin1", "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0") as url:
        yield url


async def write(url: str, native: bool, names: list[str]):
    contract = build_registry()
    engine = make_engine(url, pool_size=1, max_overflow=0)
    install_batch_tables(engine, contract.aggregates)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE users"))
        preparer = Preparer(contract, native)
        sent: list = []

        async def send(items):
            sent.extend(items)

        [batch] = preparer.prepare(records(names))
        assert (batch.sources is not None) is native
        written = await BatchWriter(engine, contract, preparer, group_id=None, send_dead_letters=send).write(batch)
        async with engine.connect() as conn:
            stored = sorted((await conn.execute(text("SELECT id, name FROM users ORDER BY id"))).all())
        return written, sent, stored
    finally:
        await engine.dispose()


@pytest.mark.parametrize("native", [True, False], ids=["native-path", "python-path"])
async def test_a_character_the_database_cannot_hold_is_dead_lettered(latin1_url, native):
    written, sent, stored = await write(latin1_url, native, NAMES)
    assert [(p.record.offset, p.poison.error_type) for p in written.rejected] == [(1, "database_error")]
    assert sent == written.rejected
    assert written.rejected[0].poison.message.startswith("SQLSTATE 22P05: ")  # untranslatable character
    assert stored == [(1, "Ada"), (3, "Bob"), (4, "Cy")]
    assert written.outcomes.applied.total() == 3 and written.outcomes.dead_lettered.total() == 1


@pytest.mark.parametrize("native", [True, False], ids=["native-path", "python-path"])
async def test_a_check_constraint_refusal_is_dead_lettered(database_url, native):
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE users"))  # rows of other tests could break the constraint
            await conn.execute(text("ALTER TABLE users ADD CONSTRAINT no_bob CHECK (name <> 'Bob')"))
        try:
            written, sent, stored = await write(database_url, native, ["Ada", "Bob", "Cy"])
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE users DROP CONSTRAINT IF EXISTS no_bob"))
                await conn.execute(text("TRUNCATE users"))
    finally:
        await engine.dispose()
    assert [(p.record.offset, p.poison.error_type) for p in written.rejected] == [(1, "database_error")]
    assert written.rejected[0].poison.message.startswith("SQLSTATE 23514: ") and "no_bob" in written.rejected[0].poison.message
    assert sent == written.rejected
    assert stored == [(1, "Ada"), (3, "Cy")]
