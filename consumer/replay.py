"""`event-consumer replay`: re-applies a range of records to the read model, outside the group.

Manual partition assignment and no consumer group: neither the live group's committed offsets in
Kafka nor its positions in `consumer_offsets` are read or written, so a replay is safe while
`run` is running. The range is fixed at the start (end offsets, or the offsets of `--until`), so a
replay always terminates. Records go through the same code as `run` (consumer.batch.Preparer,
on the native path when it is built, then one transaction per fetched batch with write_prepared);
the version guard makes applying them again harmless (already applied events count as stale).
"""

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import structlog

from consumer.tally import Tally

T = TypeVar("T")
log = structlog.get_logger("consumer.replay")

EXIT_BAD_ARGS = 2
POLL_TIMEOUT_MS = 500
METADATA_ATTEMPTS = 50


class ReplayArgumentError(Exception):
    """An argument that only the broker can refute (unknown topic or partition): exit 2."""


class Interrupted(Exception):
    """SIGINT/SIGTERM during a batch's retries: the batch is given up uncommitted."""


# -- arguments -------------------------------------------------------------------------------


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 with a UTC offset (`Z` or `+HH:MM`). A naive time is refused rather than guessed."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {text!r}") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +HH:MM)")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "replay",
        help="re-apply a range of records to the read model (no consumer group; safe while `run` runs)",
        description=(
            "Reads the selected partitions with manual assignment (no consumer group, no stored offsets "
            "touched) from a start point up to the end offsets captured at the start (or --until), and "
            "applies them with the version guard, one transaction per fetched batch."
        ),
    )
    parser.add_argument("--topic", dest="topics", action="append", required=True, metavar="T", help="topic to replay (repeatable)")
    parser.add_argument(
        "--partition", dest="partitions", action="append", type=_non_negative_int, metavar="P",
        help="only this partition of each topic (repeatable; default: all)",
    )
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-beginning", action="store_true", help="from the first retained record")
    start.add_argument("--since", type=parse_timestamp, metavar="ISO8601", help="from the first record with a timestamp at or after this time")
    start.add_argument("--from-offset", type=_non_negative_int, metavar="N", help="from offset N of each selected partition (clamped to what exists)")
    parser.add_argument("--until", type=parse_timestamp, metavar="ISO8601", help="stop before the first record with a timestamp at or after this time (default: the end offsets at start)")
    effect = parser.add_mutually_exclusive_group()
    effect.add_argument("--dlq", action="store_true", help="dead-letter malformed records as `run` does (default: count and report them)")
    effect.add_argument("--dry-run", action="store_true", help="decode and count only; write nothing")
    # For tests: the period of the plain progress lines written when stderr is not a terminal.
    parser.add_argument("--progress-interval", type=_positive_float, default=5.0, help=argparse.SUPPRESS)
    parser.set_defaults(replay_parser=parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """The checks argparse cannot express; exits 2 with the subcommand's usage, as argparse does."""
    parser: argparse.ArgumentParser = args.replay_parser
    if args.until is not None and args.since is not None and args.until <= args.since:
        parser.error("--until must be later than --since")
    args.topics = list(dict.fromkeys(t.strip() for t in args.topics))
    if not all(args.topics):
        parser.error("--topic needs a topic name")
    if args.partitions is not None:
        args.partitions = sorted(set(args.partitions))


# -- the range to replay (pure) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Range:
    start: int
    stop: int  # exclusive

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


def plan_ranges(
    tps: Iterable[Any],
    beginning: Mapping[Any, int],
    end: Mapping[Any, int],
    *,
    from_offset: int | None = None,
    since: Mapping[Any, int | None] | None = None,
    until: Mapping[Any, int | None] | None = None,
) -> dict[Any, Range]:
    """[start, stop) per partition within [beginning, end]. `since`/`until` hold the
    offsets_for_times answers: None means no record at or after the time, i.e. the end."""
    ranges = {}
    for tp in tps:
        lo, hi = beginning[tp], end[tp]
        if from_offset is not None:
            start = from_offset
        elif since is not None:
            found = since.get(tp)
            start = hi if found is None else found
        else:
            start = lo
        start = min(max(start, lo), hi)
        stop = hi
        if until is not None and until.get(tp) is not None:
            stop = min(max(until[tp], lo), hi)  # type: ignore[type-var]
        ranges[tp] = Range(start, max(start, stop))
    return ranges


# -- counts -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ReplayStats(Tally):
    events: int = 0
    malformed: int = 0  # undecodable, plus those the database rejected (SQLSTATE 22/23)
    per_topic: Counter = field(default_factory=Counter)

    def summary(self, *, mode: str, elapsed: float, planned: int, interrupted: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {"mode": mode, "records": self.records, "planned": planned}
        if mode == "dry-run":
            fields["events"] = self.events
        else:
            fields.update(applied=self.applied, stale=self.stale)
        fields.update(malformed=self.malformed, dead_lettered=self.dead_lettered, tombstones=self.tombstones)
        fields.update(
            batches=self.batches,
            elapsed_s=round(elapsed, 2),
            records_per_s=round(self.records / elapsed, 1) if elapsed > 0 else 0.0,
        )
        if self.db_retries:
            fields["db_retries"] = self.db_retries
        if interrupted:
            fields["interrupted"] = True
        return fields


# -- the replay -------------------------------------------------------------------------------


class Replayer:
    """Fetches [start, stop) of every partition in `ranges` and applies it; never touches offsets."""

    def __init__(
        self,
        *,
        consumer: Any,
        pipeline: Any,  # consumer.pipeline.Pipeline, built without a group
        ranges: Mapping[Any, Range],
        batch_max_records: int,
        backoff: Any,
        stop: asyncio.Event,
        dry_run: bool = False,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self._consumer = consumer
        self._preparer, self._writer, self._dead_letters = pipeline.preparer, pipeline.writer, pipeline.dead_letters
        self._dlq = pipeline.dead_letters is not None
        self._ranges = dict(ranges)
        self._batch_max_records = batch_max_records
        self._backoff = backoff
        self._stop = stop
        self._dry_run = dry_run
        self._on_progress = on_progress
        self._positions = {tp: r.start for tp, r in self._ranges.items()}
        self.stats = ReplayStats()

    def done_per_topic(self) -> dict[str, int]:
        done: Counter = Counter()
        for tp, r in self._ranges.items():
            done[tp.topic] += min(self._positions[tp], r.stop) - r.start
        return dict(done)

    async def run(self) -> None:
        active = {tp for tp, r in self._ranges.items() if r.size > 0}
        if not active:
            return
        self._consumer.assign(sorted(active))
        for tp in sorted(active):
            self._consumer.seek(tp, self._ranges[tp].start)
        while active and not self._stop.is_set():
            fetched = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self._batch_max_records)
            records = {}
            for tp, recs in fetched.items():
                stop = self._ranges[tp].stop if tp in active else -1
                kept = [r for r in recs if r.offset < stop]
                if kept:
                    records[tp] = kept
            if records:
                await self._process(records)
            for tp in sorted(active):
                position = await self._consumer.position(tp)
                self._positions[tp] = position
                if position >= self._ranges[tp].stop:
                    active.discard(tp)
                    self._consumer.pause(tp)
            if self._on_progress is not None:
                for topic, done in self.done_per_topic().items():
                    self._on_progress(topic, done)

    async def _process(self, records: Mapping[Any, list]) -> None:
        from consumer.batch import Batch
        from consumer.retry import is_retried_dead_letter_error, is_transient_db_error
        from consumer.writer import Written
        from handlers.apply import Outcomes

        # One part (one transaction), decoded and prepared in a worker thread as `run` does.
        parts = await asyncio.to_thread(self._preparer.prepare, records, 1)
        batch = parts[0] if parts else Batch()
        written = Written(Outcomes())
        if not self._dry_run:
            if batch.poison and self._dlq:
                await self._retrying("dead-letter", lambda: self._dead_letters.send(batch.poison), is_retried_dead_letter_error)
            if batch.labels:  # one label per event
                transient = (lambda e: is_transient_db_error(e) or is_retried_dead_letter_error(e)) if self._dlq else is_transient_db_error
                written = await self._retrying("apply", lambda: self._writer.write(batch), transient)
        rejected = written.rejected
        s = self.stats
        s.count(batch, written)
        s.events += len(batch.labels)
        s.malformed += len(batch.poison) + len(rejected)
        if self._dlq:
            s.dead_lettered += len(batch.poison) + len(rejected)
        for tp, recs in records.items():
            s.per_topic[tp.topic] += len(recs)
        if not self._dlq:
            for item in [*batch.poison, *rejected]:
                r = item.record
                log.warning(
                    "malformed record skipped (not dead-lettered; --dlq would)" if not self._dry_run else "malformed record",
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    error_type=item.poison.error_type,
                    error=item.poison.message[:200],
                )

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]], is_transient: Callable[[BaseException], bool]) -> T:
        from consumer.retry import retry_transient

        def before_retry(attempt: int, exc: BaseException) -> float | None:
            if what == "apply":
                self.stats.db_retries += 1
            if self._stop.is_set():
                raise Interrupted(f"stopped while retrying {what}") from exc
            return None

        async def sleep_unless_stopped(delay: float) -> None:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass

        return await retry_transient(
            operation,
            what=what,
            is_transient=is_transient,
            backoff=self._backoff,
            before_retry=before_retry,
            sleep=sleep_unless_stopped,
        )


