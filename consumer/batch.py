"""One fetched batch, decoded and sorted into what happens to each record, and prepared for its write. Pure."""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition

import structlog

from handlers.apply import PreparedEvents, prepare_events
from handlers.decode import Poison, Tombstone
from handlers.native import native_path
from handlers.registry import Contract

log = structlog.get_logger("consumer.batch")


class Record(Protocol):
    """What the loop needs of a Kafka record (aiokafka's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(slots=True)
class PoisonRecord:
    record: Record
    poison: Poison
    acked: bool = False  # the DLQ acknowledged it (a retry does not send it again)


@dataclass(slots=True)
class Batch:
    events: list[Any] = field(default_factory=list)  # decoded events, offset order per partition
    event_records: list[Record] = field(default_factory=list)  # the record each event came from
    poison: list[PoisonRecord] = field(default_factory=list)
    tombstones: Counter = field(default_factory=Counter)  # per topic
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)  # last offset + 1
    size: int = 0
    labels: list[tuple[str, str]] = field(default_factory=list)  # (topic, event_type) per event, set by the loop
    prepared: Any = None  # handlers.apply.PreparedEvents of `events`, set by the loop
    # native path: the part's records per partition; `events` stays empty until ensure_decoded()
    sources: list[tuple[TopicPartition, Sequence[Record]]] | None = None

    fallbacks: Counter = field(default_factory=Counter)  # records off the native path, per reason
    last_timestamps: dict[TopicPartition, int | None] = field(default_factory=dict)  # ms, of each partition's last record

    @property
    def partitions(self) -> list[TopicPartition]:
        return sorted(self.next_offsets)

    def note_range(self, tp: TopicPartition, recs: Sequence[Record]) -> None:
        self.first_offsets.setdefault(tp, recs[0].offset)
        self.next_offsets[tp] = recs[-1].offset + 1
        self.last_timestamps[tp] = getattr(recs[-1], "timestamp", None)
        self.size += len(recs)

    def sort_out(self, record: Record, decoded: object) -> bool:
        """Counts a tombstone, keeps a poison record; True for an event."""
        if isinstance(decoded, Tombstone):
            self.tombstones[record.topic] += 1
            return False
        if isinstance(decoded, Poison):
            self.poison.append(PoisonRecord(record, decoded))
            return False
        return True


class Preparer:
    """Turns one fetched batch into parts that write themselves (pure, runs in a worker thread):
    the native path for every aggregate it covers, pydantic and the Python row builders for the
    rest; a record the native checks decline is decided by pydantic and, when valid, put back in
    its slot. Every record that leaves the native path is counted by reason in `Batch.fallbacks`."""

    def __init__(self, contract: Contract, native: bool = True) -> None:
        self.contract = contract
        self.native, self.native_unavailable = native_path(contract) if native else (None, "turned off")
        self.python_only: dict[str, str] = dict(self.native.description.unsupported) if self.native else {}

    def prepare(self, records: Mapping[TopicPartition, Sequence[Record]], writers: int = 1) -> list["Batch"]:
        """One part per writer (disjoint partitions)."""
        sizes = {tp: len(recs) for tp, recs in records.items() if recs}
        return [self.prepare_part(tps, records) for tps in deal_partitions(sizes, writers)]

    def prepare_part(self, tps: Sequence[TopicPartition], records: Mapping[TopicPartition, Sequence[Record]]) -> "Batch":
        if self.native is not None:
            try:
                return self._native_part(tps, records)
            except BaseException as exc:  # pyo3's PanicException is a BaseException
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                reason = "panic" if type(exc).__name__ == "PanicException" else "error"
                log.error("native fast path failed; this part takes the Python path", reason=reason, error=f"{type(exc).__name__}: {exc}"[:500])
                return self._python_part(tps, records, reason)
        return self._python_part(tps, records, "unavailable")

    def _native_part(self, tps: Sequence[TopicPartition], records: Mapping[TopicPartition, Sequence[Record]]) -> "Batch":
        part = self.native.part()  # type: ignore[union-attr]
        batch = Batch(sources=[])
        python_events: list = []
        python_labels: list = []
        base = 0
        for tp in tps:
            recs = records[tp]
            if not recs:
                continue
            batch.note_range(tp, recs)
            batch.sources.append((tp, recs))  # type: ignore[union-attr]
            for slot, reason in part.add([record.value for record in recs], tp.topic):
                record = recs[slot - base]
                decoded = self.contract.decode(record.value)
                if not batch.sort_out(record, decoded):
                    continue
                if part.fill(slot, decoded):
                    batch.fallbacks[reason] += 1
                else:  # its aggregate is not on the native path
                    batch.fallbacks["unsupported"] += 1
                    python_events.append(decoded)
                    python_labels.append((record.topic, decoded.event_type))
            base += len(recs)
        parts = part.finish()
        if python_events:
            parts += prepare_events(self.contract, python_events, python_labels).parts
        batch.prepared = PreparedEvents(parts)
        batch.labels = [label for _, labels in parts for label in labels]
        return batch

    def _python_part(self, tps: Sequence[TopicPartition], records: Mapping[TopicPartition, Sequence[Record]], reason: str) -> "Batch":
        batch = Batch()
        for tp in tps:
            add_records(batch, tp, records[tp], self.contract)
        batch.labels = [(record.topic, event.event_type) for event, record in zip(batch.events, batch.event_records)]
        batch.prepared = prepare_events(self.contract, batch.events, batch.labels)
        if batch.events:
            batch.fallbacks[reason] += len(batch.events)
        return batch

    def ensure_decoded(self, batch: "Batch") -> None:
        """Fills in `events` and `event_records` of a native-path batch (the slow isolating path
        needs them one by one); a no-op for a batch prepared on the Python path."""
        if batch.sources is None or batch.events:
            return
        decoded = Batch()
        for tp, recs in batch.sources:
            add_records(decoded, tp, recs, self.contract)
        batch.events, batch.event_records = decoded.events, decoded.event_records


def add_records(batch: "Batch", tp: TopicPartition, recs: Sequence[Record], contract: Contract) -> None:
    """Decodes `recs` (consecutive records of one partition, in offset order, following any of
    that partition already in the batch) with pydantic into the batch."""
    if not recs:
        return
    batch.note_range(tp, recs)
    for record in recs:
        decoded = contract.decode(record.value)
        if batch.sort_out(record, decoded):
            batch.events.append(decoded)
            batch.event_records.append(record)


def deal_partitions(sizes: Mapping[TopicPartition, int], parts: int) -> list[list[TopicPartition]]:
    """Deals the partitions of a fetch to at most `parts` writers: the biggest first, each to the
    writer with the fewest records so far. Each writer's list is sorted."""
    groups: list[list[TopicPartition]] = [[] for _ in range(max(1, min(parts, len(sizes))))]
    loads = [0] * len(groups)
    for tp in sorted(sizes, key=lambda tp: (-sizes[tp], tp)):
        i = loads.index(min(loads))
        groups[i].append(tp)
        loads[i] += sizes[tp]
    return [sorted(group) for group in groups if group]


def dead_letter_headers(item: PoisonRecord, error_type: str | None = None, message: str | None = None) -> list[tuple[str, bytes]]:
    r = item.record
    ours = [
        ("x-error-type", error_type or item.poison.error_type),
        ("x-error-message", (message or item.poison.message)[:1000]),
        ("x-original-topic", r.topic),
        ("x-original-partition", str(r.partition)),
        ("x-original-offset", str(r.offset)),
    ]
    ours_names = {name for name, _ in ours}
    kept = [(k, v) for k, v in (r.headers or ()) if k not in ours_names]
    return kept + [(k, v.encode("utf-8")) for k, v in ours]
