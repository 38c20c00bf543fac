"""consumer.loop.ConsumerLoop with fake Kafka ports and a fake _apply: no Kafka, no database."""

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError
from sqlalchemy.exc import IntegrityError, OperationalError

from consumer.batch import Batch, Preparer, deal_partitions
from consumer.loop import KAFKA_COMMIT_ATTEMPTS, ConsumerLoop
from consumer.pipeline import build_pipeline
from consumer.writer import StaleBatch
from consumer.retry import Backoff
from handlers.registry import build_registry
from tests.unit.records import FunctionWriter, Rec

TP0 = TopicPartition("users", 0)
TP1 = TopicPartition("users", 1)
TP_ORDERS = TopicPartition("orders", 0)
OUR_HEADERS = ["x-error-type", "x-error-message", "x-original-topic", "x-original-partition", "x-original-offset"]


def user_value(entity_id: int = 1, version: int = 1) -> bytes:
    return json.dumps(
        {
            "event_id": "3f1c2a9e-8f5b-4b0a-9a57-1a2b3c4d5e6f",
            "event_type": "user.created",
            "occurred_at": "2026-01-01T00:00:00Z",
            "version": version,
            "data": {"id": entity_id, "email": "a@example.com", "name": "Ada"},
        }
    ).encode()


def rec(tp: TopicPartition, offset: int, value: bytes | None, key: bytes | None = b"1", headers: tuple = ()) -> Rec:
    return Rec(tp.topic, tp.partition, offset, key, value, headers)


class FakeConsumer:
    def __init__(self, log: list, assigned: set[TopicPartition], commit_errors: list[BaseException] | None = None) -> None:
        self.log = log
        self.assigned = set(assigned)
        self.commit_errors = list(commit_errors or [])
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.batches: list[dict] = []

    async def getmany(self, *partitions, timeout_ms: int = 0, max_records: int | None = None):
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else {}

    async def commit(self, offsets):
        self.log.append(("commit", dict(offsets)))
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append(dict(offsets))

    async def committed(self, partition):
        return None

    def assignment(self):
        return set(self.assigned)

    def seek(self, partition, offset):
        self.seeks.append((partition, offset))


class FakeProducer:
    """send() returns an already-resolved future; `failures` futures fail first, with KafkaConnectionError."""

    def __init__(self, log: list, failures: int = 0) -> None:
        self.log = log
        self.failures = failures
        self.sent: list[dict] = []

    async def send(self, topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None):
        call = {"topic": topic, "value": value, "key": key, "headers": list(headers or [])}
        self.sent.append(call)
        self.log.append(("send", topic))
        future = asyncio.get_running_loop().create_future()
        if self.failures > 0:
            self.failures -= 1
            future.set_exception(KafkaConnectionError("broker went away"))
        else:
            future.set_result(("metadata", topic))
        return future


class FakeApply:
    """The write of a FunctionWriter (consumer.writer.BatchWriter.write): records the batches, raises the queued errors first."""

    def __init__(self, log: list, errors: list[BaseException] | None = None) -> None:
        self.log = log
        self.errors = list(errors or [])
        self.batches: list[Batch] = []

    async def __call__(self, loop: ConsumerLoop, batch: Batch, dead_letters=None) -> Counter:
        # Like the real _apply, the commit waits for the batch's dead letters to be acked; the
        # log entry stands for the commit.
        if dead_letters is not None:
            await asyncio.shield(dead_letters)
        self.log.append(("apply", len(batch.events)))
        self.batches.append(batch)
        if self.errors:
            raise self.errors.pop(0)
        return Counter(applied=len(batch.events), dead_lettered=len(batch.poison))


@dataclass
class Harness:
    loop: ConsumerLoop
    consumer: FakeConsumer
    producer: FakeProducer
    apply: FakeApply
    log: list = field(default_factory=list)


