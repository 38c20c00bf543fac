"""/healthz, /readyz and /metrics of the real `event-consumer run` process, against the real broker
and database: the counters equal exactly what kcat published."""

import asyncio
import json
import socket
import time
from collections import Counter

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.generate import Generator, topic_for
from handlers.decode import decode
from tests.integration.harness import alive, envelope_messages, kcat_publish
from tests.model import ReadModel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout=5)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert int(headers[b"Content-Length"]) == len(body) and headers[b"Connection"] == b"close"
    return status, body


async def wait_status(port: int, path: str, status: int, timeout: float, proc=None, logs=None) -> bytes:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None:
            assert alive(proc), f"the consumer exited:\n{logs() if logs else ''}"
        try:
            last = await http_get(port, path)
            if last[0] == status:
                return last[1]
        except OSError as exc:  # not listening yet
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not answer {status} within {timeout}s; last: {last!r}")


def scrape(body: bytes) -> dict[str, Counter]:
    """{sample name: Counter({frozenset(labels): value})}"""
    out: dict[str, Counter] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, Counter())[frozenset(s.labels.items())] += s.value
    return out


def by_topic_and_type(values: Counter) -> Counter:
    return Counter({(dict(k)["topic"], dict(k)["event_type"]): v for k, v in values.items() if v})


async def test_health_readiness_and_metrics_count_exactly_what_was_published(kafka, topics, consumers, engine, clean_db):
    started_at = time.time()
    events = Generator(seed=61).stream(3_000, duplicates=0.05, older=0.05)
    by_topic: dict[str, list] = {topics.users: [], topics.orders: []}
    for e in events:
        by_topic[topic_for(e, topics.users, topics.orders)].append(e)
    with_event_id = orjson.dumps({"event_id": "0e5a4c9b-2f0e-4d7b-9a51-6c1d2e3f4a5b", "event_type": "user.created", "version": 0,
                                  "occurred_at": "2026-03-01T10:00:00+00:00", "data": {"id": 1, "email": "private@example.com", "name": "P"}})
    poison = {topics.users: [b"{not json", b"[1, 2]", with_event_id], topics.orders: [b'{"event_type": "order.refunded"}', b"\xff\xfe"]}
    for topic, evs in by_topic.items():
        kcat_publish(kafka.bootstrap, topic, envelope_messages(evs) + [(b"9", p) for p in poison[topic]])
    kcat_publish(kafka.bootstrap, topics.users, [(b"42", b""), (b"43", b"")], extra_args=("-Z",))  # tombstones: null values
    n_published = len(events) + 5 + 2

    port = free_port()
    proc = consumers.start(HTTP_PORT=str(port), BATCH_MAX_RECORDS="500")
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=120)
    assert sum(ends.values()) == n_published

    body = await wait_status(port, "/healthz", 200, timeout=10, proc=proc, logs=consumers.log_text)
    assert json.loads(body)["status"] == "ok"
    body = await wait_status(port, "/readyz", 200, timeout=30, proc=proc, logs=consumers.log_text)
    assert json.loads(body) == {"status": "ready", "partitions": 6}
    assert (await http_get(port, "/nope"))[0] == 404

    # Expected outcomes: the model applies events one by one in publish order (per entity that is
    # the partition order, since the key is the entity id).
    model = ReadModel()
    applied, stale, consumed = Counter(), Counter(), Counter()
    for topic, evs in by_topic.items():
        for e in evs:
            event = decode(orjson.dumps(e))
            consumed[(topic, e["event_type"])] += 1
            (applied if model.apply(event) else stale)[(topic, e["event_type"])] += 1
    consumed[(topics.users, "unknown")] += 3 + 2
    consumed[(topics.orders, "unknown")] += 2

    m = scrape((await http_get(port, "/metrics"))[1])
    assert by_topic_and_type(m["event_consumer_records_consumed_total"]) == consumed
    assert sum(m["event_consumer_records_consumed_total"].values()) == n_published
    assert by_topic_and_type(m["event_consumer_records_dead_lettered_total"]) == Counter({(topics.users, "unknown"): 3, (topics.orders, "unknown"): 2})
    assert by_topic_and_type(m["event_consumer_tombstones_total"]) == Counter({(topics.users, "unknown"): 2})
    assert by_topic_and_type(m["event_consumer_records_applied_total"]) == applied
    assert by_topic_and_type(m["event_consumer_records_stale_total"]) == stale
    assert sum(applied.values()) + sum(stale.values()) == len(events) and sum(stale.values()) > 0
    assert sum(m["event_consumer_batch_size_records_sum"].values()) == n_published
    batches = sum(m["event_consumer_batch_size_records_count"].values())
    assert batches >= n_published // 500 and sum(m["event_consumer_batch_duration_seconds_count"].values()) == batches
    assert sum(m["event_consumer_db_retries_total"].values()) == 0
    assert sum(m["event_consumer_kafka_commit_failures_total"].values()) == 0
    [last_commit] = m["event_consumer_last_commit_timestamp_seconds"].values()
    assert started_at <= last_commit <= time.time()
    assert m["process_resident_memory_bytes"], "runtime collectors are registered"

    # Lag: highwater - position per assigned partition, refreshed after batches and on idle polls.
    deadline = time.monotonic() + 30
    while True:
        lag = scrape((await http_get(port, "/metrics"))[1]).get("event_consumer_lag_records", Counter())
        per_partition = {(dict(k)["topic"], int(dict(k)["partition"])): v for k, v in lag.items()}
        if per_partition == {(tp.topic, tp.partition): 0 for tp in ends} or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert per_partition == {(tp.topic, tp.partition): 0 for tp in ends}

    assert consumers.stop(proc) == 0, consumers.log_text()

    # Logs: one JSON object per line; dead-letter lines carry the record's coordinates, never its payload.
    lines = [json.loads(line) for line in consumers.log_text().splitlines() if line.startswith("{")]
    dead = [line for line in lines if line.get("event") == "record dead-lettered"]
    assert len(dead) == 5
    assert all({"topic", "partition", "offset", "error_type"} <= line.keys() and line["level"] == "warning" for line in dead)
    assert [line["event_id"] for line in dead if "event_id" in line] == ["0e5a4c9b-2f0e-4d7b-9a51-6c1d2e3f4a5b"]
    assert "private@example.com" not in consumers.log_text()
    assert any(line.get("event") == "serving /healthz, /readyz and /metrics" and line.get("port") == port for line in lines)


@pytest.mark.slow
async def test_readyz_is_503_while_postgres_is_down(kafka, topics, consumers, engine, clean_db, control):
    port = free_port()
    proc = consumers.start(HTTP_PORT=str(port))
    await wait_status(port, "/readyz", 200, timeout=60, proc=proc, logs=consumers.log_text)
    await asyncio.to_thread(control.pg_stop, "fast")
    try:
        body = await wait_status(port, "/readyz", 503, timeout=15)
        status, live = await http_get(port, "/healthz")
    finally:
        await asyncio.to_thread(control.pg_start)
    reasons = json.loads(body)["reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("database: "), reasons
    assert status == 200, f"waiting for the database is not being stuck: {live!r}"
    await wait_status(port, "/readyz", 200, timeout=60, proc=proc, logs=consumers.log_text)
    assert consumers.stop(proc) == 0, consumers.log_text()
