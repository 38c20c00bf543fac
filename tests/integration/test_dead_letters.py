"""Hostile producers against the real broker: a 9.5 MB invalid-JSON record, gzip-compressed by its
producer (about 10 KB on the wire), among valid events on several partitions of two topics; and
a DLQ that cannot take a record even compressed. Every valid event applies, the poison lands in
the DLQ exactly once, and no partition stalls."""

import base64
import json
import random

import orjson
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumer.generate import Generator, topic_for
from tests.integration.harness import assert_matches_model, envelope_messages, kcat_publish
from tests.integration.test_observability import free_port, wait_status
from tests.model import ReadModel

BIG = b"{" + b"x" * 9_500_000  # invalid JSON; gzip 9 KB, zstd 0.3 KB
LIBRDKAFKA_BIG = ("-X", "message.max.bytes=20000000")


def publish_around(kafka, topics, events: list[dict], poison: list[tuple[str, bytes, bytes, str]]) -> None:
    """Half of each topic's events, then each poison record (topic role, key, value, codec), then the rest."""
    by_topic: dict[str, list[dict]] = {topics.users: [], topics.orders: []}
    for e in events:
        by_topic[topic_for(e, topics.users, topics.orders)].append(e)
    for topic, evs in by_topic.items():
        kcat_publish(kafka.bootstrap, topic, envelope_messages(evs[: len(evs) // 2]))
    for role, key, value, codec in poison:
        kcat_publish(kafka.bootstrap, getattr(topics, role), [(key, value)], compression=codec, extra_args=LIBRDKAFKA_BIG)
    for topic, evs in by_topic.items():
        kcat_publish(kafka.bootstrap, topic, envelope_messages(evs[len(evs) // 2 :]))


async def test_a_huge_compressed_poison_record_is_dead_lettered_once_and_byte_identical(kafka, topics, consumers, engine, clean_db):
    events = Generator(seed=71).stream(3000, duplicates=0.05, older=0.05)
    publish_around(kafka, topics, events, [("users", b"big-1", BIG, "gzip")])
    proc = consumers.start(BATCH_MAX_RECORDS="500")
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=120)
    assert consumers.stop(proc) == 0, consumers.log_text()
    assert sum(ends.values()) == len(events) + 1
    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)
    [dead] = await kafka.read_all(topics.users + ".dlq")
    assert dead.value == BIG and dead.key == b"big-1"
    assert dict(dead.headers)["x-error-type"] == b"invalid_json"
    assert await kafka.read_all(topics.orders + ".dlq") == []


async def test_a_record_the_dlq_cannot_take_even_compressed_lands_header_only(kafka, topics, consumers, engine, clean_db):
    # Incompressible (zstd keeps 150 KB of it), and the users DLQ takes at most 20 KB.
    incompressible = b"{" + base64.b64encode(random.Random(3).randbytes(150_000))
    await kafka.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topics.users + ".dlq", configs={"max.message.bytes": "20000"})])
    events = Generator(seed=73).stream(2000)
    publish_around(kafka, topics, events, [("users", b"wide-1", incompressible, "none"), ("orders", b"small-1", b"{oops", "none")])
    proc = consumers.start(BATCH_MAX_RECORDS="500")
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=60)  # the partition moves on
    assert consumers.stop(proc) == 0, consumers.log_text()
    assert sum(ends.values()) == len(events) + 2
    [header_only] = await kafka.read_all(topics.users + ".dlq")
    headers = {k: v.decode() for k, v in header_only.headers}
    assert header_only.value is None and header_only.key == b"wide-1"
    assert headers["x-error-type"] == "dead_letter_too_large" and headers["x-error-message"].startswith("invalid_json: ")
    assert headers["x-original-size"] == str(len(incompressible)) and headers["x-original-topic"] == topics.users
    [small] = await kafka.read_all(topics.orders + ".dlq")
    assert small.value == b"{oops"
    assert '"dead letter too large for the DLQ even compressed; sending it header-only"' in consumers.log_text()


async def test_a_dlq_that_refuses_everything_turns_healthz_red_then_recovers_without_duplicates(kafka, topics, consumers, engine, clean_db):
    dlq = topics.users + ".dlq"
    await kafka.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, dlq, configs={"max.message.bytes": "16"})])
    gen = Generator(seed=79)
    before = [gen.envelope("user.created", 1, gen.user_state(i)) for i in range(1, 31)]
    after = [gen.envelope("user.created", 1, gen.user_state(i)) for i in range(31, 61)]
    poison = [b'{"not": "an event"}', b"[1, 2]"]
    kcat_publish(kafka.bootstrap, topics.users, [(b"1", orjson.dumps(e)) for e in before] + [(b"1", p) for p in poison]
                 + [(b"1", orjson.dumps(e)) for e in after])
    port = free_port()
    proc = consumers.start(RETRY_MAX_S="0.5", DLQ_BLOCKED_AFTER_S="3", HTTP_PORT=str(port))
    body = json.loads(await wait_status(port, "/healthz", 503, timeout=60, proc=proc, logs=consumers.log_text))
    assert body["status"] == "dead letters blocked" and "MessageSizeTooLarge" in body["reason"], body
    await kafka.admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, dlq, configs={"max.message.bytes": "1048576"})])
    await wait_status(port, "/healthz", 200, timeout=60, proc=proc, logs=consumers.log_text)
    ends = await kafka.wait_committed(topics.group, topics.all, timeout=60)
    assert consumers.stop(proc) == 0
    assert sum(ends.values()) == 62
    assert sorted(r.value for r in await kafka.read_all(dlq)) == sorted(poison)  # once each, nothing lost
    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in before + after])
    await assert_matches_model(engine, model)
