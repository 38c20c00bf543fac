"""The built-in contract's aggregates, for tests that exercise one of them directly."""

from handlers.registry import build_registry

CONTRACT = build_registry()
users = CONTRACT["user.created"]
orders = CONTRACT["order.created"]
