"""`event-consumer offsets show|reset`: the group's position, which lives in two places that must
agree: Kafka's committed offsets and the database (`consumer_offsets.next_offset`, written with
the rows). The consumer seeks to the database position when it is ahead of Kafka's, so a reset
must move both, and only while no member of the group is running."""

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from consumer.kafka_clients import KafkaAuthError, build_admin, build_plain_consumer, client_kwargs, probe
from consumer.offsets import load_positions, lock_positions, save_positions
from consumer.settings import Settings
from database.engine import make_engine

T = TypeVar("T")

STEP_TIMEOUT_S = 10.0
EXIT_FAILURE = 1
EXIT_USAGE = 2
ACTIVE_STATES = {"PreparingRebalance", "CompletingRebalance", "Stable", "Assigning", "Reconciling"}


class OffsetsError(Exception):
    """A failure to report in one line (exit 1); never carries a secret."""


def parse_reset_target(value: str) -> str | datetime:
    """argparse type for --to: earliest, latest or an ISO 8601 timestamp with a UTC offset."""
    lowered = value.strip().lower()
    if lowered in ("earliest", "latest"):
        return lowered
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected earliest, latest or an ISO 8601 timestamp (e.g. 2026-03-01T10:00:00Z), not {value!r}"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"the timestamp {value!r} needs a UTC offset (e.g. 2026-03-01T10:00:00Z or +02:00)")
    return when


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    topic: str
    partition: int
    committed: int | None  # Kafka's committed offset for the group (None: never committed)
    database: int | None  # consumer_offsets.next_offset (None: no row)
    beginning: int  # log start offset
    end: int  # log end offset (last stable offset: the consumer reads read_committed)

    @property
    def position(self) -> int:
        """Where the next `run` starts: the further of the two positions (the consumer seeks to
        the database's when it is ahead), and the log start when both are missing or truncated."""
        known = [p for p in (self.committed, self.database) if p is not None]
        return max([self.beginning, *known]) if known else self.beginning

    @property
    def lag(self) -> int:
        """End offset minus the database's position (Kafka's committed offset where the database
        has none): the definition of event_consumer_lag_records."""
        applied = self.database if self.database is not None else self.committed
        return max(0, self.end - max(self.beginning, applied if applied is not None else self.beginning))

    def as_dict(self) -> dict:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "database": self.database,
            "beginning": self.beginning,
            "end": self.end,
            "lag": self.lag,
        }


@dataclass(frozen=True, slots=True)
class GroupState:
    state: str
    members: list[str]  # "client_id@host" per member

    @property
    def active(self) -> bool:
        return bool(self.members) or self.state in ACTIVE_STATES


async def _step(what: str, awaitable: Awaitable[T], timeout_s: float = STEP_TIMEOUT_S) -> T:
    try:
        async with asyncio.timeout(timeout_s):
            return await awaitable
    except TimeoutError:
        raise OffsetsError(f"{what}: no answer within {timeout_s:g} s") from None
    except KafkaAuthError as exc:
        raise OffsetsError(str(exc)) from None
    except KafkaError as exc:
        raise OffsetsError(f"{what}: {type(exc).__name__}: {exc}") from None


