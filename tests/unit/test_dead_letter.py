"""consumer.dead_letter.DeadLetterSender with a fake producer: acks remembered across retries, a
record the DLQ can never take sent header-only, failures counted, and `blocked()` after the limit."""

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, TopicAuthorizationFailedError

from consumer.batch import PoisonRecord
from consumer.dead_letter import DeadLetterSender
from handlers.decode import Poison
from tests.unit.records import Rec


class Producer:
    """send() fails as `refuse(value)` says: an exception raised at once ("client"), set on the
    future ("broker"), or None (acked)."""

    def __init__(self, refuse=lambda value, attempt: None) -> None:
        self.refuse = refuse
        self.sent: list[dict] = []

    async def send(self, topic, value=None, key=None, headers=None):
        attempt = sum(1 for s in self.sent if s["value"] == value)
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": dict(headers or [])})
        where, error = self.refuse(value, attempt) or (None, None)
        if where == "client":
            raise error
        future = asyncio.get_running_loop().create_future()
        future.set_exception(error) if where == "broker" else future.set_result(None)
        return future


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def poison(offset: int, value: bytes) -> PoisonRecord:
    return PoisonRecord(Rec("users", 2, offset, b"k", value, (("trace", b"t1"),)), Poison("invalid_json", "value is not valid JSON"))


async def test_a_retry_sends_only_what_was_not_acknowledged():
    failures: list[str] = []
    producer = Producer(lambda value, attempt: ("broker", KafkaConnectionError()) if value == b"b" and attempt == 0 else None)
    sender = DeadLetterSender(producer, ".dlq", on_failure=failures.append)
    items = [poison(1, b"a"), poison(2, b"b"), poison(3, b"c")]
    with pytest.raises(KafkaConnectionError):
        await sender.send(items)
    await sender.send(items)
    assert [s["value"] for s in producer.sent] == [b"a", b"b", b"c", b"b"]
    assert all(item.acked for item in items) and failures == ["KafkaConnectionError"]
    await sender.send(items)  # nothing left to send
    assert len(producer.sent) == 4


@pytest.mark.parametrize("where", ["client", "broker"])
async def test_a_record_the_dlq_can_never_take_lands_header_only(where):
    failures: list[str] = []
    big = b"x" * 5000
    producer = Producer(lambda value, attempt: (where, MessageSizeTooLargeError()) if value == big else None)
    sender = DeadLetterSender(producer, ".dlq", on_failure=failures.append)
    items = [poison(7, big), poison(8, b"small")]
    await sender.send(items)
    header_only = [s for s in producer.sent if s["value"] is None]
    assert len(header_only) == 1
    headers = header_only[0]["headers"]
    assert headers["x-error-type"] == b"dead_letter_too_large"
    assert headers["x-error-message"].startswith(b"invalid_json: value is not valid JSON")
    assert headers["x-original-size"] == b"5000" and headers["x-original-offset"] == b"7" and headers["x-original-partition"] == b"2"
    assert headers["x-original-topic"] == b"users" and headers["trace"] == b"t1" and header_only[0]["key"] == b"k"
    # refused in a batch by the broker, it is tried once more alone before it goes header-only
    assert [s["value"] for s in producer.sent if s["value"] is not None] == ([big, b"small", big] if where == "broker" else [big, b"small"])
    assert failures == ["dead_letter_too_large"] and all(item.acked for item in items)
    assert sender.blocked() is None


async def test_blocked_after_failing_for_the_limit_and_cleared_by_a_success():
    clock = Clock()
    refusing = [True]
    producer = Producer(lambda value, attempt: ("broker", TopicAuthorizationFailedError()) if refusing[0] else None)
    sender = DeadLetterSender(producer, ".dlq", blocked_after_s=300, clock=clock)
    items = [poison(1, b"a")]
    for _ in range(3):
        with pytest.raises(TopicAuthorizationFailedError):
            await sender.send(items)
        clock.now += 99
    assert sender.blocked() is None  # failing since 297 s
    clock.now += 3
    assert "TopicAuthorizationFailedError" in (sender.blocked() or "")
    refusing[0] = False
    await sender.send(items)
    assert sender.blocked() is None and items[0].acked
