"""Dead-letter topics, created at start-up when missing: same partition count and replication as
the source topic, and room for a source record at the source's maximum size plus our headers."""

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

log = structlog.get_logger("consumer.topics")

DLQ_HEADROOM_BYTES = 1024 * 1024


async def topic_max_message_bytes(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": None})])
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                if entry[0] == "max.message.bytes" and entry[1] is not None:
                    return int(entry[1])
    return None


async def ensure_dlq_topics(admin: AIOKafkaAdminClient, topics: list[str], suffix: str, retention_ms: int | None = None) -> list[str]:
    """Returns the DLQ topics it created, with `retention_ms` (-1: kept forever) rather than the
    broker's default (7 days): unread poison must not quietly expire."""
    existing = set(await admin.list_topics())
    created = []
    for topic in topics:
        dlq = topic + suffix
        if dlq in existing or topic not in existing:
            continue
        (meta,) = await admin.describe_topics([topic])
        partitions = meta["partitions"]
        replication = len(partitions[0]["replicas"]) if partitions else 1
        configs = {} if retention_ms is None else {"retention.ms": str(retention_ms)}
        source_max = await topic_max_message_bytes(admin, topic)
        if source_max:
            configs["max.message.bytes"] = str(source_max + DLQ_HEADROOM_BYTES)
        try:
            await admin.create_topics([NewTopic(dlq, max(1, len(partitions)), replication, topic_configs=configs)])
            created.append(dlq)
            log.info("created dead-letter topic", topic=dlq, partitions=len(partitions), **configs)
        except TopicAlreadyExistsError:
            pass
    return created
