"""A small pure model of the read model: applies events one by one, in order, with the version
guard. Every integration test compares the database with it, row by row."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from handlers.decode import decode
from handlers.events import OrderCancelled, OrderCreated, OrderUpdated, UserCreated, UserDeleted, UserUpdated


@dataclass
class UserRow:
    id: int
    email: str | None
    name: str | None
    is_active: bool
    version: int
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass
class OrderRow:
    id: int
    user_id: int | None
    total: Decimal | None
    status: str
    version: int
    created_at: datetime
    updated_at: datetime


class ReadModel:
    def __init__(self) -> None:
        self.users: dict[int, UserRow] = {}
        self.orders: dict[int, OrderRow] = {}

    def apply_bytes(self, values: list[bytes | None]) -> None:
        for value in values:
            event = decode(value)
            if isinstance(event, (UserCreated, UserUpdated, UserDeleted, OrderCreated, OrderUpdated, OrderCancelled)):
                self.apply(event)

    def apply(self, event) -> bool:
        table = self.users if event.event_type.startswith("user.") else self.orders
        current = table.get(event.data.id)
        if current is not None and event.version <= current.version:
            return False
        at = event.occurred_at
        created = current.created_at if current else at
        if isinstance(event, (UserCreated, UserUpdated)):
            d = event.data
            table[d.id] = UserRow(d.id, d.email, d.name, d.is_active, event.version, None, created, at)
        elif isinstance(event, UserDeleted):
            email, name = (current.email, current.name) if current else (None, None)
            table[event.data.id] = UserRow(event.data.id, email, name, False, event.version, at, created, at)
        elif isinstance(event, (OrderCreated, OrderUpdated)):
            d = event.data
            table[d.id] = OrderRow(d.id, d.user_id, d.total, d.status, event.version, created, at)
        elif isinstance(event, OrderCancelled):
            user_id, total = (current.user_id, current.total) if current else (None, None)
            table[event.data.id] = OrderRow(event.data.id, user_id, total, "cancelled", event.version, created, at)
        return True


def rows_from_db(records, row_type) -> dict[int, object]:
    return {r.id: row_type(**dict(r._mapping)) for r in records}


def diff(expected: dict, actual: dict, limit: int = 10) -> list[str]:
    problems = []
    for key in sorted(set(expected) | set(actual)):
        e, a = expected.get(key), actual.get(key)
        if e != a:
            problems.append(f"id {key}: expected {e}, got {a}")
            if len(problems) >= limit:
                break
    return problems
