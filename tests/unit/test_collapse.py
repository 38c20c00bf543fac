"""handlers.collapse: the per-entity collapse of a batch must give exactly the rows that applying
the events one by one (tests.model.ReadModel) gives, when its result is written the way
handlers.aggregate.Aggregate.apply writes it (two version-guarded upserts)."""

from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.aggregate import Aggregate
from handlers.collapse import EntityChange, collapse, count_outcomes
from handlers.events import OrderCancelled, OrderCreated, OrderUpdated, UserCreated, UserDeleted, UserUpdated
from tests.aggregates import orders
from tests.aggregates import users
from tests.model import OrderRow, ReadModel, UserRow

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
EVENT_ID = UUID(int=1)
EMAILS = ["a@example.com", "b@example.com", "c@example.com"]
NAMES = ["Ada", "Grace", "Barbara"]
TOTALS = [Decimal("0"), Decimal("12.34"), Decimal("9999999999.99")]
STATUSES = ["pending", "paid", "shipped", "delivered", "cancelled"]


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def user_event(kind: str, entity_id: int, version: int, when: datetime, variant: int = 0):
    common = {"event_id": EVENT_ID, "occurred_at": when, "version": version}
    if kind == "user.deleted":
        return UserDeleted(event_type=kind, data={"id": entity_id}, **common)
    cls = UserCreated if kind == "user.created" else UserUpdated
    data = {"id": entity_id, "email": EMAILS[variant % 3], "name": NAMES[variant % 3], "is_active": variant % 2 == 0}
    return cls(event_type=kind, data=data, **common)


def order_event(kind: str, entity_id: int, version: int, when: datetime, variant: int = 0):
    common = {"event_id": EVENT_ID, "occurred_at": when, "version": version}
    if kind == "order.cancelled":
        return OrderCancelled(event_type=kind, data={"id": entity_id}, **common)
    cls = OrderCreated if kind == "order.created" else OrderUpdated
    data = {"id": entity_id, "user_id": 100 + variant, "total": TOTALS[variant % 3], "status": STATUSES[variant % 5]}
    return cls(event_type=kind, data=data, **common)


AGGREGATES = {
    "users": (users, user_event, ["user.created", "user.updated", "user.deleted"], UserRow),
    "orders": (orders, order_event, ["order.created", "order.updated", "order.cancelled"], OrderRow),
}


# -- a pure simulation of Aggregate.apply over dict rows ---------------------------------------


def _update_columns(upsert) -> set[str]:
    """The SET list of an ON CONFLICT DO UPDATE statement built by handlers.sql.unnest_upsert."""
    clause = upsert._post_values_clause
    return {getattr(k, "name", k) for k in dict(clause.update_values_to_set)}


def _guarded_upsert(rows: dict[int, dict], row: dict, update: set[str]) -> None:
    """INSERT ... ON CONFLICT (id) DO UPDATE SET <update> WHERE excluded.version > t.version"""
    current = rows.get(row["id"])
    if current is None:
        rows[row["id"]] = dict(row)
    elif row["version"] > current["version"]:
        current.update({k: row[k] for k in update})


def simulate_apply(aggregate: Aggregate, rows: dict[int, dict], events: list) -> tuple[int, int]:
    """Mirrors Aggregate.apply: one statement reads the stored versions and upserts the full rows,
    then one statement upserts the patch rows. Mutates rows; returns (applied, stale)."""
    changes, stale_in_batch = collapse(events, aggregate._is_full)
    if not changes:
        return 0, stale_in_batch
    ids = [c.entity_id for c in changes]
    assert len(ids) == len(set(ids)), "an unnest upsert cannot touch one row twice"
    stored = {i: rows[i]["version"] for i in ids if i in rows}
    columns = aggregate.columns
    for change in changes:
        if change.full is not None:
            row = dict(zip(columns, aggregate._full_row(change), strict=True))
            _guarded_upsert(rows, row, _update_columns(aggregate._full_upsert))
    for change in changes:
        if change.patch is not None:
            row = dict(zip(columns, aggregate._patch_row(change), strict=True))
            _guarded_upsert(rows, row, _update_columns(aggregate._patch_upsert))
    applied, stale = count_outcomes(changes, stored)
    return applied, stale + stale_in_batch


