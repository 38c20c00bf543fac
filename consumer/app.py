"""`event-consumer run`: builds the clients from settings, runs the loop, shuts down cleanly."""

import gc
import sys

import structlog
from prometheus_client import CollectorRegistry

from consumer.http import ConsumerHealth, HttpServer
from consumer.kafka_clients import build_admin, build_group_consumer, build_producer
from consumer.loop import ConsumerLoop, RebalanceListener
from consumer.metrics import ConsumerMetrics, add_runtime_collectors
from consumer.pipeline import build_pipeline
from consumer.process import Process, StartupError
from consumer.settings import Settings
from consumer.topics import ensure_dlq_topics
from handlers.registry import Contract, build_registry

GIL_SWITCH_INTERVAL_S = 0.0005
# Dead letters keep their original bytes; compressed, a record that its producer compressed fits
# the DLQ as it fit the source. zstd: cramjam's codec, cheaper on CPU than gzip.
DLQ_COMPRESSION = "zstd"

log = structlog.get_logger("consumer.app")


async def _prepare_dlq_topics(settings: Settings) -> None:
    admin = build_admin(settings)
    try:
        await admin.start()
        await ensure_dlq_topics(admin, settings.kafka_topics, settings.kafka_dlq_suffix, settings.dlq_retention_ms)
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


async def run(settings: Settings, registry: Contract | None = None) -> int:
    registry = registry or build_registry()
    metrics_registry = CollectorRegistry()  # this process's own: nothing global
    add_runtime_collectors(metrics_registry)
    metrics = ConsumerMetrics(metrics_registry)
    async with Process(settings, registry, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow) as process:
        assert process.engine is not None
        producer = process.client(build_producer(settings, compression_type=DLQ_COMPRESSION))
        consumer = process.client(build_group_consumer(settings))
        health = ConsumerHealth(
            engine=process.engine, stuck_after_s=settings.health_stuck_after_s, requires_partitions=settings.ready_requires_partitions
        )
        http = HttpServer(health, metrics_registry, settings.http_host, settings.http_port, settings.http_max_connections)
        try:
            await _start_http(http, settings)
            await process.check_schema()
            await process.start(producer, "producer")
            await _prepare_dlq_topics(settings)
            loop = ConsumerLoop(
                consumer=consumer,
                pipeline=build_pipeline(
                    registry, process.engine, producer, settings.kafka_dlq_suffix, group_id=settings.kafka_group_id,
                    dlq_blocked_after_s=settings.dlq_blocked_after_s,
                    on_dead_letter_failure=lambda reason: metrics.dead_letter_failures.labels(reason).inc(),
                ),
                group_id=settings.kafka_group_id,
                batch_max_records=settings.batch_max_records,
                backoff=process.backoff,
                shutdown_timeout_s=settings.shutdown_timeout_s,
                write_concurrency=settings.write_concurrency,
                metrics=metrics,
                lag_refresh_s=settings.lag_refresh_s,
            )
            process.on_signal.append(loop.request_stop)
            if process.stop.is_set():
                loop.request_stop()
            consumer.subscribe(settings.kafka_topics, listener=RebalanceListener(loop, revoke_wait_s=settings.shutdown_timeout_s))
            await process.start(consumer, "consumer")
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
            for event_type, why in loop.python_only.items():
                log.warning("event type not on the native path; its records take the Python path", event_type=event_type, reason=why)
            health.attach(loop, consumer)
            _tune_gc()
            _tune_gil()
            await loop.run()
            log.info(
                "stopped",
                consumed=loop.stats.records,
                applied=loop.stats.applied,
                stale=loop.stats.stale,
                dead_lettered=loop.stats.dead_lettered,
                tombstones=loop.stats.tombstones,
            )
            return 0
        finally:
            await http.stop()
