"""The textbook consumer most tutorials show, made correct with a per-message version guard:

    async for each message (getone):
        event = validate(message)                  # same pydantic contract (handlers.decode)
        async with AsyncSession() as session:      # one session per message
            row = await session.get(Model, id)     # SELECT the row
            if row is None or event.version > row.version:
                await session.merge(new_row)       # ORM upsert
            await session.commit()
        await consumer.commit()                    # Kafka offset, per message

Run by bench.run as a child process until it has committed every record or is stopped (SIGTERM).
Malformed records are logged and skipped (no dead-letter topic): tutorials do that.

    python -m bench.naive --bootstrap B --topics users,orders --group G --database-url URL --total N
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from database.models import Order, User
from handlers.decode import Poison, Tombstone, decode
from handlers.events import OrderCancelled, OrderCreated, OrderUpdated, UserCreated, UserDeleted, UserUpdated


async def apply_one(session, event) -> bool:
    """The version-guarded ORM upsert of one event. Returns whether it applied."""
    model = User if event.event_type.startswith("user.") else Order
    current = await session.get(model, event.data.id)
    if current is not None and event.version <= current.version:
        return False
    at = event.occurred_at
    created = current.created_at if current is not None else at
    if isinstance(event, (UserCreated, UserUpdated)):
        d = event.data
        row = User(id=d.id, email=d.email, name=d.name, is_active=d.is_active, version=event.version,
                   deleted_at=None, created_at=created, updated_at=at)
    elif isinstance(event, UserDeleted):
        row = User(id=event.data.id, email=current.email if current else None, name=current.name if current else None,
                   is_active=False, version=event.version, deleted_at=at, created_at=created, updated_at=at)
    elif isinstance(event, (OrderCreated, OrderUpdated)):
        d = event.data
        row = Order(id=d.id, user_id=d.user_id, total=d.total, status=d.status, version=event.version,
                    created_at=created, updated_at=at)
    elif isinstance(event, OrderCancelled):
        row = Order(id=event.data.id, user_id=current.user_id if current else None, total=current.total if current else None,
                    status="cancelled", version=event.version, created_at=created, updated_at=at)
    else:  # pragma: no cover - the contract has no other type
        raise AssertionError(event.event_type)
    await session.merge(row)
    return True


async def main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    engine = create_async_engine(args.database_url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    consumer = AIOKafkaConsumer(
        *args.topics.split(","),
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    processed = applied = skipped = 0
    first_at = None
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while processed < args.total and not stop.is_set():
            getter = asyncio.ensure_future(consumer.getone())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            msg = getter.result()
            if first_at is None:
                first_at = time.monotonic()
            event = decode(msg.value)
            if isinstance(event, (Poison, Tombstone)):
                skipped += 1
            else:
                async with sessions() as session:
                    applied += await apply_one(session, event)
                    await session.commit()
            await consumer.commit({TopicPartition(msg.topic, msg.partition): msg.offset + 1})
            processed += 1
    finally:
        stopper.cancel()
        await consumer.stop()
        await engine.dispose()
    seconds = time.monotonic() - first_at if first_at else 0.0
    from bench.common import self_hwm_bytes

    sys.stdout.write(orjson.dumps({"processed": processed, "applied": applied, "skipped": skipped,
                                   "seconds_since_first_record": round(seconds, 3),
                                   "hwm_bytes": self_hwm_bytes()}).decode() + "\n")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--total", type=int, required=True, help="stop after this many records")
    sys.exit(asyncio.run(main(parser.parse_args())))
