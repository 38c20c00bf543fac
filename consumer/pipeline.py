"""What `run` and `replay` share between a fetch and its commit: the Preparer (decode, validate,
collapse: native or Python), the BatchWriter (one transaction per part) and the dead-letter
sender, built once for a process."""

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.batch import Preparer
from consumer.dead_letter import DeadLetterSender
from consumer.ports import Producer
from consumer.writer import BatchWriter
from handlers.registry import Contract


@dataclass(frozen=True, slots=True)
class Pipeline:
    preparer: Preparer
    writer: BatchWriter
    dead_letters: DeadLetterSender | None  # None: malformed records are counted, not sent (replay without --dlq)

    @property
    def native(self) -> bool:
        return self.preparer.native is not None


def build_pipeline(
    contract: Contract,
    engine: AsyncEngine | None,
    producer: Producer | None,
    dlq_suffix: str,
    *,
    group_id: str | None,
    native: bool = True,
    writer: BatchWriter | None = None,
    dlq_blocked_after_s: float = 300.0,
    on_dead_letter_failure: Callable[[str], None] | None = None,
) -> Pipeline:
    """`group_id`: the writer fences and stores that group's positions (run); None: neither (replay)."""
    preparer = Preparer(contract, native)
    dead_letters = (
        DeadLetterSender(producer, dlq_suffix, blocked_after_s=dlq_blocked_after_s, on_failure=on_dead_letter_failure)
        if producer is not None
        else None
    )
    if writer is None:
        send = dead_letters.send if dead_letters is not None else None
        writer = BatchWriter(engine, contract, preparer, group_id=group_id, send_dead_letters=send)  # type: ignore[arg-type]
    return Pipeline(preparer, writer, dead_letters)

