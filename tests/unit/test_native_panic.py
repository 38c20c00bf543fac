"""A panic in the native code (pyo3's PanicException, a BaseException) is a fallback, not a death:
the part takes the Python path, counted as reason "panic" and logged at ERROR. The panic is real:
a descriptor whose row reads a field of the wrong type for its column trips the Rust encoder's
defect check (native/src/lib.rs `CopyRows::value`)."""

import json

import ec_native
import structlog
from aiokafka import TopicPartition

from consumer.batch import Preparer
from handlers.registry import build_registry
from tests.unit.records import Rec

TP = TopicPartition("users", 0)


def user(entity_id: int, version: int) -> bytes:
    return json.dumps({
        "event_id": "3f1c2a9e-8f5b-4b0a-9a57-1a2b3c4d5e6f", "event_type": "user.created", "occurred_at": "2026-01-01T00:00:00Z",
        "version": version, "data": {"id": entity_id, "email": f"u{entity_id}@example.com", "name": "Ada"},
    }).encode()


def panicking_preparer() -> Preparer:
    preparer = Preparer(build_registry())
    descriptor = preparer.native.description.descriptor  # type: ignore[union-attr]
    spec = next(t for t in descriptor["types"] if t["name"] == "user.created")
    row = list(spec["row"])
    row[1] = ("field", spec["version"])  # the email column (text) fed an integer: a defect
    spec["row"] = row
    preparer.native.compiled = ec_native.Contract(descriptor)  # type: ignore[union-attr]
    return preparer


def test_a_native_panic_sends_the_part_to_the_python_path():
    records = {TP: [Rec("users", 0, i, b"1", user(i % 3 + 1, i + 1), ()) for i in range(7)] + [Rec("users", 0, 7, b"1", b"{bad", ())]}
    with structlog.testing.capture_logs() as logs:
        [batch] = panicking_preparer().prepare(records)
    [reference] = Preparer(build_registry(), native=False).prepare(records)
    assert batch.sources is None  # the Python path's part
    assert batch.fallbacks == {"panic": 7}
    assert batch.labels == reference.labels and len(batch.poison) == len(reference.poison) == 1
    assert [(p.aggregate.name, p.entity_ids, p.full_rows, p.patch_rows) for p, _ in batch.prepared.parts] == [
        (p.aggregate.name, p.entity_ids, p.full_rows, p.patch_rows) for p, _ in reference.prepared.parts
    ]
    [error] = [e for e in logs if e["log_level"] == "error"]
    assert error["reason"] == "panic" and "PanicException" in error["error"]


def test_without_the_defect_the_same_records_stay_native():
    records = {TP: [Rec("users", 0, i, b"1", user(i % 3 + 1, i + 1), ()) for i in range(7)]}
    [batch] = Preparer(build_registry()).prepare(records)
    assert batch.sources is not None and not batch.fallbacks
