"""The counts `run` and `replay` keep of what became of the records they handled (light: the CLI
imports it for replay's arguments)."""

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Tally:
    records: int = 0
    applied: int = 0
    stale: int = 0
    dead_lettered: int = 0
    tombstones: int = 0
    batches: int = 0
    db_retries: int = 0

    def count(self, batch: Any, written: Any) -> None:
        """A consumer.batch.Batch written as consumer.writer.Written says."""
        self.batches += 1
        self.records += batch.size
        self.applied += written.outcomes.applied.total()
        self.stale += written.outcomes.stale.total()
        self.tombstones += sum(batch.tombstones.values())
