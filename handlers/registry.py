"""event_type -> Aggregate. Checked at start-up: every event type of the contract has exactly one."""

from collections.abc import Iterable, Sequence

from handlers.aggregate import Aggregate
from handlers.events import EVENT_TYPE_NAMES
from handlers.orders import orders
from handlers.users import users


class RegistryError(Exception):
    pass


def build_registry(aggregates: Sequence[Aggregate] = (users, orders)) -> dict[str, Aggregate]:
    registry: dict[str, Aggregate] = {}
    for aggregate in aggregates:
        for event_type in aggregate.event_types:
            if event_type in registry:
                raise RegistryError(f"{event_type} is handled by both {registry[event_type].name} and {aggregate.name}")
            registry[event_type] = aggregate
    missing = EVENT_TYPE_NAMES - registry.keys()
    unknown = registry.keys() - EVENT_TYPE_NAMES
    if missing or unknown:
        raise RegistryError(f"registry does not match the contract: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return registry


def route(registry: dict[str, Aggregate], events: Iterable) -> dict[Aggregate, list]:
    """Groups events by aggregate, keeping offset order within each group."""
    groups: dict[Aggregate, list] = {}
    for event in events:
        groups.setdefault(registry[event.event_type], []).append(event)
    return groups
