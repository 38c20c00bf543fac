"""Section 3 of the contract (the semantics), against the real PostgreSQL.

Two layers:
  (a) handler level: `users.apply` / `orders.apply` inside one transaction, one test per rule,
      whole rows compared with tests.model and the applied/stale counts asserted;
  (b) pipeline level: kcat publishes, the real consumer process consumes, the tables are compared
      with the model and the dead-letter topics must stay empty.
"""

import random
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.generate import Generator
from handlers.aggregate import Aggregate, Applied
from handlers.events import event_adapter
from tests.aggregates import orders
from tests.aggregates import users
from tests.integration.harness import assert_matches_model, envelope_messages, kcat_publish
from tests.model import OrderRow, ReadModel, UserRow, rows_from_db

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)

# -- building events (plain dicts: the wire form; `parse` turns them into pydantic events) --------


def envelope(event_type: str, version: int, data: dict, *, at: datetime | None = None) -> dict:
    """occurred_at defaults to T0 + `version` minutes, so a higher version also happened later."""
    when = at if at is not None else T0 + timedelta(minutes=version)
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": when.isoformat(),
        "version": version,
        "data": data,
    }


def _user_state(event_type: str, uid: int, version: int, email: str | None, name: str | None, is_active: bool, at) -> dict:
    data = {
        "id": uid,
        "email": email or f"user{uid}.v{version}@example.com",
        "name": name or f"User {uid} v{version}",
        "is_active": is_active,
    }
    return envelope(event_type, version, data, at=at)


def user_created(uid: int, version: int = 1, *, email=None, name=None, is_active=True, at=None) -> dict:
    return _user_state("user.created", uid, version, email, name, is_active, at)


def user_updated(uid: int, version: int, *, email=None, name=None, is_active=True, at=None) -> dict:
    return _user_state("user.updated", uid, version, email, name, is_active, at)


def user_deleted(uid: int, version: int, *, at=None) -> dict:
    return envelope("user.deleted", version, {"id": uid}, at=at)


def _order_state(event_type: str, oid: int, version: int, user_id: int, total: str, status: str, at) -> dict:
    return envelope(event_type, version, {"id": oid, "user_id": user_id, "total": total, "status": status}, at=at)


def order_created(oid: int, version: int = 1, *, user_id: int, total="10.00", status="pending", at=None) -> dict:
    return _order_state("order.created", oid, version, user_id, total, status, at)


def order_updated(oid: int, version: int, *, user_id: int, total="10.00", status="paid", at=None) -> dict:
    return _order_state("order.updated", oid, version, user_id, total, status, at)


def order_cancelled(oid: int, version: int, *, at=None) -> dict:
    return envelope("order.cancelled", version, {"id": oid}, at=at)


def parse(event: dict):
    return event_adapter.validate_python(event)


def aggregate_of(event: dict) -> Aggregate:
    return users if event["event_type"].startswith("user.") else orders


# -- applying and reading ---------------------------------------------------------------------


async def apply(engine: AsyncEngine, aggregate: Aggregate, events: list[dict]) -> Applied:
    """One batch: all `events` in one call, in one transaction."""
    async with engine.begin() as conn:
        return await aggregate.apply(conn, [parse(e) for e in events])


async def apply_each(engine: AsyncEngine, aggregate: Aggregate, events: list[dict]) -> Applied:
    """The reference: every event in its own transaction, one by one."""
    applied = stale = 0
    for event in events:
        result = await apply(engine, aggregate, [event])
        assert result.applied + result.stale == 1
        applied, stale = applied + result.applied, stale + result.stale
    return Applied(applied, stale)


def model_apply(model: ReadModel, events: list[dict]) -> Applied:
    """Applies events to the pure model; returns its own applied/stale verdicts."""
    verdicts = [model.apply(parse(e)) for e in events]
    return Applied(sum(verdicts), len(verdicts) - sum(verdicts))


async def user_rows(engine: AsyncEngine) -> dict[int, UserRow]:
    async with engine.connect() as conn:
        return rows_from_db(await conn.execute(text("SELECT * FROM users")), UserRow)


