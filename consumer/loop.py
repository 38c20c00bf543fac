"""The consumer loop: fetch -> decode -> dead-letter -> apply (one transaction) -> commit offsets.

The loop is the only owner of transactions and offsets. Ordering per batch:
  1. poison records are produced to the DLQ;
  2. meanwhile, one database transaction per part locks the partitions' stored positions (a fence
     against another member that processed the same records), applies every aggregate's upserts
     and stores the next offsets, then awaits the DLQ acks before its COMMIT;
  3. only then Kafka's committed offsets move, for partitions this member still owns.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer.batch import Batch, PoisonRecord
from consumer.metrics import UNKNOWN_EVENT_TYPE, ConsumerMetrics
from consumer.pipeline import Pipeline
from consumer.tally import Tally
from consumer.ports import GroupConsumer
from consumer.retry import Backoff, is_retried_dead_letter_error, is_transient_db_error, is_transient_kafka_error, retry_transient, short_error
from consumer.writer import StaleBatch, Written
from handlers.apply import Outcomes

T = TypeVar("T")
log = structlog.get_logger("consumer.loop")

KAFKA_COMMIT_ATTEMPTS = 5
LAG_REFRESH_S = 5.0  # how often the lag task refreshes the gauges
LAG_STEP_TIMEOUT_S = 2.0
INFLIGHT_POLL_MS = 5  # getmany's wait while a batch is in flight
FALLBACK_LOG_INTERVAL_S = 60.0
FALLBACK_HINTS = {
    "unavailable": "the ec_native extension is not built (scripts/bootstrap.sh with cargo)",
    "unsupported": "an aggregate's schema uses a check the native path lacks (see the start-up warning)",
    "panic": "a defect of the native path: please report it with the log above",
    "error": "a defect of the native path: please report it with the log above",
    "check": "a producer sends values the native checks leave to pydantic (valid, but slower)",
}


class Abandoned(Exception):
    """The batch was given up uncommitted (partitions revoked, or shutdown timed out)."""


@dataclass(slots=True)
class Stats(Tally):
    commit_failures: int = 0
    last_commit_at: float | None = None
    # monotonic time of the last sign of life: getmany returned, a batch committed, or a retry
    # attempt of a failing batch began (what /healthz reads)
    last_progress_at: float = field(default_factory=time.monotonic)


class ConsumerLoop:
    def __init__(
        self,
        *,
        consumer: GroupConsumer,
        pipeline: Pipeline,
        group_id: str,
        batch_max_records: int,
        backoff: Backoff,
        shutdown_timeout_s: float,
        poll_timeout_ms: int = 500,
        write_concurrency: int = 1,
        metrics: ConsumerMetrics | None = None,
        lag_refresh_s: float = LAG_REFRESH_S,
    ) -> None:
        self._consumer = consumer
        self._preparer, self._writer, self._dead_letters = pipeline.preparer, pipeline.writer, pipeline.dead_letters
        self._group_id = group_id
        self._batch_max_records = batch_max_records
        self._backoff = backoff
        self._shutdown_timeout_s = shutdown_timeout_s
        self._poll_timeout_ms = poll_timeout_ms
        self._write_concurrency = write_concurrency
        self._lock = asyncio.Lock()
        self._generation = 0
        self._stopping = asyncio.Event()
        self._deadline: float | None = None
        self._pending_commit: dict[TopicPartition, int] = {}
        self.stats = Stats()
        self.metrics = metrics if metrics is not None else ConsumerMetrics()
        self._lag_refresh_s = lag_refresh_s
        # Lag needs end_offsets() (aiokafka's consumer has it; the GroupConsumer port does not require it).
        self._end_offsets = getattr(consumer, "end_offsets", None)
        self._positions: dict[TopicPartition, int] = {}  # the database's, as of the last commit or assignment
        self._applied_at: dict[TopicPartition, float] = {}  # timestamp (s) of the newest applied record
        self.native_unavailable = self._preparer.native_unavailable
        self.native = pipeline.native
        self.python_only = self._preparer.python_only  # event type -> why the native path cannot take it
        self._fallbacks_logged_at: dict[str, float] = {}
        self._fallbacks_unlogged: Counter = Counter()

    # -- lifecycle -------------------------------------------------------------------------

    def dead_letters_blocked(self) -> str | None:
        return self._dead_letters.blocked() if self._dead_letters is not None else None

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("stop requested; finishing the current batch", timeout_s=self._shutdown_timeout_s)
            self._deadline = time.monotonic() + self._shutdown_timeout_s
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Fetch, decode and prepare batch N+1 while batch N is in the database (a two-stage
        pipeline: the Python work of one batch overlaps PostgreSQL's work on the other). N+1 is
        only written after all of N committed, in the same generation; otherwise it is dropped
        and its records fetched again."""
        self.stats.last_progress_at = time.monotonic()
        inflight: asyncio.Task[set[TopicPartition]] | None = None
        lag_task = asyncio.create_task(self._lag_loop())
        try:
            while not self._stopping.is_set():
                # With a batch in flight, wait for records only briefly: the next batch is prepared
                # as soon as the broker's answer arrives, and the finished one is collected soon.
                timeout_ms = INFLIGHT_POLL_MS if inflight is not None else self._poll_timeout_ms
                records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._batch_max_records)
                self.stats.last_progress_at = time.monotonic()
                if not records:
                    if inflight is not None:
                        if inflight.done():
                            task, inflight = inflight, None
                            await task
                        continue
                    if self._pending_commit:
                        async with self._lock:
                            await self._commit_kafka({})
                    continue
                generation = self._generation
                parts = await self._prepare(records)
                if inflight is not None:
                    task, inflight = inflight, None
                    unsettled = await task
                    if unsettled:
                        self._drop(parts, generation, unsettled)
                        continue
                if generation != self._generation or self._stopping.is_set():
                    self._drop(parts, generation, set())
                    continue
                inflight = asyncio.create_task(self._process_locked(parts, generation))
        finally:
            lag_task.cancel()
            if inflight is not None:
                await inflight
        async with self._lock:
            if self._pending_commit:
                await self._commit_kafka({})

    def _drop(self, parts: list[Batch], generation: int, unsettled: set[TopicPartition]) -> None:
        """Prepared parts that must not be written (the batch before did not fully commit, or a
        rebalance or stop came in between): make sure their records are fetched again."""
        if generation != self._generation or self._stopping.is_set():
            return  # a rebalance reset the positions (or we are stopping): nothing to undo
        # The previous batch's `unsettled` partitions were re-sought to where the database is;
        # seeking those to this batch's offsets could skip records. The others go back here.
        assigned = self._consumer.assignment()
        for part in parts:
            for tp in part.partitions:
                if tp in assigned and tp not in unsettled:
                    self._consumer.seek(tp, part.first_offsets[tp])
        log.debug("prepared batch dropped; its records will be fetched again", records=sum(p.size for p in parts))

    # -- one batch -------------------------------------------------------------------------

    async def _prepare(self, records: Mapping[TopicPartition, list]) -> list[Batch]:
        """Decode and prepare in a worker thread, so that the event loop stays free for the batch
        in flight: each of its statements goes out as soon as the database answers the last one
        (the loop thread gets the GIL back within the switch interval set by `consumer.app._tune_gil`)."""
        return await asyncio.to_thread(self._preparer.prepare, records, self._write_concurrency)

    async def _process_locked(self, parts: list[Batch], generation: int) -> set[TopicPartition]:
        async with self._lock:
            return await self._process_parts(parts, generation)

    async def process(self, records: Mapping[TopicPartition, list]) -> bool:
        """One fetched batch, start to end (the caller holds no lock). True if all of it committed."""
        generation = self._generation
        parts = await self._prepare(records)
        async with self._lock:
            return not await self._process_parts(parts, generation)

    async def _process_parts(self, parts: list[Batch], generation: int) -> set[TopicPartition]:
        """Each part in its own transaction, concurrently, while the dead letters of all parts are
        sent (each COMMIT awaits their acks), then Kafka's offsets for the parts that committed.
        Returns the partitions that did not commit (their positions were dealt with: re-sought,
        or left to the rebalance)."""
        started = time.monotonic()
        poison = [item for part in parts for item in part.poison]
        # The dead letters go out while the transactions run; every transaction awaits their acks
        # before its COMMIT, so a poison record is never behind a stored position without them.
        dead_letters = (
            asyncio.ensure_future(self._retrying("dead-letter", lambda: self._dead_letter(poison), generation, is_retried_dead_letter_error))
            if poison
            else None
        )
        results = await asyncio.gather(*(self._write_part(part, generation, dead_letters) for part in parts), return_exceptions=True)
        if dead_letters is not None:
            # Every part may have failed before awaiting it: its outcome is collected here.
            await asyncio.wait([dead_letters])
            if not dead_letters.cancelled() and isinstance(dead_letters.exception(), Abandoned):
                log.warning("dead letters abandoned unsent", reason=str(dead_letters.exception()), records=len(poison))
        unsettled: set[TopicPartition] = set()
        committed: dict[TopicPartition, int] = {}
        committed_parts = 0
        failure: BaseException | None = None
        for part, result in zip(parts, results):
            if isinstance(result, Written):
                committed.update(part.next_offsets)
                committed_parts += 1
                continue
            unsettled.update(part.partitions)
            if isinstance(result, StaleBatch):
                self._reseek(part, result.stored)
            elif isinstance(result, Abandoned):
                log.warning("batch abandoned uncommitted; it will be fetched again", reason=str(result), records=part.size)
            else:
                failure = failure or result
        if committed:
            self._positions.update(committed)
            for part, result in zip(parts, results):
                if isinstance(result, Written):
                    self._applied_at.update({tp: ms / 1000 for tp, ms in part.last_timestamps.items() if ms is not None})
            await self._commit_kafka(committed)
            for _ in range(committed_parts):  # one per transaction, as the batch size histogram
                self.metrics.batch_duration.observe(time.monotonic() - started)
        if failure is not None:
            raise failure
        return unsettled

    async def _write_part(self, part: Batch, generation: int, dead_letters: Awaitable[None] | None = None) -> Written:
        started = time.monotonic()
        async def send_rejected(items: Sequence[PoisonRecord]) -> None:
            # what the database refuses is dead-lettered inside the transaction, with the same retry as the rest
            await self._retrying("dead-letter", lambda: self._dead_letter(items), generation, is_retried_dead_letter_error)

        written = await self._retrying("apply", lambda: self._writer.write(part, dead_letters, send_rejected), generation, is_transient_db_error)
        self.stats.count(part, written)
        self.stats.dead_lettered += len(part.poison) + len(written.rejected)
        self.stats.last_progress_at = time.monotonic()
        self._record_metrics(part, written.outcomes)
        log.debug(
            "batch committed to the database",
            records=part.size,
            partitions=len(part.next_offsets),
            **written.outcomes.totals(),
            poison=len(part.poison),
            tombstones=sum(part.tombstones.values()),
            seconds=round(time.monotonic() - started, 4),
        )
        return written

    def _record_metrics(self, batch: Batch, outcomes: Outcomes) -> None:
        """Per (topic, event_type): events by their type, poison records and tombstones as "unknown"."""
        consumed: Counter = Counter(batch.labels)
        poison: Counter = Counter((item.record.topic, UNKNOWN_EVENT_TYPE) for item in batch.poison)
        consumed.update(poison)
        for topic, n in batch.tombstones.items():
            consumed[(topic, UNKNOWN_EVENT_TYPE)] += n
        self.metrics.record_batch(consumed, batch.tombstones, poison + outcomes.dead_lettered, outcomes.applied, outcomes.stale, batch.size)
        if batch.fallbacks:
            self._note_fallbacks(batch.fallbacks)

    def _note_fallbacks(self, fallbacks: Counter) -> None:
        """Counts the records that left the native path, and says why at most once a minute per reason."""
        self.metrics.record_fallbacks(fallbacks)
        self._fallbacks_unlogged.update(fallbacks)
        now = time.monotonic()
        for reason, n in list(self._fallbacks_unlogged.items()):
            if now - self._fallbacks_logged_at.get(reason, -FALLBACK_LOG_INTERVAL_S) >= FALLBACK_LOG_INTERVAL_S:
                log.warning("records left the native fast path", reason=reason, records=n, hint=FALLBACK_HINTS.get(reason, FALLBACK_HINTS["check"]))
                self._fallbacks_logged_at[reason] = now
                del self._fallbacks_unlogged[reason]

    async def _lag_loop(self) -> None:
        """On its own timer, beside the batch loop: the gauges keep moving while a batch waits for
        a database or a broker that is down."""
        while True:
            await asyncio.sleep(self._lag_refresh_s)
            try:
                await self.refresh_lag()
            except Exception as exc:  # noqa: BLE001 - the gauges keep their last values; counted, and said at debug (every LAG_REFRESH_S)
                self.metrics.lag_refresh_failures.labels("end_offsets").inc()
                log.debug("lag not refreshed", error=short_error(exc))

    async def refresh_lag(self) -> None:
        """Lag per assigned partition = the log end offset minus the database's position (the
        truth here; the last known one when the database cannot be read). The same definition as
        `event-consumer offsets show`. lag_seconds: how long ago the newest applied record was
        produced, while records wait behind it."""
        assigned = sorted(self._consumer.assignment())
        if not assigned or self._end_offsets is None:
            return
        ends = await asyncio.wait_for(self._end_offsets(assigned), timeout=LAG_STEP_TIMEOUT_S)
        try:
            stored = await asyncio.wait_for(self._writer.stored_positions(assigned), timeout=LAG_STEP_TIMEOUT_S)
            self._positions.update(stored)
        except Exception as exc:  # noqa: BLE001 - the positions of the last commit stand in (see docstring); counted
            self.metrics.lag_refresh_failures.labels("database_positions").inc()
            log.debug("database positions unreadable for the lag; using the last known", error=short_error(exc))
        now = time.time()
        for tp in assigned:
            position = self._positions.get(tp)
            if position is None or tp not in ends:
                continue
            lag = max(0, ends[tp] - position)
            applied_at = self._applied_at.get(tp)
            self.metrics.set_lag(tp, lag, 0.0 if lag == 0 or applied_at is None else max(0.0, now - applied_at))
        if self._applied_at:
            self.metrics.last_applied.set(max(self._applied_at.values()))

    async def _dead_letter(self, items: Sequence[PoisonRecord]) -> None:
        assert self._dead_letters is not None, "run always has a dead-letter producer"
        await self._dead_letters.send(items)

    def _reseek(self, batch: Batch, stored: Mapping[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        for tp in batch.partitions:
            position = max(stored.get(tp, batch.first_offsets[tp]), batch.first_offsets[tp])
            if tp in assigned:
                self._consumer.seek(tp, position)
        log.info("batch already applied by the database's position; re-sought", positions={str(k): v for k, v in stored.items()})

    # -- Kafka offsets ---------------------------------------------------------------------

    async def _commit_kafka(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """Kafka's committed offset trails the database; a failure here loses nothing (the next
        assignment seeks to the database position), so it is retried a few times, then carried over."""
        self._pending_commit.update(next_offsets)
        assigned = self._consumer.assignment()
        offsets = {tp: off for tp, off in self._pending_commit.items() if tp in assigned}
        self._pending_commit = dict(offsets)
        if not offsets:
            return
        for attempt in range(1, KAFKA_COMMIT_ATTEMPTS + 1):
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                self.stats.commit_failures += 1
                self.metrics.commit_failures.inc()
                log.warning("kafka refused the offset commit (rebalance); the database keeps the position", error=short_error(exc))
                self._pending_commit.clear()
                return
            except KafkaError as exc:
                self.stats.commit_failures += 1
                self.metrics.commit_failures.inc()
                if not is_transient_kafka_error(exc) or attempt == KAFKA_COMMIT_ATTEMPTS or self._past_deadline():
                    log.warning("kafka offset commit failed; will retry with the next batch", error=short_error(exc))
                    return
                await asyncio.sleep(self._backoff.delay(attempt))
            else:
                for tp, off in offsets.items():
                    if self._pending_commit.get(tp) == off:
                        del self._pending_commit[tp]
                self.stats.last_commit_at = time.time()
                self.metrics.last_commit.set(self.stats.last_commit_at)
                return

    # -- rebalance -------------------------------------------------------------------------

    async def on_revoked(self, revoked: list[TopicPartition], wait_s: float) -> None:
        self.metrics.forget_partitions(revoked)
        for tp in revoked:
            self._positions.pop(tp, None)
            self._applied_at.pop(tp, None)
        try:
            await asyncio.wait_for(self._lock.acquire(), timeout=wait_s)
        except asyncio.TimeoutError:
            # The batch in flight is stuck retrying; tell it to give up. Even if it commits later,
            # the position fence in the database keeps the new owner's work from being undone.
            self._generation += 1
            log.warning("revoke: in-flight batch did not finish in time; abandoning it", partitions=len(revoked))
            return
        try:
            self._generation += 1
            pending = {tp: off for tp, off in self._pending_commit.items() if tp in set(revoked)}
            if pending:
                try:
                    await self._consumer.commit(pending)
                except KafkaError as exc:
                    self.stats.commit_failures += 1
                    self.metrics.commit_failures.inc()
                    log.warning("revoke: final offset commit failed; the database keeps the position", error=short_error(exc))
                else:
                    self.stats.last_commit_at = time.time()
                    self.metrics.last_commit.set(self.stats.last_commit_at)
            self._pending_commit = {tp: off for tp, off in self._pending_commit.items() if tp not in set(revoked)}
        finally:
            self._lock.release()
        log.info("partitions revoked", partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in revoked))

    async def on_assigned(self, assigned: list[TopicPartition], timeout_s: float = 10.0) -> None:
        """Seek to the database position where it is ahead of Kafka's committed offset. Best effort:
        if the database is unreachable now, the fence in _apply_in does the same on the first batch."""
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
        if not assigned:
            return
        try:
            async with asyncio.timeout(timeout_s):
                stored = await self._writer.stored_positions(assigned)
                self._positions.update(stored)
                for tp, position in stored.items():
                    committed = await self._consumer.committed(tp)
                    if committed is None or position > committed:
                        self._consumer.seek(tp, position)
                        # Kafka's offset catches up with the database's at the next commit, even
                        # if no record is left to fetch (the last batch's own commit may have
                        # been refused by the rebalance that brought us here).
                        self._pending_commit[tp] = max(position, self._pending_commit.get(tp, 0))
                        log.info("sought to the database position", topic=tp.topic, partition=tp.partition, offset=position, kafka_committed=committed)
        except Exception as exc:  # noqa: BLE001 - best effort, see docstring
            log.warning("could not read database positions on assignment; the batch fence will apply them", error=short_error(exc))

    # -- retry -----------------------------------------------------------------------------

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    async def _retrying(
        self,
        what: str,
        operation: Callable[[], Awaitable[T]],
        generation: int,
        is_transient: Callable[[BaseException], bool],
    ) -> T:
        def before_retry(attempt: int, exc: BaseException) -> float | None:
            # A failing batch that keeps retrying is alive (waiting for a dependency), not stuck.
            self.stats.last_progress_at = time.monotonic()
            if what == "apply":
                self.stats.db_retries += 1
                self.metrics.db_retries.inc()
            if generation != self._generation:
                raise Abandoned("partitions were revoked during retries") from exc
            if self._past_deadline():
                raise Abandoned("shutdown timeout reached during retries") from exc
            return None if self._deadline is None else max(0.0, self._deadline - time.monotonic()) + 0.01

        return await retry_transient(
            operation, what=what, is_transient=is_transient, backoff=self._backoff, before_retry=before_retry
        )


class RebalanceListener(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop, revoke_wait_s: float) -> None:
        self._loop = loop
        self._revoke_wait_s = revoke_wait_s

    async def on_partitions_revoked(self, revoked):  # type: ignore[override]
        await self._loop.on_revoked(list(revoked), self._revoke_wait_s)

    async def on_partitions_assigned(self, assigned):  # type: ignore[override]
        await self._loop.on_assigned(list(assigned))