def test_the_projections_update_what_the_read_model_promises():
    assert _update_columns(users._full_upsert) == {"email", "name", "is_active", "version", "deleted_at", "updated_at"}
    assert _update_columns(users._patch_upsert) == {"is_active", "version", "deleted_at", "updated_at"}
    assert _update_columns(orders._full_upsert) == {"user_id", "total", "status", "version", "updated_at"}
    assert _update_columns(orders._patch_upsert) == {"status", "version", "updated_at"}


# -- strategies --------------------------------------------------------------------------------

ENTITY_IDS = st.integers(min_value=1, max_value=4)
VERSIONS = st.integers(min_value=1, max_value=6)
SECONDS = st.integers(min_value=0, max_value=50)


@st.composite
def stored_user_row(draw, entity_id: int) -> dict:
    placeholder = draw(st.booleans())
    deleted = placeholder or draw(st.booleans())
    return {
        "id": entity_id,
        "email": None if placeholder else draw(st.sampled_from(EMAILS)),
        "name": None if placeholder else draw(st.sampled_from(NAMES)),
        "is_active": False if deleted else draw(st.booleans()),
        "version": draw(VERSIONS),
        "deleted_at": at(draw(SECONDS) - 100) if deleted else None,
        "created_at": at(-1000 - draw(SECONDS)),
        "updated_at": at(-100 - draw(SECONDS)),
    }


@st.composite
def stored_order_row(draw, entity_id: int) -> dict:
    placeholder = draw(st.booleans())
    return {
        "id": entity_id,
        "user_id": None if placeholder else draw(st.integers(1, 5)),
        "total": None if placeholder else draw(st.sampled_from(TOTALS)),
        "status": "cancelled" if placeholder else draw(st.sampled_from(STATUSES)),
        "version": draw(VERSIONS),
        "created_at": at(-1000 - draw(SECONDS)),
        "updated_at": at(-100 - draw(SECONDS)),
    }


@st.composite
def scenarios(draw, name: str):
    aggregate, make_event, kinds, _ = AGGREGATES[name]
    row_strategy = stored_user_row if name == "users" else stored_order_row
    stored_ids = draw(st.sets(ENTITY_IDS, max_size=4))
    stored = {i: draw(row_strategy(i)) for i in sorted(stored_ids)}
    specs = draw(st.lists(st.tuples(ENTITY_IDS, VERSIONS, st.sampled_from(kinds), SECONDS, st.integers(0, 5)), max_size=25))
    events = [make_event(kind, entity_id, version, at(seconds), variant) for entity_id, version, kind, seconds, variant in specs]
    return stored, events


def model_rows(name: str, stored: dict[int, dict], events: list) -> tuple[dict[int, dict], int]:
    _, _, _, row_type = AGGREGATES[name]
    model = ReadModel()
    table = model.users if name == "users" else model.orders
    for entity_id, row in stored.items():
        table[entity_id] = row_type(**row)
    applied = sum(1 for event in events if model.apply(event))
    return {entity_id: asdict(row) for entity_id, row in table.items()}, applied


# -- the key property --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(AGGREGATES))
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_collapse_then_two_guarded_upserts_equals_one_by_one(name, data):
    stored, events = data.draw(scenarios(name))
    aggregate = AGGREGATES[name][0]

    rows = {i: dict(r) for i, r in stored.items()}
    applied, stale = simulate_apply(aggregate, rows, events)
    expected, expected_applied = model_rows(name, stored, events)

    assert rows == expected
    assert applied == expected_applied
    assert applied + stale == len(events)


@pytest.mark.parametrize("name", sorted(AGGREGATES))
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_collapse_invariants(name, data):
    stored, events = data.draw(scenarios(name))
    aggregate = AGGREGATES[name][0]
    changes, stale_in_batch = collapse(events, aggregate._is_full)

    ids = [c.entity_id for c in changes]
    assert ids == sorted(set(e.data.id for e in events))
    assert stale_in_batch + sum(len(c.versions) for c in changes) == len(events)
    for change in changes:
        mine = [e for e in events if e.data.id == change.entity_id]
        # versions: the strict running maximum of the entity's versions, in batch order
        record_breakers, best = [], 0
        for e in mine:
            if e.version > best:
                record_breakers.append(e)
                best = e.version
        assert change.versions == [e.version for e in record_breakers]
        assert change.first_occurred_at == mine[0].occurred_at
        fulls = [e for e in record_breakers if aggregate._is_full(e)]
        assert change.full is (fulls[-1] if fulls else None)
        after = record_breakers[record_breakers.index(fulls[-1]) + 1 :] if fulls else record_breakers
        assert all(not aggregate._is_full(e) for e in after)
        assert change.patch is (after[-1] if after else None)
        if change.full is not None and change.patch is not None:
            assert change.patch.version > change.full.version
        assert change.versions[-1] == max(e.version for e in mine)

    applied, stale = count_outcomes(changes, {i: r["version"] for i, r in stored.items()})
    assert applied + stale + stale_in_batch == len(events)
    _, expected_applied = model_rows(name, stored, events)
    assert applied == expected_applied


