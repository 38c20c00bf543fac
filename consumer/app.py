"""`event-consumer run`: builds the clients from settings, runs the loop, shuts down cleanly."""

import asyncio
import signal

import structlog
from aiokafka.errors import KafkaError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.kafka_clients import build_group_consumer, build_producer
from consumer.loop import ConsumerLoop, RebalanceListener
from consumer.retry import Backoff, is_transient_db_error
from consumer.settings import Settings
from database.engine import make_engine
from database.migrate import head_revision
from handlers.registry import build_registry

log = structlog.get_logger("consumer.app")

class StartupError(Exception):
    pass


async def _check_schema(engine: AsyncEngine, backoff: Backoff, stop: asyncio.Event) -> None:
    attempt = 0
    while True:
        try:
            async with engine.connect() as conn:
                version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            break
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise StartupError("the database schema is missing: run `event-consumer migrate` first") from None
            attempt += 1
            if stop.is_set():
                raise StartupError("stopped while waiting for the database") from None
            log.warning("database not reachable yet; retrying", attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(backoff.delay(attempt))
    head = head_revision()
    if version != head:
        raise StartupError(f"the database schema is at {version}, not {head}: run `event-consumer migrate`")


async def _start_with_retry(client, what: str, backoff: Backoff, stop: asyncio.Event) -> None:
    attempt = 0
    while True:
        try:
            await client.start()
            return
        except KafkaError as exc:
            attempt += 1
            if stop.is_set():
                raise StartupError(f"stopped while waiting for Kafka ({what})") from None
            log.warning("kafka not reachable yet; retrying", client=what, attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(backoff.delay(attempt))


async def run(settings: Settings) -> int:
    registry = build_registry()
    backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
    stop = asyncio.Event()
    loop_ref: list[ConsumerLoop] = []

    def on_signal(signame: str) -> None:
        log.info("signal received", signal=signame)
        stop.set()
        if loop_ref:
            loop_ref[0].request_stop()

    aio = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        aio.add_signal_handler(sig, on_signal, sig.name)

    engine = make_engine(
        settings.database_url.get_secret_value(), pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    consumer = build_group_consumer(settings)
    producer = build_producer(settings)
    started: list = []
    try:
        await _check_schema(engine, backoff, stop)
        await _start_with_retry(producer, "producer", backoff, stop)
        started.append(producer)
        loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            engine=engine,
            registry=registry,
            group_id=settings.kafka_group_id,
            dlq_suffix=settings.kafka_dlq_suffix,
            batch_max_records=settings.batch_max_records,
            backoff=backoff,
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )
        loop_ref.append(loop)
        if stop.is_set():
            loop.request_stop()
        consumer.subscribe(settings.kafka_topics, listener=RebalanceListener(loop, revoke_wait_s=settings.shutdown_timeout_s))
        await _start_with_retry(consumer, "consumer", backoff, stop)
        started.append(consumer)
        log.info(
            "consuming",
            topics=settings.kafka_topics,
            group_id=settings.kafka_group_id,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            batch_max_records=settings.batch_max_records,
        )
        await loop.run()
        log.info(
            "stopped",
            consumed=loop.stats.consumed,
            applied=loop.stats.applied,
            stale=loop.stats.stale,
            dead_lettered=loop.stats.dead_lettered,
            tombstones=loop.stats.tombstones,
        )
        return 0
    finally:
        for client in reversed(started):
            try:
                await asyncio.wait_for(client.stop(), timeout=settings.shutdown_timeout_s)
            except Exception as exc:  # noqa: BLE001 - shutdown must go on (aiokafka #773)
                log.warning("kafka client did not stop cleanly", error=type(exc).__name__)
        await engine.dispose()
