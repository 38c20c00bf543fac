"""consumer.http (the tiny HTTP server and the consumer's health source), consumer.metrics and the
loop's instrumentation, with fakes: no Kafka, no database."""

import asyncio
import time
import json
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from consumer.http import ConsumerHealth, HttpServer
from consumer.loop import ConsumerLoop
from consumer.pipeline import build_pipeline
from tests.unit.records import FunctionWriter
from consumer.metrics import ConsumerMetrics
from consumer.retry import Backoff
from consumer.settings import Settings
from handlers.aggregate import Applied
from handlers.apply import apply_events
from handlers.collapse import applies_one_by_one, collapse, count_outcomes
from handlers.registry import build_registry
from tests.unit.records import Rec

# -- the HTTP server ---------------------------------------------------------------------------


class FakeHealth:
    def __init__(self) -> None:
        self.live = True
        self.ready = True

    def liveness(self):
        return self.live, {"status": "ok" if self.live else "stuck"}

    async def readiness(self):
        if self.ready:
            return True, {"status": "ready", "partitions": 3}
        return False, {"status": "not ready", "partitions": 0, "reasons": ["no partitions assigned"]}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


async def request(port: int, raw: bytes) -> Response:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return Response(int(status), headers, body)


def get(port: int, path: str, method: str = "GET") -> "asyncio.Future[Response]":
    return request(port, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n".encode())


@pytest.fixture
async def served():
    health = FakeHealth()
    registry = CollectorRegistry()
    things = PromCounter("things", "Things seen.", ["kind"], registry=registry)
    things.labels("a").inc(3)
    server = HttpServer(health, registry, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield SimpleNamespace(server=server, health=health, port=server.port)
    finally:
        await server.stop()


async def test_port_zero_binds_an_ephemeral_port(served):
    assert served.port != 0


async def test_healthz(served):
    r = await get(served.port, "/healthz")
    assert r.status == 200
    assert r.json() == {"status": "ok"}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(r.body))
    assert r.headers["connection"] == "close"
    served.health.live = False
    r = await get(served.port, "/healthz")
    assert r.status == 503
    assert r.json()["status"] == "stuck"


async def test_readyz(served):
    r = await get(served.port, "/readyz")
    assert (r.status, r.json()) == (200, {"status": "ready", "partitions": 3})
    served.health.ready = False
    r = await get(served.port, "/readyz?verbose=1")
    assert r.status == 503
    assert r.json()["reasons"] == ["no partitions assigned"]


async def test_metrics_in_prometheus_text_format(served):
    r = await get(served.port, "/metrics")
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert r.headers["content-length"] == str(len(r.body))
    families = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
    [sample] = [s for s in families["things"].samples if s.name == "things_total"]
    assert sample.labels == {"kind": "a"} and sample.value == 3


async def test_metrics_negotiates_openmetrics(served):
    r = await request(served.port, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0,text/plain;q=0.5\r\n\r\n")
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.body.endswith(b"# EOF\n")


async def test_unknown_path_is_404(served):
    for path in ("/", "/health", "/metrics/x", "/readyz/"):
        r = await get(served.port, path)
        assert r.status == 404, path
        assert r.headers["content-length"] == str(len(r.body))


async def test_head_has_headers_and_no_body(served):
    r = await get(served.port, "/healthz", method="HEAD")
    assert r.status == 200 and r.body == b""
    assert int(r.headers["content-length"]) > 0


async def test_other_methods_are_405(served):
    r = await request(served.port, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert r.status == 405
    assert r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize("raw", [b"nonsense\r\n\r\n", b"GET /healthz\r\n\r\n", b"GET /healthz SPDY/3\r\n\r\n", b"GET /" + b"x" * 20_000 + b" HTTP/1.1\r\n\r\n",
                                 b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(17)) + b"\r\n"])
async def test_malformed_requests_are_400(served, raw):
    r = await request(served.port, raw)
    assert r.status == 400


async def test_at_the_connection_cap_the_oldest_stalled_client_makes_room(served):
    cap = 4
    server = HttpServer(FakeHealth(), CollectorRegistry(), host="127.0.0.1", port=0, max_connections=cap)
    await server.start()
    stalled = []
    try:
        for _ in range(cap * 3):  # each sends half a request head and waits
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            await writer.drain()
            stalled.append((reader, writer))
            await asyncio.sleep(0.01)
        r = await asyncio.wait_for(get(server.port, "/healthz"), timeout=1)
        assert r.status == 200
        dropped = server._registry.get_sample_value("event_consumer_http_connections_dropped_total")
        assert dropped is not None and dropped >= cap * 2
        assert len(server._connections) <= cap
        # the first ones were closed unanswered; the newest stalled one is still open
        assert await asyncio.wait_for(stalled[0][0].read(), timeout=1) == b""
    finally:
        for _, writer in stalled:
            writer.transport.abort()
        await server.stop()


async def test_a_client_that_connects_and_leaves_does_not_hurt(served):
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.close()
    await writer.wait_closed()
    assert (await get(served.port, "/healthz")).status == 200


async def test_concurrent_requests(served):
    responses = await asyncio.gather(*(get(served.port, p) for p in ["/healthz", "/readyz", "/metrics"] * 10))
    assert {r.status for r in responses} == {200}


async def test_stop_closes_the_port():
    server = HttpServer(FakeHealth(), CollectorRegistry(), host="127.0.0.1", port=0)
    await server.start()
    port = server.port
    await server.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_port_in_use_raises_oserror(served):
    other = HttpServer(FakeHealth(), CollectorRegistry(), host="127.0.0.1", port=served.port)
    with pytest.raises(OSError):
        await other.start()


# -- the consumer's health source ---------------------------------------------------------------


class FakeEngine:
    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.hang = False
        self.queries = 0

    @asynccontextmanager
    async def connect(self):
        if self.hang:
            await asyncio.sleep(3600)
        if self.error is not None:
            raise self.error
        engine = self

        class Conn:
            async def execute(self, statement):
                engine.queries += 1

        yield Conn()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_loop(progress_at: float, stopping: bool = False, dead_letters_blocked: str | None = None):
    return SimpleNamespace(
        stats=SimpleNamespace(last_progress_at=progress_at), stopping=stopping, dead_letters_blocked=lambda: dead_letters_blocked
    )


def fake_consumer(*tps: TopicPartition):
    return SimpleNamespace(assignment=lambda: set(tps))


@pytest.fixture
def health_parts():
    clock, engine = Clock(), FakeEngine()
    return clock, engine, ConsumerHealth(engine=engine, stuck_after_s=120, clock=clock)  # type: ignore[arg-type]


async def test_starting_is_live_but_not_ready(health_parts):
    _, _, health = health_parts
    assert health.liveness() == (True, {"status": "starting"})
    ready, body = await health.readiness()
    assert not ready and body["reasons"][0].startswith("starting")


async def test_liveness_follows_the_loops_progress(health_parts):
    clock, _, health = health_parts
    loop = fake_loop(progress_at=clock.now)
    health.attach(loop, fake_consumer(TopicPartition("t", 0)))
    clock.now += 119
    assert health.liveness()[0] is True
    clock.now += 2
    live, body = health.liveness()
    assert not live and body["status"] == "stuck" and body["seconds_since_progress"] == 121
    loop.stats.last_progress_at = clock.now  # a poll returned
    assert health.liveness()[0] is True


async def test_liveness_fails_with_the_reason_while_dead_letters_are_blocked(health_parts):
    clock, _, health = health_parts
    loop = fake_loop(progress_at=clock.now, dead_letters_blocked="dead-letter sends failing for 301s: TopicAuthorizationFailedError")
    health.attach(loop, fake_consumer(TopicPartition("t", 0)))
    live, body = health.liveness()
    assert not live and body["status"] == "dead letters blocked" and "TopicAuthorizationFailedError" in body["reason"]


async def test_ready_when_assigned_and_the_database_answers(health_parts):
    clock, engine, health = health_parts
    health.attach(fake_loop(clock.now), fake_consumer(TopicPartition("t", 0), TopicPartition("t", 1)))
    assert await health.readiness() == (True, {"status": "ready", "partitions": 2})
    assert engine.queries == 1


async def test_ready_without_partitions_by_default(health_parts):
    clock, _, health = health_parts
    health.attach(fake_loop(clock.now), fake_consumer())
    assert await health.readiness() == (True, {"status": "ready", "partitions": 0})


async def test_not_ready_without_partitions_when_required(health_parts):
    clock, engine, _ = health_parts
    health = ConsumerHealth(engine=engine, stuck_after_s=120, requires_partitions=True, clock=clock)  # type: ignore[arg-type]
    health.attach(fake_loop(clock.now), fake_consumer())
    ready, body = await health.readiness()
    assert not ready and body["reasons"] == ["no partitions assigned"] and body["partitions"] == 0


async def test_not_ready_when_the_database_does_not_answer(health_parts):
    clock, engine, health = health_parts
    health.attach(fake_loop(clock.now), fake_consumer(TopicPartition("t", 0)))
    engine.error = OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "Connect call failed ('10.0.0.7', 5432)"))
    ready, body = await health.readiness()
    assert not ready
    assert body["reasons"] == ["database: unreachable (ConnectionRefusedError)"]
    assert "10.0.0.7" not in json.dumps(body), "the answer must not reveal addresses"
    engine.error = None
    clock.now += 0.5
    assert (await health.readiness())[0] is False, "the result is cached for a second"
    clock.now += 1
    assert (await health.readiness())[0] is True