async def _partitions(consumer: Any, topics: list[str], wanted: list[int] | None) -> list[Any]:
    from aiokafka import TopicPartition

    existing = await consumer.topics()  # a metadata request for all topics: never auto-creates one
    missing = [t for t in topics if t not in existing]
    if missing:
        raise ReplayArgumentError(f"no such topic: {', '.join(missing)}")
    tps = []
    for topic in topics:
        parts = consumer.partitions_for_topic(topic)
        for _ in range(METADATA_ATTEMPTS):
            if parts:
                break
            # No public call refreshes the consumer's own metadata; with no topics tracked yet this
            # fetches all of them (again without creating any).
            await consumer._client.force_metadata_update()  # noqa: SLF001
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                await asyncio.sleep(0.1)
        if not parts:
            raise ReplayArgumentError(f"topic {topic} has no partition metadata")
        chosen = sorted(parts) if wanted is None else wanted
        absent = [p for p in chosen if p not in parts]
        if absent:
            raise ReplayArgumentError(f"topic {topic} has partitions {sorted(parts)}, not {absent}")
        tps.extend(TopicPartition(topic, p) for p in chosen)
    return tps


async def _offsets_at(consumer: Any, tps: list[Any], at: datetime) -> dict[Any, int | None]:
    ms = max(0, int(at.timestamp() * 1000))
    found = await consumer.offsets_for_times({tp: ms for tp in tps})
    return {tp: (found[tp].offset if found.get(tp) is not None else None) for tp in tps}