async def order_rows(engine: AsyncEngine) -> dict[int, OrderRow]:
    async with engine.connect() as conn:
        return rows_from_db(await conn.execute(text("SELECT * FROM orders")), OrderRow)


def at_of(event: dict) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])


# == (a) handler level ==========================================================================

# -- rule 1: the version guard ------------------------------------------------------------------


async def test_equal_and_lower_versions_are_stale_and_change_nothing(engine, clean_db):
    model = ReadModel()
    history = [user_created(1, 1), user_updated(1, 3)]
    assert await apply(engine, users, history) == model_apply(model, history) == Applied(2, 0)
    before = await user_rows(engine)

    equal = user_updated(1, 3, email="equal@example.com", name="Same version, other data")
    lower = user_updated(1, 2, email="lower@example.com", name="Lower version", is_active=False)
    assert await apply(engine, users, [equal]) == model_apply(model, [equal]) == Applied(0, 1)
    assert await apply(engine, users, [lower]) == model_apply(model, [lower]) == Applied(0, 1)
    assert await apply(engine, users, [equal, lower]) == model_apply(model, [equal, lower]) == Applied(0, 2)

    assert await user_rows(engine) == before
    assert before[1].email == "user1.v3@example.com" and before[1].version == 3
    await assert_matches_model(engine, model)


async def test_order_version_guard_equal_and_lower_are_stale(engine, clean_db):
    model = ReadModel()
    history = [order_created(7, 1, user_id=1), order_updated(7, 4, user_id=1, total="40.00", status="shipped")]
    assert await apply(engine, orders, history) == model_apply(model, history) == Applied(2, 0)
    before = await order_rows(engine)

    late = [
        order_updated(7, 4, user_id=2, total="99.99", status="delivered"),  # equal version
        order_updated(7, 2, user_id=3, total="1.00", status="paid"),  # lower version
        order_cancelled(7, 3),  # a lower-version cancel must not cancel
    ]
    assert await apply(engine, orders, late) == model_apply(model, late) == Applied(0, 3)
    assert await order_rows(engine) == before
    assert (before[7].status, before[7].total, before[7].version) == ("shipped", Decimal("40.00"), 4)
    await assert_matches_model(engine, model)


async def test_duplicates_and_replays_change_nothing(engine, clean_db):
    model = ReadModel()
    user_history = [user_created(1, 1), user_updated(1, 2), user_deleted(1, 3), user_updated(1, 4, is_active=False)]
    order_history = [order_created(5, 1, user_id=1), order_updated(5, 2, user_id=1), order_cancelled(5, 3)]
    assert await apply(engine, users, user_history) == model_apply(model, user_history) == Applied(4, 0)
    assert await apply(engine, orders, order_history) == model_apply(model, order_history) == Applied(3, 0)
    before = (await user_rows(engine), await order_rows(engine))

    # Each event redelivered on its own (an at-least-once duplicate) ...
    assert await apply_each(engine, users, user_history) == Applied(0, 4)
    assert await apply_each(engine, orders, order_history) == Applied(0, 3)
    # ... and the whole history replayed as one batch, twice over (a reprocessed partition).
    assert await apply(engine, users, user_history * 2) == Applied(0, 8)
    assert await apply(engine, orders, order_history * 2) == Applied(0, 6)

    assert (await user_rows(engine), await order_rows(engine)) == before
    await assert_matches_model(engine, model)


async def test_late_older_event_never_overwrites_newer_state(engine, clean_db):
    model = ReadModel()
    newer = user_updated(1, 5, email="newest@example.com", name="Newest")
    assert await apply(engine, users, [newer]) == model_apply(model, [newer]) == Applied(1, 0)
    # Older events arrive afterwards, even with a later occurred_at: the version decides, not the clock.
    late = [
        user_created(1, 1, email="first@example.com", at=T0 + timedelta(days=1)),
        user_updated(1, 4, email="older@example.com", at=T0 + timedelta(days=2)),
        user_deleted(1, 3, at=T0 + timedelta(days=3)),
    ]
    assert await apply(engine, users, late) == model_apply(model, late) == Applied(0, 3)

    row = (await user_rows(engine))[1]
    assert (row.email, row.name, row.is_active, row.version, row.deleted_at) == ("newest@example.com", "Newest", True, 5, None)
    await assert_matches_model(engine, model)


