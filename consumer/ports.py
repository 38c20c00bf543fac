"""The narrow faces of the Kafka clients that the loop uses, so its logic can be unit-tested
with fakes. aiokafka's AIOKafkaConsumer and AIOKafkaProducer satisfy them."""

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import TopicPartition


class GroupConsumer(Protocol):
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    async def committed(self, partition: TopicPartition) -> int | None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...


class Producer(Protocol):
    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> "asyncio.Future[Any]": ...