# -- examples ----------------------------------------------------------------------------------


def test_empty_batch():
    assert collapse([], users._is_full) == ([], 0)
    assert count_outcomes([], {}) == (0, 0)


def test_changes_are_sorted_by_entity_id():
    events = [user_event("user.created", i, 1, at(i)) for i in (5, 2, 9, 1)]
    changes, stale = collapse(events, users._is_full)
    assert [c.entity_id for c in changes] == [1, 2, 5, 9]
    assert stale == 0


def test_duplicates_and_older_versions_within_the_batch_are_stale():
    events = [
        user_event("user.created", 1, 1, at(0)),
        user_event("user.updated", 1, 3, at(1), variant=1),
        user_event("user.updated", 1, 3, at(2), variant=2),  # same version: stale
        user_event("user.updated", 1, 2, at(3), variant=2),  # older: stale
        user_event("user.deleted", 1, 1, at(4)),  # older: stale
    ]
    [change], stale = collapse(events, users._is_full)
    assert stale == 3
    assert change.versions == [1, 3]
    assert change.full is events[1]
    assert change.patch is None
    assert change.first_occurred_at == at(0)


def test_partial_after_full_is_kept_as_patch():
    events = [user_event("user.created", 1, 1, at(0)), user_event("user.deleted", 1, 2, at(1))]
    [change], _ = collapse(events, users._is_full)
    assert change.full is events[0]
    assert change.patch is events[1]


def test_full_after_partial_clears_the_patch():
    events = [order_event("order.cancelled", 1, 2, at(0)), order_event("order.updated", 1, 3, at(1))]
    [change], _ = collapse(events, orders._is_full)
    assert change.full is events[1]
    assert change.patch is None
    assert change.first_occurred_at == at(0)


def test_only_partials():
    events = [order_event("order.cancelled", 1, 2, at(0)), order_event("order.cancelled", 1, 4, at(1))]
    [change], _ = collapse(events, orders._is_full)
    assert change.full is None
    assert change.patch is events[1]
    assert change.versions == [2, 4]


def test_first_occurred_at_is_of_the_first_event_even_if_later_ones_are_older():
    events = [user_event("user.updated", 1, 2, at(10)), user_event("user.updated", 1, 3, at(5))]
    [change], _ = collapse(events, users._is_full)
    assert change.first_occurred_at == at(10)


def test_count_outcomes_against_stored_versions():
    changes = [
        EntityChange(1, at(0), versions=[1, 2, 5]),
        EntityChange(2, at(0), versions=[3]),
        EntityChange(3, at(0), versions=[1, 2]),
    ]
    # entity 1 stored at 2: 5 applies; entity 2 stored at 7: stale; entity 3 absent: both apply
    assert count_outcomes(changes, {1: 2, 2: 7}) == (3, 3)


def test_delete_of_an_absent_user_inserts_a_placeholder():
    rows: dict[int, dict] = {}
    applied, stale = simulate_apply(users, rows, [user_event("user.deleted", 4, 3, at(7))])
    assert (applied, stale) == (1, 0)
    assert rows[4] == {
        "id": 4, "email": None, "name": None, "is_active": False, "version": 3,
        "deleted_at": at(7), "created_at": at(7), "updated_at": at(7),
    }


def test_full_state_after_delete_revives_the_user():
    rows: dict[int, dict] = {}
    simulate_apply(users, rows, [user_event("user.created", 1, 1, at(0)), user_event("user.deleted", 1, 2, at(1))])
    assert rows[1]["deleted_at"] == at(1) and rows[1]["is_active"] is False and rows[1]["email"] == EMAILS[0]
    simulate_apply(users, rows, [user_event("user.updated", 1, 3, at(2), variant=2)])
    assert rows[1]["deleted_at"] is None and rows[1]["is_active"] is True and rows[1]["name"] == NAMES[2]
    assert rows[1]["created_at"] == at(0)
