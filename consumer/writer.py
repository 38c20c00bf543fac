"""The transactional write of one prepared batch part, the same for `run` and `replay`.

One transaction: for a group member the fence (lock the partitions' stored positions; another
member already past them means StaleBatch), the version-guarded upserts, the next positions, and
the batch's dead letters awaited before the COMMIT. A data error (SQLSTATE 22/23: a row the
database refuses) rolls it back and the part is written again event by event in savepoints: the
refused events become `database_error` dead letters (sent, and acked before the COMMIT, when the
writer has a sender), the rest applies. Transient errors are raised for the caller's retry policy
(consumer.retry.retry_transient), which knows when to give up."""

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
import structlog
from aiokafka import TopicPartition
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumer.batch import Batch, PoisonRecord, Preparer
from consumer.offsets import load_positions, lock_positions, save_positions
from consumer.retry import is_data_error, is_transient_db_error, short_error, sqlstate_of
from handlers.apply import Outcomes, write_prepared
from handlers.decode import Poison
from handlers.registry import Contract

log = structlog.get_logger("consumer.writer")

SendDeadLetters = Callable[[Sequence[PoisonRecord]], Awaitable[None]]
# SQLAlchemy wraps what its statements raise; the native path's COPY goes through the driver
# connection, whose errors arrive as asyncpg's own. Both are classified alike (consumer.retry).
DATABASE_ERRORS = (DBAPIError, asyncpg.PostgresError)


class StaleBatch(Exception):
    """The database already holds positions past the start of this batch: another member (or an
    earlier life of this one) applied these records. Nothing is written; the partitions are re-sought."""

    def __init__(self, stored: Mapping[TopicPartition, int]) -> None:
        super().__init__(f"database positions ahead of batch: {dict(stored)}")
        self.stored = dict(stored)


@dataclass(slots=True)
class Written:
    outcomes: Outcomes
    rejected: list[PoisonRecord] = field(default_factory=list)  # events the database refused


class BatchWriter:
    """`group_id`: write the positions of that group, fenced; None (replay): neither."""

    def __init__(
        self,
        engine: AsyncEngine,
        contract: Contract,
        preparer: Preparer,
        *,
        group_id: str | None,
        send_dead_letters: SendDeadLetters | None,
    ) -> None:
        self._engine = engine
        self._contract = contract
        self._preparer = preparer
        self._group_id = group_id
        self._send_dead_letters = send_dead_letters

    async def write(
        self, batch: Batch, dead_letters: Awaitable[None] | None = None, send_dead_letters: SendDeadLetters | None = None
    ) -> Written:
        """One transaction; `dead_letters` (the batch's DLQ sends) is awaited before its COMMIT.
        `send_dead_letters` (the caller's, with its retry policy) sends what the database refuses."""
        try:
            async with self._engine.begin() as conn:
                await self._fence(conn, batch)
                outcomes = await write_prepared(conn, batch.prepared)
                await self._finish(conn, batch, dead_letters)
            return Written(outcomes)
        except DATABASE_ERRORS as exc:
            if is_transient_db_error(exc) or not is_data_error(exc):
                raise
            log.warning("a record failed in the database; isolating it", error=short_error(exc), sqlstate=sqlstate_of(exc))
        return await self._write_isolating(batch, dead_letters, send_dead_letters or self._send_dead_letters)

    async def stored_positions(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's positions in the database for these partitions (those it has)."""
        assert self._group_id is not None
        async with self._engine.connect() as conn:
            return await load_positions(conn, self._group_id, tps)

    async def _fence(self, conn: AsyncConnection, batch: Batch) -> None:
        if self._group_id is None:
            return
        stored = await lock_positions(conn, self._group_id, batch.partitions)
        if any(pos > batch.first_offsets[tp] for tp, pos in stored.items()):
            raise StaleBatch(stored)

    async def _finish(self, conn: AsyncConnection, batch: Batch, dead_letters: Awaitable[None] | None) -> None:
        if self._group_id is not None:
            await save_positions(conn, self._group_id, batch.next_offsets)
        if dead_letters is not None:
            await asyncio.shield(dead_letters)  # shared by the parts: one's cancellation is not the others'

    async def _write_isolating(self, batch: Batch, dead_letters: Awaitable[None] | None, send: SendDeadLetters | None) -> Written:
        """Each event in its own savepoint; the refused ones dead-lettered before the COMMIT."""
        self._preparer.ensure_decoded(batch)
        async with self._engine.begin() as conn:
            await self._fence(conn, batch)
            outcomes = Outcomes()
            rejected: list[PoisonRecord] = []
            for event, record in zip(batch.events, batch.event_records, strict=True):
                label = (record.topic, event.event_type)
                try:
                    async with conn.begin_nested():
                        result = await self._contract[event.event_type].apply(conn, [event])
                except DATABASE_ERRORS as exc:
                    if is_transient_db_error(exc) or not is_data_error(exc):
                        raise
                    message = f"SQLSTATE {sqlstate_of(exc)}: {short_error(exc)}"
                    rejected.append(PoisonRecord(record, Poison("database_error", message[:1000])))
                    outcomes.dead_lettered[label] += 1
                    continue
                if result.applied:
                    outcomes.applied[label] += result.applied
                if result.stale:
                    outcomes.stale[label] += result.stale
            if rejected and send is not None:
                await send(rejected)
            await self._finish(conn, batch, dead_letters)
        return Written(outcomes, rejected)