@pytest.fixture(params=["python-path", "native-path"])
def make(monkeypatch, request):
    native = request.param == "native-path"
    if native:
        prepare = Preparer.prepare

        def prepare_then_decode(self, records, writers=1):
            # The fakes below read batch.events, which the native path leaves empty: fill them in
            # after checking that every part did come through the native path.
            assert self.native is not None
            parts = prepare(self, records, writers)
            for part in parts:
                assert part.sources is not None, "the part fell back to the Python path"
                assert not part.fallbacks, part.fallbacks
                self.ensure_decoded(part)
            return parts

        monkeypatch.setattr(Preparer, "prepare", prepare_then_decode)

    def build(*, assigned=(TP0, TP1, TP_ORDERS), producer_failures=0, apply_errors=None, commit_errors=None, write_concurrency=1) -> Harness:
        log: list = []
        consumer = FakeConsumer(log, set(assigned), commit_errors)
        producer = FakeProducer(log, producer_failures)
        fake_apply = FakeApply(log, apply_errors)

        writer = FunctionWriter(fake_apply)
        loop = ConsumerLoop(
            consumer=consumer,
            pipeline=build_pipeline(build_registry(), None, producer, ".dlq", group_id="test-group", native=native, writer=writer),  # type: ignore[arg-type]
            group_id="test-group",
            batch_max_records=100,
            backoff=Backoff(initial_s=0.001, max_s=0.002),
            shutdown_timeout_s=5.0,
            poll_timeout_ms=1,
            write_concurrency=write_concurrency,
        )
        assert loop.native is native, loop.native_unavailable
        writer.loop = loop
        return Harness(loop, consumer, producer, fake_apply, log)

    return build


# -- happy path --------------------------------------------------------------------------------


async def test_valid_batch_is_applied_then_committed(make):
    h = make()
    records = {TP0: [rec(TP0, 10, user_value(1)), rec(TP0, 11, user_value(2))], TP1: [rec(TP1, 3, user_value(3))]}
    await h.loop.process(records)

    assert h.producer.sent == []
    [batch] = h.apply.batches
    assert [e.event_type for e in batch.events] == ["user.created"] * 3
    assert [e.data.id for e in batch.events] == [1, 2, 3]
    assert [r.offset for r in batch.event_records] == [10, 11, 3]
    assert batch.first_offsets == {TP0: 10, TP1: 3}
    assert h.consumer.commits == [{TP0: 12, TP1: 4}]
    assert h.log == [("apply", 3), ("commit", {TP0: 12, TP1: 4})]
    s = h.loop.stats
    assert (s.batches, s.records, s.applied, s.dead_lettered, s.tombstones, s.db_retries) == (1, 3, 3, 0, 0, 0)
    assert s.last_commit_at is not None


async def test_records_are_decoded_off_the_event_loop_thread(make, monkeypatch):
    """Decoding a big batch must not hold the event loop: the batch in flight sends its next
    statement when the database answers (bench/README.md, round 4)."""
    h = make()
    decoding_threads = []

    prepare_part = Preparer.prepare_part

    def recording(self, *args):
        decoding_threads.append(threading.get_ident())
        return prepare_part(self, *args)

    monkeypatch.setattr(Preparer, "prepare_part", recording)
    await h.loop.process({TP0: [rec(TP0, 0, user_value(1))], TP1: [rec(TP1, 0, user_value(2))]})

    assert len(decoding_threads) == 1
    assert threading.get_ident() not in decoding_threads
    assert [e.data.id for b in h.apply.batches for e in b.events] == [1, 2]  # and the result arrived


async def test_commit_is_last_offset_plus_one_per_partition_and_only_for_assigned(make):
    h = make(assigned={TP0})
    records = {
        TP0: [rec(TP0, 5, user_value(1)), rec(TP0, 6, None), rec(TP0, 9, user_value(1, 2))],
        TP1: [rec(TP1, 40, user_value(2))],
    }
    await h.loop.process(records)
    assert h.consumer.commits == [{TP0: 10}]
    assert h.log.index(("apply", 3)) < h.log.index(("commit", {TP0: 10}))


async def test_nothing_committed_when_no_partition_is_assigned(make):
    h = make(assigned=set())
    await h.loop.process({TP0: [rec(TP0, 0, user_value())]})
    assert h.log == [("apply", 1)]
    assert h.consumer.commits == []


