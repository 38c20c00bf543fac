"""Hostile input through the real pipeline and the real database: huge records, headers, null and
mismatched keys, SQL injection strings, a fuzzed corpus, and hypothesis over the handlers."""

import random
import uuid

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from consumer.generate import Generator
from handlers.apply import apply_events
from handlers.decode import Poison, decode
from handlers.events import event_adapter
from handlers.registry import build_registry
from tests.integration.harness import assert_matches_model, kcat_publish
from tests.model import ReadModel

BROKER_MAX = 2097152  # message.max.bytes in scripts/services.sh
KCAT_BIG = ("-X", "message.max.bytes=4000000")


async def _fresh_topics(kafka, topics):
    """Source topics only: the consumer creates the DLQ topics itself (sized for big records)."""
    suffix = uuid.uuid4().hex[:8]
    users, orders = f"hostile-users-{suffix}", f"hostile-orders-{suffix}"
    await kafka.create_topics([users, orders], partitions=3)
    return users, orders


async def test_huge_records_headers_and_keys(kafka, topics, consumers, engine, clean_db, consumer_env):
    users, orders = await _fresh_topics(kafka, topics)
    gen = Generator(seed=61)
    one_mb_valid = gen.envelope("user.created", 1, gen.user_state(1)) | {"padding": "x" * (1024 * 1024)}
    one_mb_invalid = b'{"event_type": "user.created", "data": "' + b"y" * (1024 * 1024) + b'"}'
    at_max_invalid = b"z" * (BROKER_MAX - 200)  # not JSON, as large as the broker takes
    null_key = gen.envelope("user.created", 1, gen.user_state(2))
    wrong_key = gen.envelope("user.created", 1, gen.user_state(3))
    kcat_publish(
        kafka.bootstrap,
        users,
        [(b"1", orjson.dumps(one_mb_valid)), (b"1", one_mb_invalid), (b"7", at_max_invalid), (None, orjson.dumps(null_key)), (b"12345", orjson.dumps(wrong_key))],
        headers={"trace-id": "abc-123", "source": "hostile-test"},
        extra_args=KCAT_BIG,
    )
    order = gen.envelope("order.created", 1, gen.order_state(1, 1))
    kcat_publish(kafka.bootstrap, orders, [(None, orjson.dumps(order))])  # no headers, null key
    proc = consumers.start(KAFKA_TOPICS=f"{users},{orders}")
    await kafka.wait_committed(consumer_env["KAFKA_GROUP_ID"], [users, orders], timeout=120)
    assert consumers.stop(proc) == 0, consumers.log_text()

    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in (one_mb_valid, null_key, wrong_key, order)])
    await assert_matches_model(engine, model)
    dlq = await kafka.read_all(users + ".dlq")
    assert sorted(r.value for r in dlq) == sorted([one_mb_invalid, at_max_invalid])
    for r in dlq:
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["trace-id"] == "abc-123" and headers["source"] == "hostile-test"  # originals kept
        assert len(headers["x-error-message"]) <= 1000
        assert headers["x-error-type"] in {"invalid_json", "validation_error"}


SQL_INJECTIONS = [
    "Robert'); DROP TABLE users;--",
    "' OR '1'='1",
    "\"; DELETE FROM orders; --",
    "$1::text; SELECT pg_sleep(10)",
    "1; TRUNCATE consumer_offsets",
    "\\x00\\'; --",
]


async def test_sql_injection_strings_land_as_plain_data(kafka, topics, consumers, engine, clean_db):
    gen = Generator(seed=67)
    events = []
    for i, s in enumerate(SQL_INJECTIONS, start=1):
        local = "o'reilly+drop--table" if i % 2 else "x'or'1'='1"
        events.append(gen.envelope("user.created", 1, {"id": i, "email": f"{local}{i}@example.com", "name": s[:100]}))
        events.append(gen.envelope("order.created", 1, {"id": i, "user_id": i, "total": "1.00", "status": "paid"}))
    kcat_publish(kafka.bootstrap, topics.users, [(str(e["data"]["id"]).encode(), orjson.dumps(e)) for e in events if e["event_type"].startswith("user")])
    kcat_publish(kafka.bootstrap, topics.orders, [(str(e["data"]["id"]).encode(), orjson.dumps(e)) for e in events if e["event_type"].startswith("order")])
    proc = consumers.start()
    await kafka.wait_committed(topics.group, topics.all, timeout=120)
    assert consumers.stop(proc) == 0, consumers.log_text()
    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)
    async with engine.connect() as conn:
        names = set((await conn.execute(text("SELECT name FROM users"))).scalars())
    assert names == {s[:100] for s in SQL_INJECTIONS}