# -- rule 2: soft delete and revival -----------------------------------------------------------


async def test_user_deleted_is_a_soft_delete_and_a_higher_version_revives(engine, clean_db):
    model = ReadModel()
    created = user_created(1, 1, email="ada@example.com", name="Ada")
    deleted = user_deleted(1, 2)
    assert await apply(engine, users, [created]) == model_apply(model, [created]) == Applied(1, 0)
    assert await apply(engine, users, [deleted]) == model_apply(model, [deleted]) == Applied(1, 0)

    row = (await user_rows(engine))[1]  # the row stays
    assert (row.email, row.name, row.is_active, row.version) == ("ada@example.com", "Ada", False, 2)
    assert row.deleted_at == at_of(deleted) and row.updated_at == at_of(deleted)
    assert row.created_at == at_of(created)
    await assert_matches_model(engine, model)

    # A replayed create/update at or below the delete's version does not revive.
    stale = [user_created(1, 1, email="ada@example.com", name="Ada"), user_updated(1, 2, name="Not revived")]
    assert await apply(engine, users, stale) == model_apply(model, stale) == Applied(0, 2)
    assert (await user_rows(engine))[1] == row

    revived = user_updated(1, 3, email="ada2@example.com", name="Ada Again", is_active=True)
    assert await apply(engine, users, [revived]) == model_apply(model, [revived]) == Applied(1, 0)
    row = (await user_rows(engine))[1]
    assert (row.email, row.name, row.is_active, row.version, row.deleted_at) == ("ada2@example.com", "Ada Again", True, 3, None)
    assert row.created_at == at_of(created) and row.updated_at == at_of(revived)
    await assert_matches_model(engine, model)


async def test_revival_takes_is_active_from_the_event(engine, clean_db):
    model = ReadModel()
    history = [user_created(2, 1), user_deleted(2, 2), user_created(2, 3, is_active=False)]
    assert await apply_each(engine, users, history) == model_apply(model, history) == Applied(3, 0)
    row = (await user_rows(engine))[2]
    assert (row.is_active, row.deleted_at, row.version, row.email) == (False, None, 3, "user2.v3@example.com")
    await assert_matches_model(engine, model)


# -- rule 3: cancel keeps user_id and total ----------------------------------------------------


async def test_order_cancelled_sets_status_and_keeps_user_id_and_total(engine, clean_db):
    model = ReadModel()
    history = [order_created(9, 1, user_id=42, total="12.34"), order_updated(9, 2, user_id=42, total="56.78", status="paid")]
    cancelled = order_cancelled(9, 3)
    assert await apply(engine, orders, history) == model_apply(model, history) == Applied(2, 0)
    assert await apply(engine, orders, [cancelled]) == model_apply(model, [cancelled]) == Applied(1, 0)

    row = (await order_rows(engine))[9]
    assert (row.status, row.user_id, row.total, row.version) == ("cancelled", 42, Decimal("56.78"), 3)
    assert row.updated_at == at_of(cancelled) and row.created_at == at_of(history[0])
    await assert_matches_model(engine, model)

    # Version-guarded: a duplicate cancel and an older update change nothing ...
    late = [order_cancelled(9, 3), order_updated(9, 2, user_id=1, total="0.00", status="delivered")]
    assert await apply(engine, orders, late) == model_apply(model, late) == Applied(0, 2)
    assert (await order_rows(engine))[9] == row
    # ... a higher full-state event replaces the cancelled row.
    after = order_updated(9, 4, user_id=42, total="56.78", status="pending")
    assert await apply(engine, orders, [after]) == model_apply(model, [after]) == Applied(1, 0)
    assert (await order_rows(engine))[9].status == "pending"
    await assert_matches_model(engine, model)


# -- rule 4: an order before its user ----------------------------------------------------------