async def test_not_ready_when_the_database_hangs(health_parts, monkeypatch):
    clock, engine, health = health_parts
    monkeypatch.setattr("consumer.http.DB_CHECK_TIMEOUT_S", 0.05)
    health.attach(fake_loop(clock.now), fake_consumer(TopicPartition("t", 0)))
    engine.hang = True
    ready, body = await health.readiness()
    assert not ready and "no answer to SELECT 1" in body["reasons"][0]


async def test_not_ready_while_stopping_or_stuck(health_parts):
    clock, _, health = health_parts
    health.attach(fake_loop(clock.now - 500, stopping=True), fake_consumer(TopicPartition("t", 0)))
    ready, body = await health.readiness()
    assert not ready
    assert body["reasons"][0] == "stopping" and body["reasons"][1].startswith("consumer loop stuck")


def test_settings_http_defaults_and_stuck_threshold():
    s = Settings(_env_file=None, database_url="postgresql+asyncpg://u@h/d")  # type: ignore[call-arg]
    assert (s.http_host, s.http_port, s.health_stuck_after_s) == ("0.0.0.0", 8000, 120.0)
    with pytest.raises(ValueError, match="HEALTH_STUCK_AFTER_S must be greater than RETRY_MAX_S"):
        Settings(_env_file=None, database_url="postgresql+asyncpg://u@h/d", retry_max_s=30, health_stuck_after_s=20)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Settings(_env_file=None, database_url="postgresql+asyncpg://u@h/d", http_port=70000)  # type: ignore[call-arg]


