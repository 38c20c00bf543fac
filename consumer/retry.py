"""Which failures are transient, the capped exponential backoff with jitter used for them, and
the retry loop that `run` and `replay` share."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import structlog
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CommitFailedError,
    GroupAuthorizationFailedError,
    IllegalStateError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

T = TypeVar("T")
log = structlog.get_logger("consumer.retry")

# SQLSTATE classes worth waiting out: connection (08), transaction rollback: serialization
# failure and deadlock (40), insufficient resources (53), operator intervention: shutdown,
# cannot connect now (57), system error (58).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def sqlstate_of(exc: BaseException) -> str | None:
    for candidate in (exc, getattr(exc, "orig", None), getattr(getattr(exc, "orig", None), "__cause__", None)):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def _chain(exc: BaseException):
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = getattr(current, "orig", None) if getattr(current, "orig", None) is not None else current.__cause__


def is_driver_data_error(exc: BaseException) -> bool:
    """asyncpg could not encode a value for the query (it never reached the server)."""
    return any(isinstance(e, asyncpg.exceptions.DataError) for e in _chain(exc))


def is_transient_db_error(exc: BaseException) -> bool:
    if is_driver_data_error(exc):
        return False
    if isinstance(exc, (OSError, ConnectionError, TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        return code[:2] in TRANSIENT_SQLSTATE_CLASSES
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, (OperationalError, InterfaceError)):
            code = sqlstate_of(exc)
            return code is None or code[:2] in TRANSIENT_SQLSTATE_CLASSES
        code = sqlstate_of(exc)
        return code is not None and code[:2] in TRANSIENT_SQLSTATE_CLASSES
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient_db_error(cause)


# Kafka errors no retry can mend: a record too large, a refused authorization, an invalid topic.
PERMANENT_KAFKA_ERRORS = (
    CommitFailedError,
    IllegalStateError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    InvalidTopicError,
)


def is_transient_kafka_error(exc: BaseException) -> bool:
    if isinstance(exc, PERMANENT_KAFKA_ERRORS):
        return False
    return isinstance(exc, (KafkaError, OSError, ConnectionError, TimeoutError))


def is_retried_dead_letter_error(exc: BaseException) -> bool:
    """A dead letter cannot be skipped (its record would be lost), so every broker error is
    retried, the permanent ones too: an operator can grant the ACL or create the topic. Not in
    silence: each failure is counted by reason and /healthz turns 503 after DLQ_BLOCKED_AFTER_S
    (consumer.dead_letter). A record too large even compressed never gets here: it lands header-only."""
    return isinstance(exc, (KafkaError, OSError, ConnectionError, TimeoutError)) and not isinstance(exc, (CommitFailedError, IllegalStateError))


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.2
    max_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**(attempt-1))], at least initial/2."""
        cap = min(self.max_s, self.initial_s * (2 ** max(attempt - 1, 0)))
        return max(self.initial_s / 2, random.uniform(0, cap))


def is_data_error(exc: BaseException) -> bool:
    """Errors that one record causes and that retrying cannot fix: data exceptions (22),
    integrity constraint violations (23), e.g. a CHECK constraint an operator added, and values
    the driver cannot encode (asyncpg.DataError)."""
    if is_driver_data_error(exc):
        return True
    code = sqlstate_of(exc)
    return code is not None and code[:2] in {"22", "23"}


def short_error(exc: BaseException) -> str:
    """One line for a log: the driver's message (never a DSN), or the exception's repr."""
    lines = str(getattr(exc, "orig", None) or exc).splitlines() or str(exc).splitlines()
    text = lines[0] if lines else repr(getattr(exc, "orig", None) or exc)
    return f"{type(exc).__name__}: {text}"[:300]


async def retry_transient(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    is_transient: Callable[[BaseException], bool],
    backoff: Backoff,
    before_retry: Callable[[int, BaseException], float | None],
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Runs `operation` until it succeeds; a non-transient error goes up at once. After each
    transient failure `before_retry(attempt, error)` is asked first: it raises to give up, or returns
    the longest wait it allows (None: no limit)."""
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            limit = before_retry(attempt, exc)
            delay = backoff.delay(attempt) if limit is None else min(backoff.delay(attempt), limit)
            log.warning(f"{what} failed; retrying", attempt=attempt, delay_s=round(delay, 2), error=short_error(exc))
            await sleep(delay)