async def test_order_lands_before_its_user_exists(engine, clean_db):
    model = ReadModel()
    order = order_created(30, 1, user_id=777, total="19.99")
    assert await apply(engine, orders, [order]) == model_apply(model, [order]) == Applied(1, 0)
    assert await user_rows(engine) == {}
    assert (await order_rows(engine))[30].user_id == 777
    await assert_matches_model(engine, model)

    # No foreign key on orders at all (the schema, not just this case).
    async with engine.connect() as conn:
        fks = (await conn.execute(text("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = 'orders'::regclass"))).scalar()
    assert fks == 0

    # The user arrives later; the order is untouched and both stand.
    user = user_created(777, 1)
    assert await apply(engine, users, [user]) == model_apply(model, [user]) == Applied(1, 0)
    await assert_matches_model(engine, model)


# -- rule 5: duplicate emails ------------------------------------------------------------------


async def test_two_users_may_share_an_email(engine, clean_db):
    model = ReadModel()
    same_batch = [user_created(1, 1, email="shared@example.com"), user_created(2, 1, email="shared@example.com")]
    assert await apply(engine, users, same_batch) == model_apply(model, same_batch) == Applied(2, 0)
    # A third user takes the email in a later transaction; the first one then moves away from it.
    later = [user_created(3, 1, email="shared@example.com")]
    moved = [user_updated(1, 2, email="moved@example.com")]
    assert await apply(engine, users, later) == model_apply(model, later) == Applied(1, 0)
    assert await apply(engine, users, moved) == model_apply(model, moved) == Applied(1, 0)

    rows = await user_rows(engine)
    assert {uid for uid, r in rows.items() if r.email == "shared@example.com"} == {2, 3}
    assert rows[1].email == "moved@example.com"
    await assert_matches_model(engine, model)


# -- rule 6: offset order, and intra-batch collapse --------------------------------------------


async def test_offset_order_decides_between_events_of_equal_version(engine, clean_db):
    model = ReadModel()
    first, second = user_created(1, 1, email="first@example.com"), user_created(1, 1, email="second@example.com")
    batch = [first, second, user_updated(1, 2, name="Two"), user_updated(1, 2, name="Other two")]
    assert await apply(engine, users, batch) == model_apply(model, batch) == Applied(2, 2)
    row = (await user_rows(engine))[1]
    assert (row.email, row.name, row.created_at) == ("user1.v2@example.com", "Two", at_of(first))
    await assert_matches_model(engine, model)


def user_batch_history(uid: int) -> list[dict]:
    # created v1, updated v3, deleted v4, a late updated v2, a duplicate of v3
    updated_v3 = user_updated(uid, 3, email="three@example.com", name="Three")
    return [
        user_created(uid, 1, email="one@example.com", name="One"),
        updated_v3,
        user_deleted(uid, 4),
        user_updated(uid, 2, email="late@example.com", name="Late"),
        dict(updated_v3),
    ]


def order_batch_history(oid: int) -> list[dict]:
    paid = order_updated(oid, 3, user_id=8, total="30.00", status="paid")
    return [
        order_created(oid, 1, user_id=8, total="10.00"),
        paid,
        order_cancelled(oid, 4),
        order_updated(oid, 2, user_id=9, total="20.00", status="shipped"),
        dict(paid),
    ]


@pytest.mark.parametrize(
    "aggregate, history, read",
    [(users, user_batch_history, user_rows), (orders, order_batch_history, order_rows)],
    ids=["users", "orders"],
)
async def test_one_batch_ends_like_applying_events_one_by_one(engine, clean_db, aggregate, history, read):
    model = ReadModel()
    batched, one_by_one = history(10), history(20)

    assert await apply(engine, aggregate, batched) == model_apply(model, batched) == Applied(3, 2)
    assert await apply_each(engine, aggregate, one_by_one) == model_apply(model, one_by_one) == Applied(3, 2)

    rows = await read(engine)
    assert rows[10] == replace(rows[20], id=10)  # same event data and times, so the rows match whole
    assert rows[10].version == 4
    await assert_matches_model(engine, model)