# -- metrics -----------------------------------------------------------------------------------


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return sum(
        v for (n, ls), v in samples(registry).items() if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
    )


def test_metrics_use_the_given_registry_and_nothing_global():
    a, b = ConsumerMetrics(), ConsumerMetrics()  # would raise "Duplicated timeseries" with a global registry
    a.db_retries.inc()
    assert total(a.registry, "event_consumer_db_retries_total") == 1
    assert total(b.registry, "event_consumer_db_retries_total") == 0
    mine = CollectorRegistry()
    assert ConsumerMetrics(mine).registry is mine
    assert b"# TYPE event_consumer_records_consumed_total counter" in ConsumerMetrics().render()


# -- applied/stale attribution -----------------------------------------------------------------


def ev(entity_id: int, version: int, event_type: str = "user.updated"):
    return SimpleNamespace(
        data=SimpleNamespace(id=entity_id), version=version, event_type=event_type, occurred_at=datetime(2026, 1, 1, tzinfo=timezone.utc)
    )


@settings(max_examples=500)
@given(
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 6)), max_size=30),
    st.dictionaries(st.integers(1, 4), st.integers(1, 6)),
)
def test_per_event_outcomes_agree_with_collapse_counts(pairs, stored):
    events = [ev(i, v) for i, v in pairs]
    changes, stale_in_batch = collapse(events, lambda e: True)
    applied, stale = count_outcomes(changes, stored)
    outcomes = applies_one_by_one(events, stored)
    assert len(outcomes) == len(events)
    assert sum(outcomes) == applied
    assert len(outcomes) - sum(outcomes) == stale + stale_in_batch


