"""What the read model does with an aggregate's events, declared once.

A Projection names the table, the event models that carry an entity's full state and those that
patch its row (a delete, a cancel), and where each column's value comes from. Everything else is
derived from it and the pydantic models: the Python row builders and upserts (handlers.aggregate),
the native path's descriptor (handlers.native), routing, the JSON Schema and AsyncAPI documents.

    USERS = Projection(
        table=User.__table__,
        full=(UserCreated, UserUpdated),
        patch=(UserDeleted,),
        columns={
            # column       full state          patch
            "id":          (data("id"),         data("id")),
            "email":       (data("email"),      on_insert(NULL)),
            "deleted_at":  (NULL,               OCCURRED_AT),
            ...
        },
    )

Full-state rows replace every column but the key and the insert-only ones; patch rows update the
columns their source sets and, when the entity is absent, insert a placeholder row that remembers
the version (`on_insert` values appear only then). Both are version-guarded."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Table

DATA_FIELD = "data"  # the envelope's field holding the entity's state
KEY_FIELD = "id"  # the entity id within `data`: the table's primary key
DISCRIMINATOR = "event_type"


@dataclass(frozen=True, slots=True)
class Data:
    """A field of the event's `data`."""

    field: str

    def value(self, change: Any, event: Any) -> Any:
        return getattr(event.data, self.field)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A field of the envelope (`version`, `occurred_at`)."""

    field: str

    def value(self, change: Any, event: Any) -> Any:
        return getattr(event, self.field)


@dataclass(frozen=True, slots=True)
class FirstOccurredAt:
    """`occurred_at` of the first event of the entity that the batch applies: when a new row was
    created. Insert-only."""

    def value(self, change: Any, event: Any) -> Any:
        return change.first_occurred_at


@dataclass(frozen=True, slots=True)
class Const:
    value_: Any

    def value(self, change: Any, event: Any) -> Any:
        return self.value_


@dataclass(frozen=True, slots=True)
class OnInsert:
    """Only when the row is new (a placeholder); an existing row keeps its value."""

    source: Any

    def value(self, change: Any, event: Any) -> Any:
        return self.source.value(change, event)


Source = Data | Envelope | FirstOccurredAt | Const | OnInsert


def data(field: str) -> Data:
    return Data(field)


def const(value: Any) -> Const:
    return Const(value)


def on_insert(source: Source) -> OnInsert:
    return OnInsert(source)


VERSION = Envelope("version")
OCCURRED_AT = Envelope("occurred_at")
FIRST_OCCURRED_AT = FirstOccurredAt()
NULL = Const(None)
ENTITY_ID = Data(KEY_FIELD)


class ProjectionError(ValueError):
    """A projection that cannot work (named column or field missing, ...): found at start-up."""


def event_type_of(model: type[BaseModel]) -> str:
    annotation = model.model_fields[DISCRIMINATOR].annotation
    (name,) = annotation.__args__  # type: ignore[union-attr]
    return name


def _inserts_only(source: Source) -> bool:
    return isinstance(source, (OnInsert, FirstOccurredAt))


@dataclass(frozen=True)
class Projection:
    table: Table
    full: Sequence[type[BaseModel]]
    columns: Mapping[str, Source | tuple[Source, Source]]
    patch: Sequence[type[BaseModel]] = ()
    description: str = ""

    def __post_init__(self) -> None:
        name = self.table.name
        table_columns = [c.name for c in self.table.columns]
        if sorted(self.columns) != sorted(table_columns):
            raise ProjectionError(f"{name}: the projection's columns {sorted(self.columns)} are not the columns of the table {sorted(table_columns)}")
        (key,) = [c.name for c in self.table.primary_key.columns]
        for kind, models in (("full", self.full), ("patch", self.patch)):
            for column, source in self.sources(kind).items():
                for model in models:
                    self._check_source(model, column, source)
            if models and self.sources(kind)[key] != ENTITY_ID:
                raise ProjectionError(f"{name}: the key column {key!r} must come from {DATA_FIELD}.{KEY_FIELD}")

    def _check_source(self, model: type[BaseModel], column: str, source: Source) -> None:
        inner = source.source if isinstance(source, OnInsert) else source
        if isinstance(inner, Data):
            state = model.model_fields[DATA_FIELD].annotation
            if inner.field not in state.model_fields:  # type: ignore[union-attr]
                raise ProjectionError(f"{self.table.name}.{column}: {event_type_of(model)} has no {DATA_FIELD}.{inner.field}")
        elif isinstance(inner, Envelope) and inner.field not in model.model_fields:
            raise ProjectionError(f"{self.table.name}.{column}: {event_type_of(model)} has no {inner.field}")
        elif not isinstance(inner, (Data, Envelope, FirstOccurredAt, Const)):
            raise ProjectionError(f"{self.table.name}.{column}: {source!r} is not a source")

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def key(self) -> str:
        return next(iter(self.table.primary_key.columns)).name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.table.columns)

    def sources(self, kind: str) -> dict[str, Source]:
        """column -> source for full-state ("full") or patch ("patch") rows, in table order."""
        index = 0 if kind == "full" else 1
        out = {}
        for column in self.column_names:
            source = self.columns[column]
            out[column] = source[index] if isinstance(source, tuple) else source
        return out

    def updates(self, kind: str) -> tuple[str, ...]:
        """The columns a full-state or patch row sets on an existing row."""
        return tuple(c for c, s in self.sources(kind).items() if c != self.key and not _inserts_only(s))

    @property
    def full_event_types(self) -> frozenset[str]:
        return frozenset(event_type_of(m) for m in self.full)

    @property
    def models(self) -> dict[str, type[BaseModel]]:
        return {event_type_of(m): m for m in (*self.full, *self.patch)}
