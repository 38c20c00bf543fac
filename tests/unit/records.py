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