class FakeAggregate:
    def __init__(self, name: str, *event_types: str) -> None:
        self.name = name
        self.event_types = frozenset(event_types)
        self.calls: list[list] = []

    def prepare(self, events):
        return SimpleNamespace(aggregate=self, events=list(events))

    async def write(self, conn, prepared):
        self.calls.append(prepared.events)
        outcomes = tuple(applies_one_by_one(prepared.events, {}))
        return Applied(sum(outcomes), len(outcomes) - sum(outcomes), outcomes)


async def test_apply_events_attributes_outcomes_to_labels_and_keeps_the_totals():
    users = FakeAggregate("users", "user.created", "user.updated", "user.deleted")
    orders = FakeAggregate("orders", "order.created", "order.updated", "order.cancelled")
    registry = {t: a for a in (users, orders) for t in a.event_types}
    events = [ev(1, 1, "user.created"), ev(5, 1, "order.created"), ev(1, 1, "user.updated"), ev(1, 2, "user.deleted"), ev(5, 1, "order.updated")]
    labels = [("u", "user.created"), ("o", "order.created"), ("x", "user.updated"), ("u", "user.deleted"), ("o", "order.updated")]
    outcomes = await apply_events(None, registry, events, labels)  # type: ignore[arg-type]
    assert outcomes.totals() == Counter(applied=3, stale=2)
    assert outcomes.applied == Counter({("u", "user.created"): 1, ("u", "user.deleted"): 1, ("o", "order.created"): 1})
    assert outcomes.stale == Counter({("x", "user.updated"): 1, ("o", "order.updated"): 1})
    plain = await apply_events(None, registry, events)  # type: ignore[arg-type]
    assert plain.totals() == Counter(applied=3, stale=2)


# -- the loop's instrumentation ------------------------------------------------------------------

TP0 = TopicPartition("users", 0)
TP1 = TopicPartition("orders", 0)


def envelope(entity_id: int, version: int, event_type: str = "user.created") -> bytes:
    data = {"id": entity_id, "email": "a@example.com", "name": "Ada"} if event_type.startswith("user.") else {
        "id": entity_id, "user_id": 1, "total": "1.00", "status": "paid"
    }
    return json.dumps(
        {
            "event_id": f"3f1c2a9e-8f5b-4b0a-9a57-{entity_id:012d}",
            "event_type": event_type,
            "occurred_at": "2026-01-01T00:00:00Z",
            "version": version,
            "data": data,
        }
    ).encode()


class LagConsumer:
    """A GroupConsumer fake that also has aiokafka's end_offsets() (the log end: `highwater`)."""

    def __init__(self, highwater: dict[TopicPartition, int]) -> None:
        self.hw = dict(highwater)
        self.positions: dict[TopicPartition, int] = {}
        self.commit_errors: list[BaseException] = []

    async def getmany(self, *partitions, timeout_ms=0, max_records=None):
        return {}

    async def commit(self, offsets):
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.positions.update(offsets)

    async def committed(self, partition):
        return None

    def assignment(self):
        return set(self.hw)

    def seek(self, partition, offset):
        pass

    def highwater(self, tp):
        return self.hw.get(tp)

    async def end_offsets(self, tps):
        return {tp: self.hw[tp] for tp in tps if tp in self.hw}

    async def position(self, tp):
        return self.positions.get(tp, 0)


class Producer:
    async def send(self, topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None):
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def make_loop(consumer, metrics: ConsumerMetrics, monkeypatch, apply_result, errors=()) -> ConsumerLoop:
    pending = list(errors)

    async def _apply(self, batch, dead_letters=None):
        if pending:
            raise pending.pop(0)
        counts = Counter(apply_result)
        counts["dead_lettered"] += len(batch.poison)
        return counts

    writer = FunctionWriter(_apply)
    loop = ConsumerLoop(
        consumer=consumer,
        pipeline=build_pipeline(build_registry(), None, Producer(), ".dlq", group_id="g", writer=writer),  # type: ignore[arg-type]
        group_id="g",
        batch_max_records=100,
        backoff=Backoff(0.001, 0.002),
        shutdown_timeout_s=5,
        poll_timeout_ms=1,
        metrics=metrics,
    )
    writer.loop = loop
    return loop


