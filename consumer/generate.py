"""Realistic generated user and order events: for `publish --generate`, the tests and bench/.

Each entity gets a version history (created, updates, sometimes a delete/cancel, sometimes a
revival); entities are interleaved at random but every entity's own events stay in version order.
Optionally mixes in exact duplicates and late, older versions with different data."""

import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

FIRST_NAMES = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Edsger", "Frances", "Ken", "Margaret", "Dennis", "Radia", "Tim"]
LAST_NAMES = ["Lovelace", "Turing", "Hopper", "Torvalds", "Liskov", "Dijkstra", "Allen", "Thompson", "Hamilton", "Ritchie"]
STATUSES = ["pending", "paid", "shipped", "delivered"]
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Generator:
    def __init__(self, seed: int = 1, user_id_base: int = 0, order_id_base: int = 0) -> None:
        self.rng = random.Random(seed)
        self.user_id_base = user_id_base
        self.order_id_base = order_id_base
        self.clock = EPOCH

    def _tick(self) -> str:
        self.clock += timedelta(milliseconds=self.rng.randint(1, 2000))
        return self.clock.isoformat()

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def envelope(self, event_type: str, version: int, data: dict) -> dict:
        return {"event_id": self._uuid(), "event_type": event_type, "occurred_at": self._tick(), "version": version, "data": data}

    def user_state(self, user_id: int) -> dict:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        return {
            "id": user_id,
            "email": f"{first.lower()}.{last.lower()}{self.rng.randint(1, 99999)}@example.com",
            "name": f"{first} {last}",
            "is_active": self.rng.random() > 0.1,
        }

    def order_state(self, order_id: int, user_id: int, status: str | None = None) -> dict:
        total = Decimal(self.rng.randint(0, 5_000_000)) / 100
        return {"id": order_id, "user_id": user_id, "total": str(total) if self.rng.random() < 0.5 else float(total), "status": status or self.rng.choice(STATUSES)}

    def user_history(self, user_id: int) -> list[dict]:
        events = [self.envelope("user.created", 1, self.user_state(user_id))]
        version = 1
        for _ in range(self.rng.choice([0, 0, 1, 1, 2, 3])):
            version += 1
            events.append(self.envelope("user.updated", version, self.user_state(user_id)))
        if self.rng.random() < 0.1:
            version += 1
            events.append(self.envelope("user.deleted", version, {"id": user_id}))
            if self.rng.random() < 0.3:
                version += 1
                events.append(self.envelope("user.updated", version, self.user_state(user_id)))
        return events

    def order_history(self, order_id: int, user_id: int) -> list[dict]:
        events = [self.envelope("order.created", 1, self.order_state(order_id, user_id, "pending"))]
        version = 1
        for _ in range(self.rng.choice([0, 1, 1, 2, 3])):
            version += 1
            events.append(self.envelope("order.updated", version, self.order_state(order_id, user_id)))
        if self.rng.random() < 0.1:
            version += 1
            events.append(self.envelope("order.cancelled", version, {"id": order_id}))
        return events

    def stream(self, n: int, duplicates: float = 0.0, older: float = 0.0, user_share: float = 0.3) -> list[dict]:
        """About n events (exactly n), roughly user_share of them about users."""
        histories: list[list[dict]] = []
        count = 0
        users_made = orders_made = 0
        base = max(1, int(n * (1 - duplicates - older)))
        while count < base:
            if self.rng.random() < user_share or users_made == 0:
                users_made += 1
                h = self.user_history(self.user_id_base + users_made)
            else:
                orders_made += 1
                h = self.order_history(self.order_id_base + orders_made, self.user_id_base + self.rng.randint(1, users_made + 5))
            histories.append(h)
            count += len(h)
        events = _interleave(self.rng, histories)[:base]
        out: list[dict] = []
        for event in events:
            out.append(event)
            roll = self.rng.random()
            if roll < duplicates:
                out.append(dict(event))
            elif roll < duplicates + older and event["version"] > 1:
                late = dict(event)
                late["event_id"] = self._uuid()
                late["version"] = self.rng.randint(1, event["version"] - 1)
                late["event_type"] = event["event_type"].split(".")[0] + ".updated"
                if late["event_type"] == "user.updated":
                    late["data"] = self.user_state(event["data"]["id"])
                else:
                    late["data"] = self.order_state(event["data"]["id"], self.rng.randint(1, users_made + 5))
                out.append(late)
        while len(out) < n:
            out.append(dict(self.rng.choice(out)))
        return out[:n]


def _interleave(rng: random.Random, histories: list[list[dict]]) -> list[dict]:
    cursors = [0] * len(histories)
    live = list(range(len(histories)))
    out = []
    while live:
        i = rng.randrange(len(live))
        h = live[i]
        out.append(histories[h][cursors[h]])
        cursors[h] += 1
        if cursors[h] == len(histories[h]):
            live[i] = live[-1]
            live.pop()
    return out


def topic_for(event: dict, users_topic: str = "users", orders_topic: str = "orders") -> str:
    return users_topic if event["event_type"].startswith("user.") else orders_topic