def _fuzz_corpus(n: int, rng: random.Random) -> list[bytes]:
    """Valid envelopes, mutated envelopes and raw garbage, none containing kcat's delimiters."""
    gen = Generator(seed=rng.randint(0, 10**6))
    base = gen.stream(n // 2)
    out: list[bytes] = []
    mutations = [
        lambda e: e | {"version": rng.choice([0, -1, 2**63, "3", 1.5, None])},
        lambda e: e | {"data": e["data"] | {"id": rng.choice([0, -5, 2**63, "12", None, 1e30])}},
        lambda e: e | {"event_type": rng.choice(["user.Created", "", "order.refunded", None, 7])},
        lambda e: e | {"occurred_at": rng.choice(["yesterday", "2026-01-01T00:00:00", 12345, ""])},
        lambda e: {k: v for k, v in e.items() if k != rng.choice(list(e))},
        lambda e: e | {"data": e["data"] | {"name": "n" * rng.choice([0, 101, 5000])}},
        lambda e: e | {"data": e["data"] | {"total": rng.choice(["-1", "1.001", "NaN", "Infinity", "1e10", 1e10])}},
        lambda e: e | {"data": e["data"] | {"email": rng.choice(["no-at", "a@", "@b.c", "a" * 250 + "@example.com"])}},
        lambda e: e | {"data": [e["data"]]},
    ]
    # kcat cannot send an empty value with a null key (it skips empty input), so none is empty.
    for event in base:
        out.append(orjson.dumps(event))
        roll = rng.random()
        if roll < 0.5:
            out.append(orjson.dumps(rng.choice(mutations)(dict(event)), default=str))
        elif roll < 0.6:
            out.append(bytes(b for b in rng.randbytes(rng.randint(1, 300)) if b not in (0x1E, 0x1F)))
        elif roll < 0.65:
            raw = orjson.dumps(event)
            out.append(raw[: rng.randint(1, len(raw))])
        elif roll < 0.7:
            out.append(b'{"event_type": "user.created", "event_type": "user.deleted", ' + orjson.dumps(event)[1:])
        elif roll < 0.75:
            depth = rng.choice([10, 200, 2000])
            out.append(orjson.dumps(event)[:-1] + b', "nested": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")
    return [v if v else b" " for v in out]


async def test_fuzzed_corpus_never_stalls_and_lands_in_dlq_or_applies(kafka, topics, consumers, engine, clean_db):
    rng = random.Random(71)
    corpus = _fuzz_corpus(2000, rng)
    # Keyed by entity id where there is one (so each entity stays in one partition, in order);
    # poison gets arbitrary keys, some null.
    keys = []
    for i, v in enumerate(corpus):
        decoded = decode(v)
        keys.append(None if i % 7 == 0 else str(i % 97).encode()) if isinstance(decoded, Poison) else keys.append(str(decoded.data.id).encode())
    kcat_publish(kafka.bootstrap, topics.users, list(zip(keys, corpus)))
    proc = consumers.start(BATCH_MAX_RECORDS="300")
    await kafka.wait_committed(topics.group, topics.all, timeout=180)
    assert consumers.stop(proc) == 0, consumers.log_text()

    expected_poison = sorted(v for v in corpus if isinstance(decode(v), Poison))
    dlq = await kafka.read_all(topics.users + ".dlq")
    assert sorted(r.value for r in dlq) == expected_poison
    assert len(expected_poison) > 100  # the corpus really is hostile
    model = ReadModel()
    model.apply_bytes(corpus)
    await assert_matches_model(engine, model)


# -- hypothesis over the handlers, against the real database --------------------------------

_ids = st.integers(min_value=1, max_value=6)
_versions = st.integers(min_value=1, max_value=8)
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=100)


@st.composite
def _events(draw):
    kind = draw(st.sampled_from(["user.created", "user.updated", "user.deleted", "order.created", "order.updated", "order.cancelled"]))
    entity = draw(_ids)
    if kind in ("user.created", "user.updated"):
        data = {"id": entity, "email": f"u{draw(st.integers(0, 99))}@example.com", "name": draw(_text), "is_active": draw(st.booleans())}
    elif kind in ("order.created", "order.updated"):
        cents = draw(st.integers(min_value=0, max_value=10**12 - 1))
        data = {"id": entity, "user_id": draw(_ids), "total": f"{cents // 100}.{cents % 100:02d}", "status": draw(st.sampled_from(["pending", "paid", "shipped", "delivered", "cancelled"]))}
    else:
        data = {"id": entity}
    minute = draw(st.integers(0, 59))
    return event_adapter.validate_python(
        {"event_id": str(uuid.uuid4()), "event_type": kind, "occurred_at": f"2026-05-01T10:{minute:02d}:00+00:00", "version": draw(_versions), "data": data}
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_events(), min_size=1, max_size=12), min_size=1, max_size=4))
async def test_handlers_match_the_model_for_any_batches(engine, batches):
    registry = build_registry()
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE users, orders"))
    model = ReadModel()
    applied = stale = expected_applied = 0
    for batch in batches:
        async with engine.begin() as conn:
            counts = (await apply_events(conn, registry, batch)).totals()
        applied += counts["applied"]
        stale += counts["stale"]
        for event in batch:
            expected_applied += model.apply(event)
    await assert_matches_model(engine, model)
    assert applied + stale == sum(len(b) for b in batches)
    assert applied == expected_applied  # the counts are exact, as applying one by one