async def test_stale_full_state_then_delete_in_one_batch_keeps_stored_data(engine, clean_db):
    """Stored at v3; the batch holds a (stale) v2 full state then a v5 delete: the delete applies on
    top of the stored v3 data, not of the batch's v2."""
    model = ReadModel()
    for uid in (1, 2):
        stored = [user_created(uid, 1, email="one@example.com"), user_updated(uid, 3, email="stored@example.com", name="Stored")]
        assert await apply(engine, users, stored) == model_apply(model, stored) == Applied(2, 0)

    batch = [user_updated(1, 2, email="stale@example.com", name="Stale", is_active=True), user_deleted(1, 5)]
    assert await apply(engine, users, batch) == model_apply(model, batch) == Applied(1, 1)
    reference = [user_updated(2, 2, email="stale@example.com", name="Stale", is_active=True), user_deleted(2, 5)]
    assert await apply_each(engine, users, reference) == model_apply(model, reference) == Applied(1, 1)

    rows = await user_rows(engine)
    row = rows[1]
    assert (row.email, row.name, row.is_active, row.version) == ("stored@example.com", "Stored", False, 5)
    assert row.deleted_at == at_of(batch[1]) and row.updated_at == at_of(batch[1])
    assert rows[1] == replace(rows[2], id=1)
    await assert_matches_model(engine, model)


async def test_stale_full_state_then_cancel_in_one_batch_keeps_stored_data(engine, clean_db):
    model = ReadModel()
    stored = [order_created(3, 1, user_id=4, total="1.00"), order_updated(3, 3, user_id=4, total="33.00", status="shipped")]
    assert await apply(engine, orders, stored) == model_apply(model, stored) == Applied(2, 0)
    batch = [order_updated(3, 2, user_id=99, total="22.00", status="paid"), order_cancelled(3, 5)]
    assert await apply(engine, orders, batch) == model_apply(model, batch) == Applied(1, 1)
    row = (await order_rows(engine))[3]
    assert (row.user_id, row.total, row.status, row.version) == (4, Decimal("33.00"), "cancelled", 5)
    await assert_matches_model(engine, model)


async def test_random_batches_match_the_model(engine, clean_db):
    """Generated histories with duplicates and late older versions, cut into batches of random
    size: every batch in one transaction, as the consumer does."""
    rng = random.Random(3)
    events = Generator(seed=5).stream(3000, duplicates=0.1, older=0.1)
    model = ReadModel()
    expected = model_apply(model, events)
    applied = stale = i = 0
    while i < len(events):
        chunk = events[i : i + rng.choice([1, 2, 5, 50, 400])]
        i += len(chunk)
        for aggregate in (users, orders):
            part = [e for e in chunk if aggregate_of(e) is aggregate]
            if part:
                result = await apply(engine, aggregate, part)
                applied, stale = applied + result.applied, stale + result.stale
    assert Applied(applied, stale) == expected
    assert expected.stale > 0
    await assert_matches_model(engine, model)


# -- placeholders: a delete/cancel of an entity never seen -------------------------------------


async def test_delete_of_unknown_user_leaves_a_placeholder_that_outranks_older_events(engine, clean_db):
    model = ReadModel()
    deleted = user_deleted(50, 4)
    assert await apply(engine, users, [deleted]) == model_apply(model, [deleted]) == Applied(1, 0)
    row = (await user_rows(engine))[50]
    assert (row.email, row.name, row.is_active, row.version) == (None, None, False, 4)
    assert row.deleted_at == row.created_at == row.updated_at == at_of(deleted)
    await assert_matches_model(engine, model)

    older = [user_created(50, 1), user_updated(50, 4)]
    assert await apply(engine, users, older) == model_apply(model, older) == Applied(0, 2)
    assert (await user_rows(engine))[50] == row

    newer = user_updated(50, 5, email="back@example.com", name="Back")
    assert await apply(engine, users, [newer]) == model_apply(model, [newer]) == Applied(1, 0)
    row = (await user_rows(engine))[50]
    assert (row.email, row.is_active, row.deleted_at, row.created_at) == ("back@example.com", True, None, at_of(deleted))
    await assert_matches_model(engine, model)