# -- dead letters ------------------------------------------------------------------------------


async def test_poison_is_dead_lettered_with_headers_before_apply(make):
    h = make()
    original_headers = (("trace-id", b"abc"), ("x-error-type", b"spoofed"))
    records = {
        TP0: [
            rec(TP0, 7, b"\xff\xfe", key=b"k-utf8"),
            rec(TP0, 8, user_value(1)),
            rec(TP0, 9, b"{not json", key=None, headers=original_headers),
        ],
        TP_ORDERS: [
            rec(TP_ORDERS, 100, b"[1, 2]", key=b"k-list"),
            rec(TP_ORDERS, 101, json.dumps({"event_type": "order.refunded"}).encode(), key=b"k-unknown"),
            rec(TP_ORDERS, 102, json.dumps({"event_type": "order.created", "version": 0}).encode(), key=b"k-invalid"),
        ],
    }
    await h.loop.process(records)

    sends = [i for i, entry in enumerate(h.log) if entry[0] == "send"]
    assert len(sends) == 5
    assert max(sends) < h.log.index(("apply", 1)) < h.log.index(("commit", {TP_ORDERS: 103, TP0: 10}))

    by_offset = {int(dict(s["headers"])["x-original-offset"]): s for s in h.producer.sent}
    expected = {
        7: ("users.dlq", b"k-utf8", b"\xff\xfe", "not_utf8", "users", 0),
        9: ("users.dlq", None, b"{not json", "invalid_json", "users", 0),
        100: ("orders.dlq", b"k-list", b"[1, 2]", "not_object", "orders", 0),
        101: ("orders.dlq", b"k-unknown", records[TP_ORDERS][1].value, "unknown_event_type", "orders", 0),
        102: ("orders.dlq", b"k-invalid", records[TP_ORDERS][2].value, "validation_error", "orders", 0),
    }
    assert set(by_offset) == set(expected)
    for offset, (topic, key, value, error_type, original_topic, partition) in expected.items():
        sent = by_offset[offset]
        assert (sent["topic"], sent["key"], sent["value"]) == (topic, key, value)
        headers = sent["headers"]
        assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
        ours = {k: v for k, v in headers if k in OUR_HEADERS}
        assert list(ours) == OUR_HEADERS
        assert ours["x-error-type"] == error_type.encode()
        assert ours["x-error-message"]
        assert ours["x-original-topic"] == original_topic.encode()
        assert ours["x-original-partition"] == str(partition).encode()
        assert ours["x-original-offset"] == str(offset).encode()
        assert [k for k, _ in headers].count("x-error-type") == 1

    # original headers are kept, but ours replace spoofed ones
    assert ("trace-id", b"abc") in by_offset[9]["headers"]
    assert ("x-error-type", b"spoofed") not in by_offset[9]["headers"]

    [batch] = h.apply.batches
    assert len(batch.poison) == 5
    assert h.loop.stats.dead_lettered == 5
    assert h.loop.stats.records == 6


async def test_dlq_send_is_retried_on_connection_errors_and_apply_waits_for_success(make):
    h = make(producer_failures=2)
    await h.loop.process({TP0: [rec(TP0, 0, b"garbage", key=b"k"), rec(TP0, 1, user_value())]})

    assert [e[0] for e in h.log] == ["send", "send", "send", "apply", "commit"]
    assert len(h.apply.batches) == 1
    assert all(s["topic"] == "users.dlq" and s["value"] == b"garbage" and s["key"] == b"k" for s in h.producer.sent)
    assert h.consumer.commits == [{TP0: 2}]
    assert h.loop.stats.dead_lettered == 1
    assert h.loop.stats.db_retries == 0


