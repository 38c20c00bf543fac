"""`event-consumer run`: builds the clients from settings, runs the loop, shuts down cleanly."""

import asyncio
import gc
import signal
import sys

import structlog
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.http import ConsumerHealth, HttpServer
from consumer.kafka_clients import KafkaAuthError, build_admin, build_group_consumer, build_producer, probe
from consumer.loop import ConsumerLoop, RebalanceListener
from consumer.metrics import ConsumerMetrics, add_runtime_collectors
from consumer.retry import Backoff, is_transient_db_error, short_error
from consumer.settings import Settings
from consumer.topics import ensure_dlq_topics
from database.engine import make_engine
from database.migrate import current_revision, head_revision
from handlers.native import install_batch_tables
from handlers.registry import build_registry

GIL_SWITCH_INTERVAL_S = 0.0005

log = structlog.get_logger("consumer.app")


class StartupError(Exception):
    pass


async def _check_schema(engine: AsyncEngine, backoff: Backoff, stop: asyncio.Event) -> None:
    attempt = 0
    while True:
        try:
            async with engine.connect() as conn:
                version = await current_revision(conn)
            break
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise StartupError(f"the database refused the connection: {short_error(exc)}") from None
            attempt += 1
            if stop.is_set():
                raise StartupError("stopped while waiting for the database") from None
            log.warning("database not reachable yet; retrying", attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(backoff.delay(attempt))
    if version is None:
        raise StartupError("the database schema is missing: run `event-consumer migrate` first")
    head = head_revision()
    if version != head:
        raise StartupError(f"the database schema is at {version}, not {head}: run `event-consumer migrate`")


async def _start_with_retry(client, what: str, backoff: Backoff, stop: asyncio.Event, settings: Settings | None = None) -> None:
    attempt = 0
    while True:
        try:
            if settings is not None:
                # aiokafka reports a refused login as "Unable to bootstrap": probe first, so bad
                # credentials stop start-up instead of being retried as "broker not up yet".
                await probe(settings)
            await client.start()
            return
        except KafkaAuthError as exc:
            raise StartupError(str(exc)) from None
        except KafkaError as exc:
            attempt += 1
            if stop.is_set():
                raise StartupError(f"stopped while waiting for Kafka ({what})") from None
            log.warning("kafka not reachable yet; retrying", client=what, attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(backoff.delay(attempt))


async def _prepare_dlq_topics(settings: Settings) -> None:
    admin = build_admin(settings)
    try:
        await admin.start()
        await ensure_dlq_topics(admin, settings.kafka_topics, settings.kafka_dlq_suffix)
    except Exception as exc:  # noqa: BLE001 - without rights to create topics, the DLQ write retries
        log.warning("could not check or create the dead-letter topics", error=f"{type(exc).__name__}: {exc}")
    finally:
        await admin.close()


async def _start_http(http: HttpServer, settings: Settings) -> None:
    try:
        await http.start()
    except OSError as exc:
        raise StartupError(
            f"cannot serve HTTP on HTTP_HOST={settings.http_host} HTTP_PORT={settings.http_port}: {exc.strerror or exc}"
        ) from None
    log.info("serving /healthz, /readyz and /metrics", host=settings.http_host, port=http.port)


def _tune_gc() -> None:
    """A batch allocates hundreds of thousands of short-lived objects (records, events, rows);
    with the default thresholds the collector runs full passes over the long-lived import-time
    objects again and again (about 14% of the loop in bench/). Freeze what exists at start-up
    and collect young objects less often; memory stays bounded by the batch size."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _tune_gil() -> None:
    """Batches are decoded in a worker thread while the event loop thread drives the batch in
    flight; a shorter switch interval (default 5 ms) hands the GIL back to the loop thread
    sooner when the database or broker answers."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


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
    install_batch_tables(engine, registry.aggregates)
    consumer = build_group_consumer(settings)
    producer = build_producer(settings)
    started: list = []
    metrics_registry = CollectorRegistry()  # this process's own: nothing global
    add_runtime_collectors(metrics_registry)
    metrics = ConsumerMetrics(metrics_registry)
    health = ConsumerHealth(engine=engine, stuck_after_s=settings.health_stuck_after_s)
    http = HttpServer(health, metrics_registry, settings.http_host, settings.http_port)
    try:
        await _start_http(http, settings)
        await _check_schema(engine, backoff, stop)
        await _start_with_retry(producer, "producer", backoff, stop, settings)
        started.append(producer)
        await _prepare_dlq_topics(settings)
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
            write_concurrency=settings.write_concurrency,
            metrics=metrics,
        )
        loop_ref.append(loop)
        if stop.is_set():
            loop.request_stop()
        consumer.subscribe(settings.kafka_topics, listener=RebalanceListener(loop, revoke_wait_s=settings.shutdown_timeout_s))
        await _start_with_retry(consumer, "consumer", backoff, stop, settings)
        started.append(consumer)
        log.info(
            "consuming",
            topics=settings.kafka_topics,
            group_id=settings.kafka_group_id,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            batch_max_records=settings.batch_max_records,
            write_concurrency=settings.write_concurrency,
        )
        if not loop.native:
            log.warning("native fast path unavailable; decoding on the Python path", reason=loop.native_unavailable)
        health.attach(loop, consumer)
        _tune_gc()
        _tune_gil()
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
        await http.stop()
        # Clients that never started are stopped too (that only marks them closed): otherwise a
        # start-up failure ends with aiokafka's "Unclosed AIOKafka..." noise after the real message.
        for client in [*reversed(started), *(c for c in (consumer, producer) if c not in started)]:
            try:
                await asyncio.wait_for(client.stop(), timeout=settings.shutdown_timeout_s)
            except Exception as exc:  # noqa: BLE001 - shutdown must go on (aiokafka #773)
                log.warning("kafka client did not stop cleanly", error=type(exc).__name__)
        await engine.dispose()