async def test_loop_counts_a_committed_batch_by_topic_and_event_type(monkeypatch):
    metrics = ConsumerMetrics()
    consumer = LagConsumer({TP0: 10, TP1: 4})
    apply_result = {
        "applied": 2, "stale": 1,
        ("applied", ("users", "user.created")): 1, ("stale", ("users", "user.created")): 1,
        ("applied", ("orders", "order.created")): 1,
    }
    loop = make_loop(consumer, metrics, monkeypatch, apply_result, errors=[OperationalError("x", {}, ConnectionRefusedError(111, "refused"))])
    records = {
        TP0: [Rec("users", 0, 0, b"1", envelope(1, 1)), Rec("users", 0, 1, b"1", envelope(1, 1)), Rec("users", 0, 2, b"k", b"{oops"), Rec("users", 0, 3, b"1", None)],
        TP1: [Rec("orders", 0, 0, b"5", envelope(5, 1, "order.created"))],
    }
    await loop.process(records)
    r = metrics.registry
    assert total(r, "event_consumer_records_consumed_total") == 5
    assert total(r, "event_consumer_records_consumed_total", topic="users", event_type="user.created") == 2
    assert total(r, "event_consumer_records_consumed_total", topic="users", event_type="unknown") == 2  # poison + tombstone
    assert total(r, "event_consumer_records_consumed_total", topic="orders", event_type="order.created") == 1
    assert total(r, "event_consumer_records_dead_lettered_total", topic="users", event_type="unknown") == 1
    assert total(r, "event_consumer_tombstones_total", topic="users", event_type="unknown") == 1
    assert total(r, "event_consumer_records_applied_total") == 2
    assert total(r, "event_consumer_records_stale_total", topic="users", event_type="user.created") == 1
    assert total(r, "event_consumer_db_retries_total") == 1
    assert total(r, "event_consumer_batch_size_records_count") == 1
    assert total(r, "event_consumer_batch_size_records_sum") == 5
    assert total(r, "event_consumer_batch_duration_seconds_count") == 1
    assert total(r, "event_consumer_last_commit_timestamp_seconds") == pytest.approx(loop.stats.last_commit_at)
    # lag = log end - the database's position (here the last commit's: the fake writer has none)
    await loop.refresh_lag()
    assert total(r, "event_consumer_lag_records", topic="users", partition="0") == 6
    assert total(r, "event_consumer_lag_records", topic="orders", partition="0") == 3


async def test_loop_counts_commit_failures_and_forgets_revoked_lag(monkeypatch):
    metrics = ConsumerMetrics()
    consumer = LagConsumer({TP0: 1})
    consumer.commit_errors = [KafkaConnectionError()]
    loop = make_loop(consumer, metrics, monkeypatch, {"applied": 1})
    await loop.process({TP0: [Rec("users", 0, 0, b"1", envelope(1, 1))]})
    assert total(metrics.registry, "event_consumer_kafka_commit_failures_total") == 1
    await loop.refresh_lag()
    assert total(metrics.registry, "event_consumer_lag_records", topic="users") == 0
    assert ("event_consumer_lag_records", (("partition", "0"), ("topic", "users"))) in samples(metrics.registry)
    await loop.on_revoked([TP0], wait_s=1)
    assert not any(n in ("event_consumer_lag_records", "event_consumer_lag_seconds") for n, _ in samples(metrics.registry))


