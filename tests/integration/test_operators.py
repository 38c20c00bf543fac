"""What operators rely on, against the real broker: dead-letter topics created with their
retention, and /readyz of a member that the group gives no partition."""

import asyncio
import json
import time
import uuid

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.test_observability import free_port, wait_status


async def topic_config(kafka, topic: str, key: str) -> str | None:
    responses = await kafka.admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={key: None})])
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == key:
                    return entry[1]
    return None


async def test_dead_letter_topics_are_created_with_the_retention_setting(kafka, consumers, services):
    suffix = uuid.uuid4().hex[:8]
    users, orders = f"ret-users-{suffix}", f"ret-orders-{suffix}"
    await kafka.admin.create_topics([NewTopic(users, 2, 1), NewTopic(orders, 1, 1)])
    port = free_port()
    proc = consumers.start(KAFKA_TOPICS=f"{users},{orders}", KAFKA_GROUP_ID=f"ret-{suffix}", DLQ_RETENTION_MS="1234567890",
                           HTTP_PORT=str(port))
    await wait_status(port, "/readyz", 200, timeout=60, proc=proc, logs=consumers.log_text)
    assert consumers.stop(proc) == 0
    assert await topic_config(kafka, users + ".dlq", "retention.ms") == "1234567890"
    assert await topic_config(kafka, orders + ".dlq", "retention.ms") == "1234567890"
    await kafka.admin.delete_topics([users, orders, users + ".dlq", orders + ".dlq"])


async def wait_body(port: int, status: int, predicate, proc, logs) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = json.loads(await wait_status(port, "/readyz", status, timeout=60, proc=proc, logs=logs))
        if predicate(body):
            return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"/readyz never answered {status} with the expected body: {body}")


async def test_a_member_without_partitions_is_ready_unless_partitions_are_required(kafka, consumers):
    suffix = uuid.uuid4().hex[:8]
    topic = f"one-partition-{suffix}"
    await kafka.admin.create_topics([NewTopic(topic, 1, 1), NewTopic(topic + ".dlq", 1, 1)])
    env = {"KAFKA_TOPICS": topic, "KAFKA_GROUP_ID": f"ready-{suffix}"}
    owner_port, idle_port, strict_port = free_port(), free_port(), free_port()
    # The assignor orders members by id, which starts with the client id: the owner sorts first.
    owner = consumers.start(**env, HTTP_PORT=str(owner_port), KAFKA_CLIENT_ID="a-owner")
    await wait_body(owner_port, 200, lambda b: b["partitions"] == 1, owner, consumers.log_text)
    idle = consumers.start(**env, HTTP_PORT=str(idle_port), KAFKA_CLIENT_ID="z-idle")
    strict = consumers.start(**env, HTTP_PORT=str(strict_port), KAFKA_CLIENT_ID="z-strict", READY_REQUIRES_PARTITIONS="true")
    body = await wait_body(strict_port, 503, lambda b: "no partitions assigned" in b.get("reasons", []), strict, consumers.log_text)
    assert body["partitions"] == 0
    body = await wait_body(idle_port, 200, lambda b: True, idle, consumers.log_text)
    assert body == {"status": "ready", "partitions": 0}
    await wait_body(owner_port, 200, lambda b: b["partitions"] == 1, owner, consumers.log_text)
    for proc in (strict, idle, owner):
        assert consumers.stop(proc) == 0
    await kafka.admin.delete_topics([topic, topic + ".dlq"])
