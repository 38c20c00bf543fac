"""Prometheus metrics of the consumer loop.

Every metric lives in a CollectorRegistry the caller owns (`event-consumer run` creates one and
serves it on /metrics); nothing is registered globally at import, so tests can build as many
loops as they like. Counters move only when a batch is committed to the database, so they count
each record once even when a batch is retried, abandoned or re-sought.
"""

from collections.abc import Iterable, Mapping

from aiokafka import TopicPartition
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

NAMESPACE = "event_consumer"
UNKNOWN_EVENT_TYPE = "unknown"  # poison records and tombstones have no (trusted) event type
RECORD_LABELS = ("topic", "event_type")
BATCH_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10_000, 25_000, 50_000, 100_000)
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

__all__ = ["ConsumerMetrics", "UNKNOWN_EVENT_TYPE", "add_runtime_collectors"]


class ConsumerMetrics:
    """The loop's metrics, registered in `registry` (a fresh one when omitted)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, NAMESPACE
        self.consumed = Counter(
            "records_consumed", "Records consumed (every fetched record of a committed batch).", RECORD_LABELS, namespace=ns, registry=r
        )
        self.applied = Counter(
            "records_applied", "Events that changed the read model (newer than the stored version).", RECORD_LABELS, namespace=ns, registry=r
        )
        self.stale = Counter(
            "records_stale", "Events ignored by the version guard (duplicate or older version).", RECORD_LABELS, namespace=ns, registry=r
        )
        self.dead_lettered = Counter(
            "records_dead_lettered", "Records sent to the dead-letter topic.", RECORD_LABELS, namespace=ns, registry=r
        )
        self.tombstones = Counter(
            "tombstones", "Records with a null value (skipped).", RECORD_LABELS, namespace=ns, registry=r
        )
        self.batch_size = Histogram(
            "batch_size_records", "Records per committed batch.", namespace=ns, registry=r, buckets=BATCH_SIZE_BUCKETS
        )
        self.batch_duration = Histogram(
            "batch_duration_seconds",
            "Seconds from decoded batch to Kafka commit per committed batch transaction (dead-lettering, apply with retries, commit).",
            namespace=ns,
            registry=r,
            buckets=BATCH_SECONDS_BUCKETS,
        )
        self.db_retries = Counter("db_retries", "Transient database failures retried.", namespace=ns, registry=r)
        self.dead_letter_failures = Counter(
            "dead_letter_failures",
            "Dead-letter sends that failed (retried), by reason; dead_letter_too_large: sent header-only.",
            ["reason"], namespace=ns, registry=r,
        )
        self.native_fallback = Counter(
            "native_fallback_records",
            "Records that left the native fast path, by reason (a check it leaves to pydantic, unavailable, unsupported, panic).",
            ["reason"], namespace=ns, registry=r,
        )
        self.commit_failures = Counter(
            "kafka_commit_failures", "Kafka offset commits that failed (retried, carried over or dropped).", namespace=ns, registry=r
        )
        self.lag = Gauge(
            "lag_records", "Records between the database's position and the log end offset, every LAG_REFRESH_S.", ("topic", "partition"),
            namespace=ns, registry=r,
        )
        self.lag_seconds = Gauge(
            "lag_seconds", "How long ago the newest applied record was produced, while records wait behind it (0: caught up).",
            ("topic", "partition"), namespace=ns, registry=r,
        )
        self.lag_refresh_failures = Counter(
            "lag_refresh_failures",
            "Lag refreshes that could not read the log end offsets (gauges kept) or the database's positions (last known used).",
            ["source"], namespace=ns, registry=r,
        )
        self.last_applied = Gauge(
            "last_applied_timestamp_seconds", "Record timestamp (Unix time) of the newest applied record.", namespace=ns, registry=r
        )
        self.last_commit = Gauge(
            "last_commit_timestamp_seconds", "Unix time of the last successful Kafka offset commit.", namespace=ns, registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- what the loop reports --------------------------------------------------------------

    def record_batch(
        self,
        consumed: Mapping[tuple[str, str], int],
        tombstones: Mapping[str, int],
        dead_lettered: Mapping[tuple[str, str], int],
        applied: Mapping[tuple[str, str], int],
        stale: Mapping[tuple[str, str], int],
        size: int,
    ) -> None:
        """A batch committed to the database. Keyed by (topic, event_type), `tombstones` by topic."""
        for (topic, event_type), n in consumed.items():
            self.consumed.labels(topic, event_type).inc(n)
        for topic, n in tombstones.items():
            self.tombstones.labels(topic, UNKNOWN_EVENT_TYPE).inc(n)
        for (topic, event_type), n in dead_lettered.items():
            self.dead_lettered.labels(topic, event_type).inc(n)
        for counter, counts in ((self.applied, applied), (self.stale, stale)):
            for (topic, event_type), n in counts.items():
                if n:
                    counter.labels(topic, event_type).inc(n)
        self.batch_size.observe(size)

    def record_fallbacks(self, fallbacks: Mapping[str, int]) -> None:
        for reason, n in fallbacks.items():
            self.native_fallback.labels(reason).inc(n)

    def set_lag(self, tp: TopicPartition, lag: int, seconds: float = 0.0) -> None:
        self.lag.labels(tp.topic, str(tp.partition)).set(max(0, lag))
        self.lag_seconds.labels(tp.topic, str(tp.partition)).set(max(0.0, seconds))

    def forget_partitions(self, partitions: Iterable[TopicPartition]) -> None:
        """A revoked partition's lag is the new owner's to report."""
        for tp in partitions:
            for gauge in (self.lag, self.lag_seconds):
                try:
                    gauge.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass


def add_runtime_collectors(registry: CollectorRegistry) -> None:
    """process_* (CPU, memory, fds), python_info and python_gc_* in this registry."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