async def test_cancel_of_unknown_order_leaves_a_placeholder_that_outranks_older_events(engine, clean_db):
    model = ReadModel()
    cancelled = order_cancelled(60, 3)
    assert await apply(engine, orders, [cancelled]) == model_apply(model, [cancelled]) == Applied(1, 0)
    row = (await order_rows(engine))[60]
    assert (row.user_id, row.total, row.status, row.version) == (None, None, "cancelled", 3)
    await assert_matches_model(engine, model)

    older = [order_created(60, 1, user_id=1), order_updated(60, 2, user_id=1)]
    assert await apply(engine, orders, older) == model_apply(model, older) == Applied(0, 2)
    assert (await order_rows(engine))[60] == row
    await assert_matches_model(engine, model)


# == (b) pipeline level =========================================================================


def partition_of(key: int, partitions: int = 3) -> int:
    """murmur2, as librdkafka's murmur2_random (kcat_publish) and the Java client place keys."""
    return DefaultPartitioner()(str(key).encode(), list(range(partitions)), list(range(partitions)))


def stopped_stats(log: str) -> dict:
    for line in reversed(log.splitlines()):
        if line.startswith("{"):
            entry = orjson.loads(line)
            if entry.get("event") == "stopped":
                return entry
    raise AssertionError("the consumer logged no 'stopped' line:\n" + log[-3000:])


async def test_pipeline_applies_the_semantics_without_dead_letters(kafka, topics, consumers, engine, clean_db):
    # Two users sharing an email, keyed to different partitions.
    alice, bob = 1, next(uid for uid in range(2, 100) if partition_of(uid) != partition_of(1))
    buyer = 300  # the order's user: published on the users topic only after the order is applied
    shared = "shared@example.com"

    order_events = [
        order_created(500, 1, user_id=buyer, total="25.50"),
        order_updated(500, 2, user_id=buyer, total="25.50", status="paid"),
        order_cancelled(500, 3),
        order_cancelled(500, 3),  # duplicate (another event id, same version)
        order_updated(500, 1, user_id=buyer, total="1.00", status="shipped"),  # late, older
        order_cancelled(501, 2),  # never seen: placeholder
        order_created(501, 1, user_id=buyer),  # older than the placeholder
    ]
    revived_created = user_created(3, 1, email="carol@example.com")
    user_events = [
        user_created(alice, 1, email=shared, name="Alice"),
        user_created(bob, 1, email=shared, name="Bob"),
        revived_created,
        user_deleted(3, 2),
        dict(revived_created),  # exact duplicate
        user_updated(3, 3, email="carol2@example.com", is_active=True),  # revival
        user_updated(3, 2, email="late@example.com"),  # late, older
        user_deleted(4, 3),  # never seen: placeholder
        user_created(4, 1),  # older than the placeholder
        user_created(buyer, 1, email="buyer@example.com", name="Buyer"),
    ]

    model = ReadModel()
    proc = consumers.start()

    # Stage 1: only the orders topic has data; the order lands with no user in the table.
    kcat_publish(kafka.bootstrap, topics.orders, envelope_messages(order_events))
    await kafka.wait_committed(topics.group, topics.all, timeout=90)
    counts = model_apply(model, order_events)
    await assert_matches_model(engine, model)
    assert buyer not in await user_rows(engine)

    # Stage 2: the users, the order's user among them.
    kcat_publish(kafka.bootstrap, topics.users, envelope_messages(user_events))
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=90)
    assert consumers.stop(proc) == 0, consumers.log_text()
    user_counts = model_apply(model, user_events)
    await assert_matches_model(engine, model)

    rows = await user_rows(engine)
    assert rows[alice].email == rows[bob].email == shared
    assert (rows[3].is_active, rows[3].deleted_at, rows[3].version) == (True, None, 3)
    assert (await order_rows(engine))[500].user_id == buyer

    # The two shared-email users really were on different partitions, and nothing was lost or held up.
    placed = {int(r.key): r.partition for r in await kafka.read_all(topics.users)}
    assert placed[alice] != placed[bob]
    assert sum(ends.values()) == len(order_events) + len(user_events)
    assert await kafka.read_all(topics.users + ".dlq") == []
    assert await kafka.read_all(topics.orders + ".dlq") == []

    stats = stopped_stats(consumers.log_text())
    assert (stats["consumed"], stats["dead_lettered"]) == (len(order_events) + len(user_events), 0)
    assert (stats["applied"], stats["stale"]) == (counts.applied + user_counts.applied, counts.stale + user_counts.stale)