class _Session:
    """Kafka admin + a consumer (plain, or of the group for commits) + the database engine."""

    def __init__(self, settings: Settings, *, for_commit: bool = False) -> None:
        self.settings = settings
        self.group_id = settings.kafka_group_id
        self.admin = build_admin(settings)
        self.consumer = _build_committer(settings) if for_commit else build_plain_consumer(settings)
        self.engine = make_engine(settings.database_url.get_secret_value(), pool_size=1, max_overflow=1)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> "_Session":
        try:
            self._stack.push_async_callback(self.engine.dispose)
            await _step("connecting to Kafka", probe(self.settings, STEP_TIMEOUT_S))
            self._stack.push_async_callback(_quietly, self.admin.close())
            await _step("starting the Kafka admin client", self.admin.start())
            self._stack.push_async_callback(_quietly, self.consumer.stop())
            await _step("starting the Kafka consumer", self.consumer.start())
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._stack.aclose()

    async def partitions(self, topics: list[str]) -> list[TopicPartition]:
        # Metadata for all topics: asking for named topics would auto-create missing ones.
        described = await _step("listing Kafka topics", self.admin.describe_topics())
        known = {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described if t["error_code"] == 0}
        missing = [t for t in topics if t not in known]
        if missing:
            raise OffsetsError(f"topic(s) not found in Kafka: {', '.join(missing)} (KAFKA_TOPICS)")
        return [TopicPartition(t, p) for t in topics for p in known[t]]

    async def group_state(self) -> GroupState:
        responses = await _step("describing the consumer group", self.admin.describe_consumer_groups([self.group_id]))
        for response in responses:
            for group in response.to_object()["groups"]:
                if group["group"] == self.group_id:
                    members = [f"{m['client_id']}@{m['client_host'].lstrip('/')}" for m in group["members"]]
                    return GroupState(group["state"], members)
        return GroupState("Dead", [])

    async def status(self, tps: list[TopicPartition]) -> list[PartitionOffsets]:
        committed_raw = await _step(
            "reading the group's committed offsets", self.admin.list_consumer_group_offsets(self.group_id, partitions=tps)
        )
        committed = {tp: meta.offset for tp, meta in committed_raw.items() if meta.offset >= 0}
        beginning = await _step("reading the log start offsets", self.consumer.beginning_offsets(tps))
        end = await _step("reading the log end offsets", self.consumer.end_offsets(tps))
        database = await _step("reading the database positions", self._load_db(tps))
        return [
            PartitionOffsets(tp.topic, tp.partition, committed.get(tp), database.get(tp), beginning[tp], end[tp])
            for tp in sorted(tps)
        ]

    async def _load_db(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        async with self.engine.connect() as conn:
            return await load_positions(conn, self.group_id, tps)


def _build_committer(settings: Settings):
    """A consumer of the group that never joins it: partitions are assigned by hand, so its
    commits go in as a non-member (generation -1), which the coordinator accepts only while the
    group is empty. aiokafka 0.14's admin client has no alter-offsets call."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        **client_kwargs(settings),
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )


async def _quietly(awaitable: Awaitable) -> None:
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await awaitable
    except Exception:  # noqa: BLE001 - closing must not hide the real outcome
        pass


# -- show -------------------------------------------------------------------------------------


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def render_table(group_id: str, group: GroupState, rows: list[PartitionOffsets]) -> str:
    header = ("TOPIC", "PARTITION", "COMMITTED", "DATABASE", "END", "LAG")
    body = [(r.topic, str(r.partition), _cell(r.committed), _cell(r.database), str(r.end), str(r.lag)) for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [f"group {group_id}: {group.state}, {len(group.members)} member(s)"]
    for row in [header, *body]:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    lines.append(f"total lag {sum(r.lag for r in rows)}")
    return "\n".join(lines)


async def show(settings: Settings, as_json: bool, out: TextIO) -> int:
    async with _Session(settings) as session:
        tps = await session.partitions(settings.kafka_topics)
        rows = await session.status(tps)
        group = await session.group_state()
    if as_json:
        doc = {
            "group_id": settings.kafka_group_id,
            "group_state": group.state,
            "members": len(group.members),
            "partitions": [r.as_dict() for r in rows],
            "total_lag": sum(r.lag for r in rows),
        }
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(render_table(settings.kafka_group_id, group, rows) + "\n")
    return 0


# -- reset ------------------------------------------------------------------------------------


def _describe_target(target: str | datetime) -> str:
    return target if isinstance(target, str) else target.isoformat()


async def _targets(session: _Session, tps: list[TopicPartition], target: str | datetime) -> dict[TopicPartition, int]:
    consumer = session.consumer
    if target == "earliest":
        return dict(await _step("reading the log start offsets", consumer.beginning_offsets(tps)))
    end = await _step("reading the log end offsets", consumer.end_offsets(tps))
    if target == "latest":
        return dict(end)
    assert isinstance(target, datetime)
    millis = int(target.timestamp() * 1000)
    found = await _step("looking up offsets by time", consumer.offsets_for_times({tp: millis for tp in tps}))
    # No record at or after the time: the end (nothing to reprocess in that partition).
    return {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in tps}


def render_plan(group_id: str, target: str | datetime, rows: list[PartitionOffsets], targets: dict[TopicPartition, int]) -> str:
    header = ("TOPIC", "PARTITION", "COMMITTED", "DATABASE", "NEW")
    body = [
        (r.topic, str(r.partition), _cell(r.committed), _cell(r.database), str(targets[TopicPartition(r.topic, r.partition)]))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [f"reset group {group_id} to {_describe_target(target)} (Kafka committed offsets and database positions):"]
    for row in [header, *body]:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)


def _refuse_active(group_id: str, group: GroupState) -> OffsetsError:
    who = ", ".join(group.members) if group.members else "none listed"
    return OffsetsError(
        f"refusing to reset: consumer group {group_id} is {group.state} with {len(group.members)} active member(s) "
        f"({who}); stop every `event-consumer run` of the group first"
    )


async def _confirm(stdin: TextIO, out: TextIO) -> bool:
    out.write("Apply this reset? [y/N] ")
    out.flush()
    answer = await asyncio.to_thread(stdin.readline)
    return answer.strip().lower() in ("y", "yes")


async def reset(
    settings: Settings,
    target: str | datetime,
    topic: str | None,
    yes: bool,
    stdin: TextIO,
    out: TextIO,
    err: TextIO,
) -> int:
    if topic is not None and topic not in settings.kafka_topics:
        err.write(f"event-consumer offsets reset: --topic {topic} is not one of KAFKA_TOPICS ({', '.join(settings.kafka_topics)})\n")
        return EXIT_USAGE
    topics = [topic] if topic else list(settings.kafka_topics)
    group_id = settings.kafka_group_id
    async with _Session(settings, for_commit=True) as session:
        group = await session.group_state()
        if group.active:
            raise _refuse_active(group_id, group)
        tps = await session.partitions(topics)
        rows = await session.status(tps)
        targets = await _targets(session, tps, target)
        out.write(render_plan(group_id, target, rows, targets) + "\n")
        if not yes:
            if not stdin.isatty():
                raise OffsetsError("refusing to reset without confirmation: standard input is not a terminal; pass --yes")
            if not await _confirm(stdin, out):
                err.write("reset cancelled; nothing changed\n")
                return EXIT_FAILURE
            group = await session.group_state()  # a member may have started while we waited
            if group.active:
                raise _refuse_active(group_id, group)
        await _apply(session, targets)
        after = await session.group_state()
    out.write(f"reset group {group_id}: {len(targets)} partition(s) moved in Kafka and in the database\n")
    if after.active:
        err.write(
            f"warning: a member joined group {group_id} while the reset was being applied; check "
            "`event-consumer offsets show` after it settles\n"
        )
    return 0


async def _apply(session: _Session, targets: dict[TopicPartition, int]) -> None:
    """Both sides or neither: the database positions are written in one transaction that commits
    only after Kafka accepted the offsets. Kafka refuses a non-member's commit while the group has
    members, so a consumer that started after our check makes the whole reset roll back."""
    consumer = session.consumer
    tps = sorted(targets)
    consumer.assign(tps)
    consumer.pause(*tps)  # we only commit; no fetching
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S * 3):
            async with session.engine.begin() as conn:
                await lock_positions(conn, session.group_id, tps)
                await save_positions(conn, session.group_id, targets)
                try:
                    await consumer.commit(dict(targets))
                except CommitFailedError:
                    raise OffsetsError(
                        f"Kafka refused the offsets: consumer group {session.group_id} has active members again; "
                        "nothing was changed"
                    ) from None
    except TimeoutError:
        raise OffsetsError("resetting timed out; the database transaction was rolled back (Kafka may have moved: run it again)") from None
    except KafkaError as exc:
        raise OffsetsError(f"Kafka did not accept the offsets ({type(exc).__name__}: {exc}); nothing was changed") from None


# -- entry point ------------------------------------------------------------------------------


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`event-consumer offsets ...`; KafkaError, timeouts and refusals become one line and exit 1."""
    try:
        if args.offsets_command == "show":
            return asyncio.run(show(settings, args.json, sys.stdout))
        if args.offsets_command == "reset":
            return asyncio.run(reset(settings, args.to, args.topic, args.yes, sys.stdin, sys.stdout, sys.stderr))
    except OffsetsError as exc:
        sys.stdout.flush()
        print(f"event-consumer offsets {args.offsets_command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    raise AssertionError(args.offsets_command)
