"""The benchmark's input: generated events (consumer.generate), a few malformed records mixed in,
and the expected final state (tests.model.ReadModel, applied event by event)."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from consumer.generate import Generator, topic_for

USERS, ORDERS = "users", "orders"

_GOOD = {
    "event_id": "6f1c1d2e-4f70-4c0e-9b1e-2a3b4c5d6e7f",
    "event_type": "user.created",
    "occurred_at": "2026-03-01T10:00:00+02:00",
    "version": 1,
    "data": {"id": 7, "email": "a@example.com", "name": "A"},
}
# One of each kind of poison the consumer dead-letters (none uses kcat's delimiter bytes).
MALFORMED_KINDS: list[bytes] = [
    b"\xff\xfe garbage, not UTF-8",
    b"{not json",
    b"[1, 2, 3]",
    orjson.dumps({**_GOOD, "event_type": "user.exploded"}),
    orjson.dumps({**_GOOD, "version": 0}),
    orjson.dumps({**_GOOD, "data": {"id": 7, "email": "not-an-email", "name": "A"}}),
    orjson.dumps({**_GOOD, "occurred_at": "2026-03-01T10:00:00"}),
    orjson.dumps({k: v for k, v in _GOOD.items() if k != "event_id"}),
    orjson.dumps({**_GOOD, "data": {"id": "7", "email": "a@example.com", "name": "A"}}),
    orjson.dumps({**_GOOD, "event_type": "order.created", "data": {"id": 1, "user_id": 1, "total": "1.001", "status": "paid"}}),
]
SOURCES = ["web", "mobile", "api", "batch"]
TAGS = ["promo", "beta", "vip", "eu", "us", "retry", "import"]


def with_extra_fields(value: bytes) -> bytes:
    """The same event as a newer producer sends it (bench.run --extra-fields): a random 32-hex
    `trace_id` and `schema_version` 2 on the envelope, a `source` and a few `tags` in `data`. The
    contract ignores extra fields, so the final state is the plain workload's. Drawn from the
    event_id, so an exact duplicate stays an exact duplicate."""
    event = orjson.loads(value)
    rng = random.Random(event["event_id"])
    data = {**event["data"], "source": rng.choice(SOURCES), "tags": rng.sample(TAGS, rng.randint(1, 3))}
    return orjson.dumps({**event, "trace_id": f"{rng.getrandbits(128):032x}", "schema_version": 2, "data": data})


@dataclass
class Workload:
    n: int  # records published in all (events + malformed)
    seed: int
    malformed: int
    messages: dict[str, list[tuple[bytes, bytes]]]  # USERS/ORDERS -> (key, value) in publish order
    model: object  # tests.model.ReadModel

    @property
    def events(self) -> int:
        return self.n - self.malformed

    def values(self) -> Iterator[bytes]:
        for role in (USERS, ORDERS):
            for _, value in self.messages[role]:
                yield value


def malformed_records(count: int, rng: random.Random) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(count):
        value = MALFORMED_KINDS[i % len(MALFORMED_KINDS)] + b" " * (i // len(MALFORMED_KINDS))
        out.append((str(rng.randint(1, 10**6)).encode(), value))
    return out


def generate_chunk(
    n: int, seed: int, *, malformed: int = 0, user_id_base: int = 0, order_id_base: int = 0, extra_fields: bool = False
) -> tuple[dict[str, list[tuple[bytes, bytes]]], list[bytes]]:
    """n records: n - malformed generated events (~30% users, 5% exact duplicates, 5% late older
    versions), plus `malformed` poison records inserted at random places on both topics.
    Returns the messages per topic role and the valid values in generation order (for the model).
    extra_fields: the events are published with_extra_fields (the values for the model stay plain;
    the malformed records are the same)."""
    rng = random.Random(seed * 7919 + 1)
    events = Generator(seed=seed, user_id_base=user_id_base, order_id_base=order_id_base).stream(
        n - malformed, duplicates=0.05, older=0.05, user_share=0.3
    )
    messages: dict[str, list[tuple[bytes, bytes]]] = {USERS: [], ORDERS: []}
    in_order: list[bytes] = []
    for event in events:
        value = orjson.dumps(event)
        in_order.append(value)
        published = with_extra_fields(value) if extra_fields else value
        messages[topic_for(event, USERS, ORDERS)].append((str(event["data"]["id"]).encode(), published))
    for i, record in enumerate(malformed_records(malformed, rng)):
        target = messages[USERS if i % 2 == 0 else ORDERS]
        target.insert(rng.randrange(len(target) + 1), record)
    return messages, in_order


def build(n: int, seed: int = 1, malformed: int = 20, extra_fields: bool = False) -> Workload:
    from tests.model import ReadModel

    messages, in_order = generate_chunk(n, seed, malformed=malformed, extra_fields=extra_fields)
    model = ReadModel()
    # Every entity's events stay on one topic and one partition (keyed by id), in generation
    # order: applying them one by one in that order is the expected final state.
    model.apply_bytes(in_order)
    return Workload(n=n, seed=seed, malformed=malformed, messages=messages, model=model)


# -- files handed to the child processes of the limits ----------------------------------------


def write_values(path: Path, values: Iterable[bytes]) -> int:
    count = 0
    with path.open("wb") as fh:
        for value in values:
            fh.write(struct.pack("<I", len(value)))
            fh.write(value)
            count += 1
    return count


def read_values(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        out.append(data[pos : pos + length])
        pos += length
    return out


USER_COLUMNS = ("id", "email", "name", "is_active", "version", "deleted_at", "created_at", "updated_at")
ORDER_COLUMNS = ("id", "user_id", "total", "status", "version", "created_at", "updated_at")


def final_rows(model) -> dict[str, list[tuple]]:
    """The model's rows as tuples in table column order (what the database limit writes)."""
    return {
        "users": [tuple(getattr(r, c) for c in USER_COLUMNS) for r in model.users.values()],
        "orders": [tuple(getattr(r, c) for c in ORDER_COLUMNS) for r in model.orders.values()],
    }
