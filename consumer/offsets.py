"""The database side of the group's position: next offset per (group, topic, partition),
written in the same transaction as the rows it covers."""

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone

from aiokafka import TopicPartition
from sqlalchemy import DateTime, Integer, String, and_, bindparam, cast, column, func, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from database.models import ConsumerOffset

_table = ConsumerOffset.__table__

_save = insert(_table).from_select(
    ["group_id", "topic", "partition", "next_offset", "updated_at"],
    select(
        bindparam("group_id", type_=String()),
        column("topic"),
        column("partition"),
        column("next_offset"),
        bindparam("now", type_=DateTime(timezone=True)),
    ).select_from(
        func.unnest(
            cast(bindparam("topics"), ARRAY(String())),
            cast(bindparam("partitions"), ARRAY(Integer())),
            cast(bindparam("offsets"), ARRAY(_table.c.next_offset.type)),
        )
        .table_valued("topic", "partition", "next_offset")
        .render_derived(name="batch")
    ),
)
_save = _save.on_conflict_do_update(
    index_elements=[_table.c.group_id, _table.c.topic, _table.c.partition],
    set_={"next_offset": _save.excluded.next_offset, "updated_at": _save.excluded.updated_at},
)


def _select(group_id: str, tps: Iterable[TopicPartition]):
    keys = [(tp.topic, tp.partition) for tp in sorted(tps)]
    return (
        select(_table.c.topic, _table.c.partition, _table.c.next_offset)
        .where(and_(_table.c.group_id == group_id, tuple_(_table.c.topic, _table.c.partition).in_(keys)))
        .order_by(_table.c.topic, _table.c.partition)
    )


async def load_positions(conn: AsyncConnection, group_id: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    tps = list(tps)
    if not tps:
        return {}
    result = await conn.execute(_select(group_id, tps))
    return {TopicPartition(r.topic, r.partition): r.next_offset for r in result}


async def lock_positions(conn: AsyncConnection, group_id: str, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """Like load_positions, but holds the rows until the transaction ends, so two members that
    both believe they own a partition (during a rebalance) apply its records one after the other."""
    tps = list(tps)
    if not tps:
        return {}
    result = await conn.execute(_select(group_id, tps).with_for_update())
    return {TopicPartition(r.topic, r.partition): r.next_offset for r in result}


async def save_positions(conn: AsyncConnection, group_id: str, next_offsets: Mapping[TopicPartition, int]) -> None:
    items = sorted(next_offsets.items())
    await conn.execute(
        _save,
        {
            "group_id": group_id,
            "topics": [tp.topic for tp, _ in items],
            "partitions": [tp.partition for tp, _ in items],
            "offsets": [offset for _, offset in items],
            "now": datetime.now(timezone.utc),
        },
    )
