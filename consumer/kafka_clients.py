"""Every Kafka client the project creates is built here, so the security settings apply to all."""

import asyncio
import ssl
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from consumer.settings import Settings

MAX_REQUEST_BYTES = 16 * 1024 * 1024
PROBE_TIMEOUT_S = 10.0


class KafkaAuthError(Exception):
    """The broker refused our credentials or security settings (SASL authentication, SASL
    mechanism, TLS). Retrying cannot help. The message names the settings, never the password."""


class KafkaUnreachable(KafkaConnectionError):
    """No bootstrap server answered (refused, reset, timed out, unknown host): retriable, like
    aiokafka's own "Unable to bootstrap" error."""


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


def bootstrap_addresses(servers: str) -> list[tuple[str, int]]:
    """"h1:9092,h2,[::1]:9093" -> [(h1, 9092), (h2, 9092), (::1, 9093)]."""
    out = []
    for item in (s.strip() for s in servers.split(",")):
        if not item:
            continue
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":") or "9092"
        elif item.count(":") == 1:
            host, port = item.split(":")
        else:
            host, port = item, "9092"
        out.append((host, int(port)))
    return out


def _auth_message(settings: Settings, where: str, exc: BaseException) -> str:
    protocol = settings.kafka_security_protocol
    detail = str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else type(exc).__name__
    if settings.kafka_sasl_password is not None:  # never let a broker echo it through
        detail = detail.replace(settings.kafka_sasl_password.get_secret_value(), "**********")
    if isinstance(exc, SaslAuthenticationFailed):
        return (
            f"Kafka at {where} rejected the SASL credentials (KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}, "
            f"KAFKA_SASL_USERNAME={settings.kafka_sasl_username}): check KAFKA_SASL_USERNAME and "
            f"KAFKA_SASL_PASSWORD ({detail})"
        )
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"Kafka at {where} does not accept KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism} "
            f"on this listener: check KAFKA_SASL_MECHANISM and KAFKA_BOOTSTRAP_SERVERS ({detail})"
        )
    if isinstance(exc, IllegalSaslStateError):
        return (
            f"Kafka at {where} does not speak SASL on this listener: check KAFKA_SECURITY_PROTOCOL={protocol} "
            f"and KAFKA_BOOTSTRAP_SERVERS"
        )
    return (
        f"TLS handshake with Kafka at {where} failed: check KAFKA_SECURITY_PROTOCOL={protocol}, KAFKA_SSL_CAFILE "
        f"and KAFKA_BOOTSTRAP_SERVERS ({type(exc).__name__}: {detail})"
    )


async def probe(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Opens one connection to a bootstrap server with the clients' security settings and asks it
    for metadata. Returns "host:port" of the server that answered.

    aiokafka's start() turns every bootstrap failure into one generic KafkaConnectionError, so a
    wrong password looks like a broker that is not up yet. This tells them apart: KafkaAuthError
    (not retriable) for a refused SASL login, an unsupported mechanism, a non-SASL listener or a
    TLS failure; KafkaUnreachable (a KafkaConnectionError, retriable) when no server answered."""
    kwargs = client_kwargs(settings)
    deadline = time.monotonic() + timeout_s
    failures: list[str] = []
    for host, port in bootstrap_addresses(settings.kafka_bootstrap_servers):
        where = f"{host}:{port}"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failures.append(f"{where}: not tried (timeout)")
            continue
        conn = None
        try:
            async with asyncio.timeout(remaining):
                conn = await create_conn(
                    host,
                    port,
                    client_id=kwargs["client_id"],
                    request_timeout_ms=max(1, int(remaining * 1000)),
                    ssl_context=kwargs.get("ssl_context"),
                    security_protocol=kwargs["security_protocol"],
                    sasl_mechanism=kwargs.get("sasl_mechanism"),
                    sasl_plain_username=kwargs.get("sasl_plain_username"),
                    sasl_plain_password=kwargs.get("sasl_plain_password"),
                )
                # A SASL listener answers ApiVersions without a login; metadata proves we got in.
                await conn.send(MetadataRequest([]))
            return where
        except (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError, ssl.SSLError) as exc:
            raise KafkaAuthError(_auth_message(settings, where, exc)) from None
        except (OSError, TimeoutError, KafkaError) as exc:
            failures.append(f"{where}: {type(exc).__name__}" + (f" {exc}" if isinstance(exc, OSError) and str(exc) else ""))
        finally:
            if conn is not None:
                conn.close()
    raise KafkaUnreachable("no Kafka bootstrap server answered: " + "; ".join(failures))