async def replay(settings: Any, args: argparse.Namespace) -> int:
    from consumer.kafka_clients import build_plain_consumer, build_producer
    from consumer.app import DLQ_COMPRESSION
    from consumer.pipeline import build_pipeline
    from consumer.process import Process
    from consumer.progress import make_progress, route_logs_through_current_stderr
    from handlers.registry import build_registry

    route_logs_through_current_stderr()
    registry = build_registry()
    mode = "dry-run" if args.dry_run else "apply"
    async with Process(settings, registry, pool_size=0 if args.dry_run else 2) as process:
        consumer = process.client(build_plain_consumer(settings))
        producer = process.client(build_producer(settings, compression_type=DLQ_COMPRESSION)) if args.dlq else None
        if process.engine is not None:
            await process.check_schema()
        for client, what in ((consumer, "consumer"), (producer, "producer")):
            if client is not None:
                await process.start(client, what, retry=False)
        try:
            tps = await _partitions(consumer, args.topics, args.partitions)
        except ReplayArgumentError as exc:
            print(f"event-consumer replay: {exc}", file=sys.stderr)
            return EXIT_BAD_ARGS
        beginning = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        since = await _offsets_at(consumer, tps, args.since) if args.since is not None else None
        until = await _offsets_at(consumer, tps, args.until) if args.until is not None else None
        ranges = plan_ranges(tps, beginning, end, from_offset=args.from_offset, since=since, until=until)
        totals: Counter = Counter()
        for tp, r in ranges.items():
            totals[tp.topic] += r.size
        planned = sum(totals.values())
        log.info(
            "replay starting",
            mode=mode,
            dlq=args.dlq,
            topics=args.topics,
            records=planned,
            ranges={f"{tp.topic}-{tp.partition}": [r.start, r.stop] for tp, r in sorted(ranges.items())},
        )

        progress = make_progress({t: totals[t] for t in args.topics}, interval_s=args.progress_interval)
        replayer = Replayer(
            consumer=consumer,
            pipeline=build_pipeline(registry, process.engine, producer, settings.kafka_dlq_suffix, group_id=None),
            ranges=ranges,
            batch_max_records=settings.batch_max_records,
            backoff=process.backoff,
            stop=process.stop,
            dry_run=args.dry_run,
            on_progress=progress.update,
        )
        t0 = time.monotonic()
        async with progress:
            try:
                await replayer.run()
            except Interrupted as exc:
                log.warning("batch given up uncommitted", reason=str(exc))
        interrupted = bool(process.signals)
        fields = replayer.stats.summary(mode=mode, elapsed=time.monotonic() - t0, planned=planned, interrupted=interrupted)
        progress.finish(fields, message="replay interrupted" if interrupted else "replay finished")
        return 128 + process.signals[0] if process.signals else 0


def command(args: argparse.Namespace, settings: Any) -> int:
    """Entry point from the CLI dispatch."""
    return asyncio.run(replay(settings, args))
