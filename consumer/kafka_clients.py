"""Every Kafka client the project creates is built here, so the security settings apply to all."""

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from consumer.settings import Settings

MAX_REQUEST_BYTES = 16 * 1024 * 1024


def client_kwargs(settings: Settings) -> dict:
    kwargs: dict = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
    return kwargs


def build_group_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The live consumer: group member, manual commits, read_committed."""
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_interval_ms=settings.max_poll_interval_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 10),
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
    )


def build_plain_consumer(settings: Settings) -> AIOKafkaConsumer:
    """No group: manual assignment, for replay, offsets and checks."""
    return AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
    )


def build_producer(settings: Settings, **overrides) -> AIOKafkaProducer:
    """acks=all and idempotent: used for the DLQ and for publishing."""
    kwargs = {"acks": "all", "enable_idempotence": True, "max_request_size": MAX_REQUEST_BYTES, **overrides}
    return AIOKafkaProducer(**client_kwargs(settings), **kwargs)


def build_admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_kwargs(settings))
