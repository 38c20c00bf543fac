"""Publish one user and one order with the typed publishing API.

    eval "$(bash scripts/services.sh env)"       # or set KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPICS, ...
    .venv/bin/python examples/publish_example.py [USER_ID] [ORDER_ID]

Settings come from the environment (and .env) like the consumer's; DATABASE_URL is not needed to
publish. The user goes to the first of KAFKA_TOPICS, the order to the second, each keyed by its id.
Running it again publishes the same versions, which the consumer counts as stale and ignores.
"""

import asyncio
import sys
from datetime import datetime, timezone
from decimal import Decimal
from uuid import uuid4

from consumer.publisher import EventPublisher, load_publisher_settings
from consumer.settings import SettingsError
from handlers.events import OrderCreated, OrderState, UserCreated, UserState


async def main(user_id: int, order_id: int) -> None:
    settings = load_publisher_settings()
    now = datetime.now(timezone.utc)
    user = UserCreated(
        event_type="user.created",
        event_id=uuid4(),
        occurred_at=now,
        version=1,
        data=UserState(id=user_id, email="ada@example.com", name="Ada Lovelace"),
    )
    order = OrderCreated(
        event_type="order.created",
        event_id=uuid4(),
        occurred_at=now,
        version=1,
        data=OrderState(id=order_id, user_id=user_id, total=Decimal("129.90"), status="pending"),
    )
    async with EventPublisher(settings) as publisher:
        for event in (user, order):
            meta = await publisher.publish(event)  # waits for the broker's ack (acks=all)
            print(f"{event.event_type} id={event.data.id} -> {meta.topic}[{meta.partition}]@{meta.offset}")


if __name__ == "__main__":
    ids = [int(arg) for arg in sys.argv[1:3]]
    try:
        asyncio.run(main(*(ids + [1, 1001][len(ids):])))
    except SettingsError as exc:
        sys.exit(f"publish_example: {exc}")