async def test_lag_keeps_moving_with_the_end_offsets_while_the_database_cannot_be_read(monkeypatch):
    """The gauges come from the log end and the database's position on a timer of their own; when
    the database does not answer, the position of the last commit stands in, and lag_seconds
    counts from the newest applied record's timestamp."""
    metrics = ConsumerMetrics()
    consumer = LagConsumer({TP0: 3})
    loop = make_loop(consumer, metrics, monkeypatch, {"applied": 3})
    produced_at = time.time() - 30
    records = [Rec("users", 0, i, b"1", envelope(1, i + 1), (), timestamp=int(produced_at * 1000)) for i in range(3)]
    await loop.process({TP0: records})

    async def database_down(tps):
        raise ConnectionRefusedError(111, "refused")

    loop._writer.stored_positions = database_down  # type: ignore[attr-defined]
    await loop.refresh_lag()
    assert total(metrics.registry, "event_consumer_lag_records", topic="users", partition="0") == 0
    assert total(metrics.registry, "event_consumer_lag_seconds", topic="users", partition="0") == 0  # caught up
    consumer.hw[TP0] = 2003  # 2,000 more published meanwhile
    await loop.refresh_lag()
    assert total(metrics.registry, "event_consumer_lag_records", topic="users", partition="0") == 2000
    assert total(metrics.registry, "event_consumer_lag_seconds", topic="users", partition="0") == pytest.approx(30, abs=2)
    assert total(metrics.registry, "event_consumer_last_applied_timestamp_seconds") == pytest.approx(int(produced_at * 1000) / 1000)
    assert total(metrics.registry, "event_consumer_lag_refresh_failures_total", source="database_positions") == 2

    async def database_back(tps):
        return {TP0: 2003}

    loop._writer.stored_positions = database_back  # type: ignore[attr-defined]
    await loop.refresh_lag()
    assert total(metrics.registry, "event_consumer_lag_records", topic="users", partition="0") == 0
    assert total(metrics.registry, "event_consumer_lag_seconds", topic="users", partition="0") == 0


async def test_retry_attempts_count_as_signs_of_life(monkeypatch):
    loop = make_loop(LagConsumer({TP0: 1}), ConsumerMetrics(), monkeypatch, {})
    seen = []

    async def _apply(self, batch, dead_letters=None):
        seen.append(self.stats.last_progress_at)
        if len(seen) < 4:
            raise OperationalError("x", {}, ConnectionRefusedError(111, "refused"))
        return Counter()

    monkeypatch.setattr(loop._writer, "fn", _apply)
    loop.stats.last_progress_at = 0.0
    await loop.process({TP0: [Rec("users", 0, 0, b"1", envelope(1, 1))]})
    assert seen[0] == 0.0 and all(t > 0 for t in seen[1:]), "each retry attempt refreshes last_progress_at"
    assert total(loop.metrics.registry, "event_consumer_db_retries_total") == 3


async def test_dead_letter_log_lines_bind_the_record_and_never_the_payload(monkeypatch, capsys):
    import structlog

    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        loop = make_loop(LagConsumer({TP0: 2}), ConsumerMetrics(), monkeypatch, {})
        secret_payload = json.dumps({"event_id": "evt-123", "event_type": "user.created", "data": {"email": "private@example.com"}}).encode()
        monkeypatch.setattr("consumer.loop.log", structlog.get_logger("consumer.loop"))
        await loop.process({TP0: [Rec("users", 0, 0, b"1", secret_payload), Rec("users", 0, 1, b"2", b"\xff")]})
    finally:
        structlog.configure(**saved)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "dead-lettered" in line]
    assert len(lines) == 2
    assert {k: lines[0][k] for k in ("topic", "partition", "offset", "event_id")} == {"topic": "users", "partition": 0, "offset": 0, "event_id": "evt-123"}
    assert lines[1]["offset"] == 1 and "event_id" not in lines[1]
    assert all(line["level"] == "warning" for line in lines)
    assert "private@example.com" not in json.dumps(lines)


@pytest.mark.parametrize(
    ("committed", "database", "end", "lag"),
    [
        (40, 50, 60, 10),  # the database is the truth: Kafka's committed offset trails it
        (50, 40, 60, 20),  # even when Kafka's is ahead (a commit the database never saw cannot be)
        (None, 30, 60, 30),
        (45, None, 60, 15),  # no database row yet: Kafka's committed offset
        (None, None, 60, 55),  # neither: from the log start
        (None, 2, 60, 55),  # a position before the log start (truncated): from the log start
    ],
)
def test_offsets_show_lag_is_the_metrics_definition(committed, database, end, lag):
    from consumer.offsets_admin import PartitionOffsets

    row = PartitionOffsets("t", 0, committed=committed, database=database, beginning=5, end=end)
    assert row.lag == lag
