"""A stand-in for aiokafka's ConsumerRecord with just what the loop reads."""

from dataclasses import dataclass


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple = ()
    timestamp: int | None = None  # ms, as aiokafka gives it


class FunctionWriter:
    """Stands in for consumer.writer.BatchWriter: `fn(loop, batch, dead_letters)` does the write and
    returns a Counter of totals ("applied", "stale") and/or labelled counts (("applied", label))."""

    def __init__(self, fn, loop=None) -> None:
        self.fn = fn
        self.loop = loop  # set once the loop is built

    async def write(self, batch, dead_letters=None, send_dead_letters=None):
        from consumer.writer import Written
        from handlers.apply import Outcomes

        counts = await self.fn(self.loop, batch, dead_letters)
        outcomes = Outcomes()
        for kind in ("applied", "stale"):
            labelled = {key[1]: n for key, n in counts.items() if isinstance(key, tuple) and key[0] == kind}
            getattr(outcomes, kind).update(labelled or ({("fake", "unlabelled"): counts[kind]} if counts.get(kind) else {}))
        return Written(outcomes)