async def test_dead_letters_overlap_the_transaction_and_its_commit_waits_for_their_acks(make, monkeypatch):
    h = make()
    ack = asyncio.get_running_loop().create_future()

    async def send(topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None):
        h.log.append(("send", topic))
        return ack

    async def _apply(self, batch, dead_letters=None):
        h.log.append(("statements", len(batch.events)))  # the transaction's work, before COMMIT
        await asyncio.shield(dead_letters)
        h.log.append(("db-commit", len(batch.events)))
        return Counter(applied=len(batch.events), dead_lettered=len(batch.poison))

    monkeypatch.setattr(h.producer, "send", send)
    monkeypatch.setattr(h.loop._writer, "fn", _apply)
    task = asyncio.create_task(h.loop.process({TP0: [rec(TP0, 0, b"garbage"), rec(TP0, 1, user_value())]}))
    await wait_for(lambda: ("statements", 1) in h.log)
    await asyncio.sleep(0.01)
    assert ("db-commit", 1) not in h.log and h.consumer.commits == []  # no ack yet: no commit
    ack.set_result(("metadata", "users.dlq"))
    assert await task is True
    assert h.log == [("send", "users.dlq"), ("statements", 1), ("db-commit", 1), ("commit", {TP0: 2})]


async def test_a_failed_dead_letter_send_rolls_the_transaction_back(make, monkeypatch):
    h = make()
    rolled_back = []

    async def refuse(*args, **kwargs):
        raise ValueError("message too large")

    async def _apply(self, batch, dead_letters=None):
        try:
            await asyncio.shield(dead_letters)
        except ValueError:
            rolled_back.append(batch.size)
            raise
        return Counter()

    monkeypatch.setattr(h.producer, "send", refuse)
    monkeypatch.setattr(h.loop._writer, "fn", _apply)
    with pytest.raises(ValueError):
        await h.loop.process({TP0: [rec(TP0, 0, b"garbage"), rec(TP0, 1, user_value())]})
    assert rolled_back == [2]
    assert h.consumer.commits == []


async def test_a_dlq_retry_resends_only_the_unacknowledged(make):
    h = make(producer_failures=1)
    await h.loop.process({TP0: [rec(TP0, 0, b"a"), rec(TP0, 1, b"b")]})
    assert [s["value"] for s in h.producer.sent] == [b"a", b"b", b"a"]  # "b" was acked the first time
    assert h.log[-2:] == [("apply", 0), ("commit", {TP0: 2})]


async def test_permanent_dlq_error_stops_the_batch_before_apply(make, monkeypatch):
    h = make()

    async def refuse(*args, **kwargs):
        raise ValueError("message too large")

    monkeypatch.setattr(h.producer, "send", refuse)
    with pytest.raises(ValueError):
        await h.loop.process({TP0: [rec(TP0, 0, b"garbage")]})
    assert h.apply.batches == []
    assert h.consumer.commits == []


# -- apply retries -----------------------------------------------------------------------------


def refused(message: str = "Connect call failed ('127.0.0.1', 5432)") -> OperationalError:
    orig = ConnectionRefusedError(111, message) if message else ConnectionRefusedError()
    return OperationalError("INSERT", {}, orig)


async def test_transient_apply_error_is_retried_then_committed_once(make):
    h = make(apply_errors=[refused(), refused()])
    await h.loop.process({TP0: [rec(TP0, 4, user_value())]})
    assert [e[0] for e in h.log] == ["apply", "apply", "apply", "commit"]
    assert h.consumer.commits == [{TP0: 5}]
    assert h.loop.stats.db_retries == 2
    assert h.loop.stats.batches == 1
    assert h.loop.stats.applied == 1


async def test_transient_apply_error_without_a_message_is_retried(make):
    h = make(apply_errors=[refused(""), refused("")])
    await h.loop.process({TP0: [rec(TP0, 4, user_value())]})
    assert h.consumer.commits == [{TP0: 5}]


async def test_permanent_apply_error_propagates_and_nothing_is_committed(make):
    import asyncpg

    h = make(apply_errors=[IntegrityError("INSERT", {}, asyncpg.exceptions.CheckViolationError("x"))])
    with pytest.raises(IntegrityError):
        await h.loop.process({TP0: [rec(TP0, 4, user_value())]})
    assert h.log == [("apply", 1)]
    assert h.consumer.commits == []
    assert h.loop.stats.batches == 0


