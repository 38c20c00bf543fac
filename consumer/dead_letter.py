"""Sending records that cannot be applied to the DLQ (`run`, and `replay --dlq`).

A dead letter is the original key, value and headers plus the five x- headers, to
`<topic><suffix>`. Each record's ack is remembered, so a retry re-sends only what the broker has
not acknowledged (no duplicates in the DLQ). A record the broker can never take, even compressed
(the DLQ producer compresses), lands as a header-only dead letter (`x-error-type:
dead_letter_too_large`, `x-original-size`), so the partition moves on. Failures are counted by
reason, and a DLQ that keeps failing for `blocked_after_s` is reported by `blocked()` (/healthz)."""

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import structlog
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from consumer.batch import PoisonRecord, dead_letter_headers
from consumer.ports import Producer

log = structlog.get_logger("consumer.dead_letter")

TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
TOO_LARGE_TYPE = "dead_letter_too_large"


class DeadLetterSender:
    def __init__(
        self,
        producer: Producer,
        suffix: str,
        *,
        blocked_after_s: float = 300.0,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.producer = producer
        self.suffix = suffix
        self._blocked_after_s = blocked_after_s
        self._on_failure = on_failure
        self._clock = clock
        self._failing_since: float | None = None
        self._last_failure: str | None = None

    def blocked(self) -> str | None:
        """Why dead letters cannot be written, once they have failed for blocked_after_s; else None."""
        if self._failing_since is None or self._clock() - self._failing_since < self._blocked_after_s:
            return None
        return f"dead-letter sends failing for {self._clock() - self._failing_since:.0f}s: {self._last_failure}"

    async def send(self, items: Sequence[PoisonRecord]) -> None:
        """Sends the items not yet acknowledged and awaits every ack; raises the first failure
        (the caller's retry policy decides) after recording it."""
        pending = [item for item in items if not item.acked]
        if not pending:
            return
        # Every send is queued before any ack is awaited: they go out in one produce request.
        queued = [await self._queue(item) for item in pending]
        results = await asyncio.gather(*(self._settle(item, ack) for item, ack in zip(pending, queued)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            reason = type(failures[0]).__name__
            self._last_failure = f"{reason}: {failures[0]}"[:300]
            if self._failing_since is None:
                self._failing_since = self._clock()
            if self._on_failure is not None:
                self._on_failure(reason)
            raise failures[0]
        self._failing_since = self._last_failure = None

    async def _queue(self, item: PoisonRecord) -> Any:
        """The ack's future, or the error that refused the record before it was queued."""
        r = item.record
        try:
            return await self.producer.send(r.topic + self.suffix, value=r.value, key=r.key, headers=dead_letter_headers(item))
        except TOO_LARGE as exc:  # client-side: larger than max_request_size
            return exc

    async def _settle(self, item: PoisonRecord, ack: Any) -> None:
        r = item.record
        try:
            if isinstance(ack, BaseException):
                raise ack
            await ack
        except TOO_LARGE as exc:
            # The broker refuses a whole produce batch: a dead letter that shared one with the
            # too large record goes again alone before anything is given up.
            if not isinstance(ack, BaseException) and await self._fits_alone(item):
                item.acked = True
                _log_dead_letter(item)
                return
            # The bytes can never land, compressed as they were; the facts about them still can.
            size = len(r.value or b"")
            log.error("dead letter too large for the DLQ even compressed; sending it header-only", topic=r.topic,
                      partition=r.partition, offset=r.offset, size=size, error=type(exc).__name__)
            if self._on_failure is not None:
                self._on_failure(TOO_LARGE_TYPE)
            headers = dead_letter_headers(item, error_type=TOO_LARGE_TYPE, message=f"{item.poison.error_type}: {item.poison.message}")
            headers.append(("x-original-size", str(size).encode()))
            await (await self.producer.send(r.topic + self.suffix, value=None, key=r.key, headers=headers))
        item.acked = True
        _log_dead_letter(item)

    async def _fits_alone(self, item: PoisonRecord) -> bool:
        r = item.record
        try:
            await (await self.producer.send(r.topic + self.suffix, value=r.value, key=r.key, headers=dead_letter_headers(item)))
        except TOO_LARGE:
            return False
        return True


def _log_dead_letter(item: PoisonRecord) -> None:
    r = item.record
    record_log: Any = log.bind(topic=r.topic, partition=r.partition, offset=r.offset)
    event_id = _event_id_of(r.value)
    if event_id is not None:
        record_log = record_log.bind(event_id=event_id)
    # The error says why, never the payload (it may hold personal data).
    record_log.warning("record dead-lettered", error_type=item.poison.error_type, error=item.poison.message[:200])


def _event_id_of(value: bytes | None) -> str | None:
    """The envelope's event_id, when a dead-lettered value still has one (for the log line only)."""
    if not value or len(value) > 1_000_000:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    event_id = parsed.get("event_id") if isinstance(parsed, dict) else None
    return event_id[:64] if isinstance(event_id, str) else None
