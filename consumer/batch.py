"""One fetched batch, decoded and sorted into what happens to each record. Pure."""

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition

from handlers.decode import Poison, Tombstone, decode
from handlers.fast_decode import decode_fast
from handlers.native import NativePart


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

    @property
    def partitions(self) -> list[TopicPartition]:
        return sorted(self.next_offsets)


def build_batch(records: Mapping[TopicPartition, Sequence[Record]]) -> Batch:
    batch = Batch()
    for tp in sorted(records):
        add_records(batch, tp, records[tp])
    return batch


def add_records(batch: Batch, tp: TopicPartition, recs: Sequence[Record]) -> None:
    """Decodes `recs` (consecutive records of one partition, in offset order, following any of
    that partition already in the batch) into the batch."""
    if not recs:
        return
    batch.first_offsets.setdefault(tp, recs[0].offset)
    batch.next_offsets[tp] = recs[-1].offset + 1
    batch.size += len(recs)
    events, event_records = batch.events, batch.event_records
    for record in recs:
        decoded = decode_fast(record.value)
        if isinstance(decoded, Tombstone):
            batch.tombstones[record.topic] += 1
        elif isinstance(decoded, Poison):
            batch.poison.append(PoisonRecord(record, decoded))
        else:
            events.append(decoded)
            event_records.append(record)


def native_batch(tps: Sequence[TopicPartition], records: Mapping[TopicPartition, Sequence[Record]], registry: Mapping) -> Batch | None:
    """The part of `records` on `tps`, decoded and prepared on the native path (handlers.native):
    labels and prepared set, events left empty (see ensure_decoded). None when a value the native
    path declined is a valid event after all: the caller prepares the part on the Python path."""
    part = NativePart(registry)
    batch = Batch(sources=[])
    for tp in tps:
        recs = records[tp]
        if not recs:
            continue
        batch.sources.append((tp, recs))  # type: ignore[union-attr]
        batch.first_offsets.setdefault(tp, recs[0].offset)
        batch.next_offsets[tp] = recs[-1].offset + 1
        batch.size += len(recs)
        for i in part.add([record.value for record in recs], tp.topic):
            record = recs[i]
            decoded = decode(record.value)  # pydantic, the authority, for what the native path declined
            if isinstance(decoded, Tombstone):
                batch.tombstones[record.topic] += 1
            elif isinstance(decoded, Poison):
                batch.poison.append(PoisonRecord(record, decoded))
            else:
                return None
    batch.prepared, batch.labels = part.finish()
    return batch


def ensure_decoded(batch: Batch) -> None:
    """Fills in `events` and `event_records` of a native-path batch (the slow isolating path
    needs them one by one); a no-op for a batch prepared on the Python path."""
    if batch.sources is None or batch.events:
        return
    decoded = Batch()
    for tp, recs in batch.sources:
        add_records(decoded, tp, recs)
    batch.events, batch.event_records = decoded.events, decoded.event_records


def dead_letter_headers(item: PoisonRecord) -> list[tuple[str, bytes]]:
    r = item.record
    ours = [
        ("x-error-type", item.poison.error_type),
        ("x-error-message", item.poison.message),
        ("x-original-topic", r.topic),
        ("x-original-partition", str(r.partition)),
        ("x-original-offset", str(r.offset)),
    ]
    ours_names = {name for name, _ in ours}
    kept = [(k, v) for k, v in (r.headers or ()) if k not in ours_names]
    return kept + [(k, v.encode("utf-8")) for k, v in ours]