async def test_revocation_during_apply_retries_abandons_the_batch(make, monkeypatch):
    h = make()
    calls = 0

    async def flaky(self, batch, dead_letters=None):
        nonlocal calls
        calls += 1
        if calls == 1:
            self._generation += 1  # what on_revoked does while the batch is retrying
            raise refused()
        return Counter()

    monkeypatch.setattr(h.loop._writer, "fn", flaky)
    await h.loop.process({TP0: [rec(TP0, 0, user_value())]})
    assert calls == 1
    assert h.consumer.commits == []
    assert h.loop.stats.batches == 0


# -- tombstones --------------------------------------------------------------------------------


async def test_tombstones_are_counted_and_never_dead_lettered(make):
    h = make()
    records = {TP0: [rec(TP0, 0, None), rec(TP0, 1, user_value()), rec(TP0, 2, None)], TP1: [rec(TP1, 0, None, key=None)]}
    await h.loop.process(records)
    assert h.producer.sent == []
    [batch] = h.apply.batches
    assert len(batch.events) == 1
    assert batch.poison == []
    assert batch.tombstones == Counter(users=3)
    assert h.loop.stats.tombstones == 3
    assert h.loop.stats.records == 4
    assert h.consumer.commits == [{TP0: 3, TP1: 1}]


async def test_batch_of_only_tombstones_still_moves_the_offsets(make):
    h = make()
    await h.loop.process({TP1: [rec(TP1, 8, None)]})
    assert h.producer.sent == []
    assert h.consumer.commits == [{TP1: 9}]
    assert h.loop.stats.tombstones == 1


# -- Kafka commit failures ---------------------------------------------------------------------


@pytest.mark.parametrize("error", [CommitFailedError("rebalanced"), IllegalStateError("no longer assigned")])
async def test_commit_refused_is_swallowed(make, error):
    h = make(commit_errors=[error])
    await h.loop.process({TP0: [rec(TP0, 0, user_value())]})  # no exception
    assert h.log == [("apply", 1), ("commit", {TP0: 1})]
    assert h.loop.stats.commit_failures == 1
    assert h.loop.stats.batches == 1
    assert h.loop._pending_commit == {}  # the database keeps the position


async def test_transient_commit_error_is_retried(make):
    h = make(commit_errors=[KafkaConnectionError(), KafkaConnectionError()])
    await h.loop.process({TP0: [rec(TP0, 0, user_value())]})
    assert [e for e in h.log if e[0] == "commit"] == [("commit", {TP0: 1})] * 3
    assert h.consumer.commits == [{TP0: 1}]
    assert h.loop.stats.commit_failures == 2
    assert h.loop._pending_commit == {}


async def test_commit_that_keeps_failing_is_carried_over_to_the_next_batch(make):
    h = make(commit_errors=[KafkaConnectionError()] * KAFKA_COMMIT_ATTEMPTS)
    await h.loop.process({TP0: [rec(TP0, 0, user_value())]})
    assert h.consumer.commits == []
    assert h.loop._pending_commit == {TP0: 1}
    await h.loop.process({TP1: [rec(TP1, 0, user_value())]})
    assert h.consumer.commits == [{TP0: 1, TP1: 1}]
    assert h.loop._pending_commit == {}


# -- run ---------------------------------------------------------------------------------------


async def test_run_processes_batches_until_stopped(make):
    h = make()
    h.consumer.batches = [{TP0: [rec(TP0, 0, user_value())]}, {TP0: [rec(TP0, 1, b"junk")]}]
    task = asyncio.create_task(h.loop.run())
    for _ in range(200):
        if len(h.consumer.commits) == 2:
            break
        await asyncio.sleep(0.001)
    h.loop.request_stop()
    await asyncio.wait_for(task, timeout=5)
    assert h.consumer.commits == [{TP0: 1}, {TP0: 2}]
    assert h.loop.stats.dead_lettered == 1
    assert h.loop.stats.batches == 2
    assert h.loop.stopping


