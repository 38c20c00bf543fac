"""The contract as the consumer runs it: projections -> event_type -> Aggregate, and the decoder of
exactly those event types. Checked at start-up: every event type has exactly one aggregate, and
the built-in contract is the one handlers.events publishes."""

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Annotated, Union

from pydantic import Field, TypeAdapter

from handlers.aggregate import Aggregate
from handlers.decode import Poison, Tombstone, decode
from handlers.events import EVENT_TYPE_NAMES
from handlers.orders import ORDERS
from handlers.projection import DISCRIMINATOR, Projection
from handlers.users import USERS

PROJECTIONS: tuple[Projection, ...] = (USERS, ORDERS)


class RegistryError(Exception):
    pass


class Contract(Mapping[str, Aggregate]):
    """event_type -> Aggregate for the given projections, with their pydantic decoder."""

    def __init__(self, projections: Sequence[Projection]) -> None:
        self.aggregates: tuple[Aggregate, ...] = tuple(Aggregate(p) for p in projections)
        self._by_type: dict[str, Aggregate] = {}
        models = []
        for aggregate in self.aggregates:
            for event_type, model in aggregate.projection.models.items():
                if event_type in self._by_type:
                    raise RegistryError(f"{event_type} is handled by both {self._by_type[event_type].name} and {aggregate.name}")
                self._by_type[event_type] = aggregate
                models.append(model)
        if not models:
            raise RegistryError("a contract needs at least one event type")
        self.models = {t: m for a in self.aggregates for t, m in a.projection.models.items()}
        union = models[0] if len(models) == 1 else Union[tuple(models)]  # noqa: UP007 - a runtime union of classes
        self.adapter: TypeAdapter = TypeAdapter(Annotated[union, Field(discriminator=DISCRIMINATOR)])
        self.event_type_names = frozenset(self._by_type)

    def __getitem__(self, event_type: str) -> Aggregate:
        return self._by_type[event_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_type)

    def __len__(self) -> int:
        return len(self._by_type)

    def decode(self, value: bytes | None) -> object | Poison | Tombstone:
        """pydantic, the authority: bytes -> an event of this contract, Poison or Tombstone."""
        return decode(value, self.adapter, self.event_type_names)


def build_registry(projections: Sequence[Projection] = PROJECTIONS, expected: Collection[str] | None = EVENT_TYPE_NAMES) -> Contract:
    """The contract of `projections`, checked to cover exactly the `expected` event types (by
    default those handlers.events publishes; None for a contract of other projections)."""
    contract = Contract(projections)
    if expected is not None:
        missing, unknown = set(expected) - contract.keys(), contract.keys() - set(expected)
        if missing or unknown:
            raise RegistryError(f"registry does not match the contract: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return contract


def route(registry: Mapping[str, Aggregate], events) -> dict[Aggregate, list]:
    """Groups events by aggregate, keeping offset order within each group."""
    groups: dict[Aggregate, list] = {}
    for event in events:
        groups.setdefault(registry[event.event_type], []).append(event)
    return groups