# -- the pipeline: batch N+1 is prepared while batch N is in the database -----------------------


def gated_run(h: Harness, monkeypatch, first_apply):
    """Runs the loop with _apply = first_apply for the first batch (it may wait on the returned
    gate) and the harness's FakeApply after; _prepare logs ("prepared", records)."""
    gate = asyncio.Event()
    original_prepare = ConsumerLoop._prepare
    calls = 0

    async def prepare(self, records):
        parts = await original_prepare(self, records)
        h.log.append(("prepared", sum(part.size for part in parts)))
        return parts

    async def _apply(self, batch, dead_letters=None):
        nonlocal calls
        calls += 1
        if calls == 1:
            return await first_apply(self, batch, gate)
        return await h.apply(self, batch, dead_letters)

    monkeypatch.setattr(ConsumerLoop, "_prepare", prepare)
    monkeypatch.setattr(h.loop._writer, "fn", _apply)
    return gate, asyncio.create_task(h.loop.run())


async def wait_for(condition, attempts: int = 500) -> None:
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_next_batch_is_prepared_while_one_is_in_flight_and_written_after_it(make, monkeypatch):
    h = make()
    h.consumer.batches = [{TP0: [rec(TP0, 0, user_value(1))]}, {TP0: [rec(TP0, 1, user_value(2)), rec(TP0, 2, user_value(3))]}]

    async def first(self, batch, gate):
        h.log.append(("apply", len(batch.events)))
        await gate.wait()
        return Counter(applied=len(batch.events))

    gate, task = gated_run(h, monkeypatch, first)
    await wait_for(lambda: ("prepared", 2) in h.log)
    assert h.consumer.commits == []  # batch 2 was decoded and prepared while batch 1 was still in flight
    gate.set()
    await wait_for(lambda: len(h.consumer.commits) == 2)
    h.loop.request_stop()
    await asyncio.wait_for(task, timeout=5)
    assert h.log == [("prepared", 1), ("apply", 1), ("prepared", 2), ("commit", {TP0: 1}), ("apply", 2), ("commit", {TP0: 3})]
    assert h.consumer.seeks == []


async def test_stale_batch_drops_the_prepared_next_one_and_rewinds_only_its_other_partitions(make, monkeypatch):
    h = make()
    h.consumer.batches = [
        {TP0: [rec(TP0, 0, user_value(1))]},
        {TP0: [rec(TP0, 1, user_value(1, 2))], TP1: [rec(TP1, 7, user_value(2))]},
    ]

    async def first(self, batch, gate):
        await gate.wait()
        raise StaleBatch({TP0: 5})  # the database already holds TP0 up to offset 5

    gate, task = gated_run(h, monkeypatch, first)
    await wait_for(lambda: ("prepared", 2) in h.log)
    gate.set()
    await wait_for(lambda: len(h.consumer.seeks) == 2)
    h.loop.request_stop()
    await asyncio.wait_for(task, timeout=5)
    # TP0 goes where the database is (not back to batch 2's offset 1: that would redo, or with
    # a database between 0 and 1, skip); TP1, only in batch 2, goes back to where batch 2 began.
    assert h.consumer.seeks == [(TP0, 5), (TP1, 7)]
    assert h.apply.batches == []  # batch 2 was never written
    assert h.consumer.commits == []


async def test_rebalance_while_the_next_batch_is_prepared_drops_it_without_seeking(make, monkeypatch):
    h = make()
    h.consumer.batches = [{TP0: [rec(TP0, 0, user_value(1))]}, {TP0: [rec(TP0, 1, user_value(2))]}, {}, {TP0: [rec(TP0, 1, user_value(2))]}]

    async def first(self, batch, gate):
        await gate.wait()
        self._generation += 1  # what on_revoked does: the prepared batch belongs to the old assignment
        return Counter(applied=1)

    gate, task = gated_run(h, monkeypatch, first)
    await wait_for(lambda: ("prepared", 1) in h.log[1:])
    gate.set()
    await wait_for(lambda: len(h.apply.batches) == 1)
    h.loop.request_stop()
    await asyncio.wait_for(task, timeout=5)
    assert h.consumer.seeks == []  # the new assignment starts from the committed positions
    assert [b.first_offsets for b in h.apply.batches] == [{TP0: 1}]  # fetched again, then written
    assert h.consumer.commits == [{TP0: 1}, {TP0: 2}]


# -- writers: disjoint partitions in concurrent transactions -----------------------------------


def test_partitions_are_dealt_biggest_first_to_the_least_loaded_writer():
    sizes = {TP0: 10, TP1: 7, TP_ORDERS: 5, TopicPartition("orders", 1): 4}
    assert deal_partitions(sizes, 2) == [[TopicPartition("orders", 1), TP0], [TP_ORDERS, TP1]]  # 14 and 12 records
    assert deal_partitions(sizes, 1) == [sorted(sizes)]
    assert deal_partitions({TP0: 3}, 4) == [[TP0]]
    assert deal_partitions({}, 2) == []


async def test_each_writer_commits_its_own_partitions_in_its_own_transaction(make):
    h = make(write_concurrency=2)
    records = {TP0: [rec(TP0, 0, user_value(1)), rec(TP0, 1, user_value(2))], TP_ORDERS: [rec(TP_ORDERS, 5, None)]}
    assert await h.loop.process(records) is True
    assert sorted(tuple(b.partitions) for b in h.apply.batches) == [(TP_ORDERS,), (TP0,)]
    assert h.consumer.commits == [{TP0: 2, TP_ORDERS: 6}]  # one Kafka commit, after both transactions
    assert h.loop.stats.batches == 2 and h.loop.stats.records == 3


async def test_a_stale_writer_does_not_hold_back_the_other(make, monkeypatch):
    h = make(write_concurrency=2)

    async def _apply(self, batch, dead_letters=None):
        if TP0 in batch.partitions:
            raise StaleBatch({TP0: 9})
        return Counter(applied=len(batch.events))

    monkeypatch.setattr(h.loop._writer, "fn", _apply)
    records = {TP0: [rec(TP0, 0, user_value(1)), rec(TP0, 1, user_value(2))], TP1: [rec(TP1, 3, user_value(3))]}
    assert await h.loop.process(records) is False
    assert h.consumer.commits == [{TP1: 4}]
    assert h.consumer.seeks == [(TP0, 9)]


async def test_a_failing_writer_raises_after_the_other_committed(make, monkeypatch):
    import asyncpg

    h = make(write_concurrency=2)

    async def _apply(self, batch, dead_letters=None):
        if TP0 in batch.partitions:
            raise IntegrityError("INSERT", {}, asyncpg.exceptions.CheckViolationError("x"))
        return Counter(applied=len(batch.events))

    monkeypatch.setattr(h.loop._writer, "fn", _apply)
    records = {TP0: [rec(TP0, 0, user_value(1)), rec(TP0, 1, user_value(2))], TP1: [rec(TP1, 3, user_value(3))]}
    with pytest.raises(IntegrityError):
        await h.loop.process(records)
    assert h.consumer.commits == [{TP1: 4}]  # what the database holds, Kafka may hold too


async def test_assignment_behind_the_database_seeks_and_commits_the_database_position(make, monkeypatch):
    """The last batch's Kafka commit can be refused by the very rebalance that moves its partition:
    the new owner must bring Kafka's offset up to the database's even with nothing left to fetch."""
    h = make()

    async def stored_positions(tps):
        return {TP0: 40}

    monkeypatch.setattr(h.loop._writer, "stored_positions", stored_positions, raising=False)
    await h.loop.on_assigned([TP0])  # Kafka has no committed offset for TP0 (FakeConsumer.committed)
    assert h.consumer.seeks == [(TP0, 40)]
    task = asyncio.create_task(h.loop.run())  # no records at all
    await wait_for(lambda: bool(h.consumer.commits))
    h.loop.request_stop()
    await asyncio.wait_for(task, timeout=5)
    assert h.consumer.commits == [{TP0: 40}]
