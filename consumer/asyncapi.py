"""The AsyncAPI 3.0 document of the service (`event-consumer asyncapi`; checked in as asyncapi.yaml).

Generated, never hand-written: the payload schemas come from the pydantic models of
handlers/events.py (model_json_schema, validation mode: what the consumer accepts), with their
$defs moved into components/schemas and every $ref pointing there. The topic names and group id
are the settings' defaults, not the environment, so the output is the same everywhere.
"""

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import yaml
from pydantic.json_schema import models_json_schema

from consumer.settings import Settings
from handlers.decode import MAX_ERROR_MESSAGE, Poison, decode
from handlers.events import (
    EVENT_TYPES,
    EntityRef,
    OrderCancelled,
    OrderCreated,
    OrderState,
    OrderUpdated,
    UserCreated,
    UserDeleted,
    UserState,
    UserUpdated,
)

ASYNCAPI_VERSION = "3.0.0"
CONTRACT_VERSION = "1.0.0"  # the version of the event contract described, not of the package
KAFKA_BINDING_VERSION = "0.5.0"
PLACEHOLDER_HOST = "kafka.example.com:9092"
SCHEMA_REF = "#/components/schemas/{model}"

# Every value of the x-error-type header: decode's poison kinds, then the loop's database rejection.
DLQ_ERROR_TYPES = ("not_utf8", "invalid_json", "not_object", "unknown_event_type", "validation_error", "database_error")
DLQ_HEADERS = ("x-error-type", "x-error-message", "x-original-topic", "x-original-partition", "x-original-offset")

SUMMARIES = {
    "user.created": "A user was created. Carries the full user state.",
    "user.updated": "A user changed. Carries the full user state; revives a soft-deleted user.",
    "user.deleted": "A user was deleted (soft delete: is_active=false, deleted_at=occurred_at; the row stays).",
    "order.created": "An order was created. Carries the full order state.",
    "order.updated": "An order changed. Carries the full order state.",
    "order.cancelled": "An order was cancelled (status becomes cancelled; user_id and total stay).",
}

_EXAMPLE_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _example_id(n: int) -> UUID:
    return UUID(f"00000000-0000-4000-8000-{n:012d}")


def _user(name: str) -> UserState:
    return UserState(id=42, email="ada@example.com", name=name)


def _order(status: str) -> OrderState:
    return OrderState(id=1001, user_id=42, total=Decimal("129.90"), status=status)  # type: ignore[arg-type]


EXAMPLES = {
    "user.created": UserCreated(event_type="user.created", event_id=_example_id(1), occurred_at=_EXAMPLE_TIME, version=1, data=_user("Ada")),
    "user.updated": UserUpdated(event_type="user.updated", event_id=_example_id(2), occurred_at=_EXAMPLE_TIME, version=2, data=_user("Ada Lovelace")),
    "user.deleted": UserDeleted(event_type="user.deleted", event_id=_example_id(3), occurred_at=_EXAMPLE_TIME, version=3, data=EntityRef(id=42)),
    "order.created": OrderCreated(event_type="order.created", event_id=_example_id(4), occurred_at=_EXAMPLE_TIME, version=1, data=_order("pending")),
    "order.updated": OrderUpdated(event_type="order.updated", event_id=_example_id(5), occurred_at=_EXAMPLE_TIME, version=2, data=_order("paid")),
    "order.cancelled": OrderCancelled(event_type="order.cancelled", event_id=_example_id(6), occurred_at=_EXAMPLE_TIME, version=3, data=EntityRef(id=1001)),
}
_POISON_EXAMPLE_VALUE = b'{"event_id":"00000000-0000-4000-8000-000000000007","event_type":"user.renamed","occurred_at":"2026-01-01T12:00:00Z","version":4,"data":{"id":42}}'


def event_type_of(model: type) -> str:
    return model.model_fields["event_type"].annotation.__args__[0]  # type: ignore[attr-defined]


def message_id(event_type: str) -> str:
    """user.created -> userCreated"""
    entity, action = event_type.split(".")
    return entity + action.capitalize()


def _defaults() -> tuple[list[str], str, str, str]:
    fields = Settings.model_fields
    topics = list(fields["kafka_topics"].get_default(call_default_factory=True))
    return topics, fields["kafka_dlq_suffix"].default, fields["kafka_group_id"].default, fields["kafka_client_id"].default


def payload_schemas() -> dict[str, Any]:
    """Every event model's JSON Schema plus the models they use, keyed by name, refs to components."""
    _, top = models_json_schema([(model, "validation") for model in EVENT_TYPES], ref_template=SCHEMA_REF)
    return top["$defs"]


def _support_schemas() -> dict[str, Any]:
    return {
        "EntityKey": {
            "type": "string",
            "pattern": "^[1-9][0-9]{0,18}$",
            "description": (
                "The Kafka record key: the entity id (`data.id`) as a decimal string in UTF-8. Producers key "
                "by it so that each entity's events stay in order on one partition; processing takes the id "
                "from the payload."
            ),
            "examples": ["42"],
        },
        "DeadLetterHeaders": {
            "type": "object",
            "description": (
                "Kafka record headers, UTF-8 strings. The original record's headers are kept too, except "
                "any with these names."
            ),
            "required": list(DLQ_HEADERS),
            "properties": {
                "x-error-type": {"type": "string", "enum": list(DLQ_ERROR_TYPES), "description": "Why the record was dead-lettered."},
                "x-error-message": {"type": "string", "maxLength": MAX_ERROR_MESSAGE, "description": "What exactly was wrong."},
                "x-original-topic": {"type": "string", "description": "The topic the record was consumed from."},
                "x-original-partition": {"type": "string", "pattern": "^[0-9]+$", "description": "Its partition, in decimal."},
                "x-original-offset": {"type": "string", "pattern": "^[0-9]+$", "description": "Its offset, in decimal."},
            },
            "additionalProperties": True,
        },
        "OriginalKey": {
            "type": ["string", "null"],
            "format": "binary",
            "description": "The original record key bytes, unchanged (null when the original had no key).",
        },
        "OriginalValue": {
            "type": "string",
            "format": "binary",
            "description": "The original record value bytes, unchanged (they may not be UTF-8 or JSON).",
        },
    }


def _kafka_message_binding(key_schema: str) -> dict[str, Any]:
    return {"kafka": {"key": {"$ref": SCHEMA_REF.format(model=key_schema)}, "bindingVersion": KAFKA_BINDING_VERSION}}


def _event_message(model: type) -> dict[str, Any]:
    event_type = event_type_of(model)
    example = EXAMPLES[event_type]
    return {
        "name": event_type,
        "title": event_type,
        "summary": SUMMARIES[event_type],
        "contentType": "application/json",
        "payload": {"$ref": SCHEMA_REF.format(model=model.__name__)},
        "bindings": _kafka_message_binding("EntityKey"),
        "examples": [{"name": f"{message_id(event_type)}Example", "payload": example.model_dump(mode="json", by_alias=True)}],
    }


def _dead_letter_message(users_topic: str) -> dict[str, Any]:
    poison = decode(_POISON_EXAMPLE_VALUE)
    assert isinstance(poison, Poison)
    return {
        "name": "dead-letter",
        "title": "Dead-lettered record",
        "summary": "A record the consumer cannot apply, with its original key and value bytes unchanged.",
        "description": (
            "Written by the consumer with an idempotent, acks=all producer before the batch's offsets move. "
            "At-least-once: after a crash the same record may be dead-lettered again, so deduplicate by "
            "the x-original-* headers. Tombstones (null values) are skipped, never dead-lettered."
        ),
        "contentType": "application/octet-stream",
        "headers": {"$ref": SCHEMA_REF.format(model="DeadLetterHeaders")},
        "payload": {"$ref": SCHEMA_REF.format(model="OriginalValue")},
        "bindings": _kafka_message_binding("OriginalKey"),
        "examples": [
            {
                "name": "unknownEventType",
                "headers": {
                    "x-error-type": poison.error_type,
                    "x-error-message": poison.message,
                    "x-original-topic": users_topic,
                    "x-original-partition": "0",
                    "x-original-offset": "17",
                },
                "payload": _POISON_EXAMPLE_VALUE.decode(),
            }
        ],
    }


def _channel_id(topic: str) -> str:
    return "".join(part.capitalize() if i else part for i, part in enumerate(topic.replace("-", ".").split(".")))


def build_document() -> dict[str, Any]:
    topics, dlq_suffix, group_id, client_id = _defaults()
    users_topic, orders_topic = topics[0], topics[1] if len(topics) > 1 else topics[0]
    users_dlq, orders_dlq = users_topic + dlq_suffix, orders_topic + dlq_suffix
    user_models = [m for m in EVENT_TYPES if event_type_of(m).startswith("user.")]
    order_models = [m for m in EVENT_TYPES if event_type_of(m).startswith("order.")]

    schemas = payload_schemas()
    support = _support_schemas()
    clash = set(schemas) & set(support)
    assert not clash, f"schema names clash: {sorted(clash)}"
    all_schemas = {name: {**schemas, **support}[name] for name in sorted({**schemas, **support})}

    messages: dict[str, Any] = {message_id(event_type_of(m)): _event_message(m) for m in EVENT_TYPES}
    messages["deadLetter"] = _dead_letter_message(users_topic)

    def event_channel(topic: str, models: list[type], what: str) -> dict[str, Any]:
        return {
            "address": topic,
            "title": topic,
            "description": (
                f"{what} events, keyed by entity id. The topic is the "
                f"{'first' if topic == users_topic else 'second'} of KAFKA_TOPICS (default shown). "
                "The consumer dispatches by event_type, not by topic: any configured topic may carry any "
                "event type, but producers (EventPublisher) send user.* to the users topic and order.* to "
                "the orders topic, as listed here."
            ),
            "messages": {message_id(event_type_of(m)): {"$ref": f"#/components/messages/{message_id(event_type_of(m))}"} for m in models},
        }

    def dlq_channel(topic: str, source: str) -> dict[str, Any]:
        return {
            "address": topic,
            "title": topic,
            "description": f"Dead-letter topic of {source} (source topic + KAFKA_DLQ_SUFFIX, default shown).",
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        }

    channels = {
        _channel_id(users_topic): event_channel(users_topic, user_models, "User"),
        _channel_id(orders_topic): event_channel(orders_topic, order_models, "Order"),
        _channel_id(users_dlq): dlq_channel(users_dlq, users_topic),
        _channel_id(orders_dlq): dlq_channel(orders_dlq, orders_topic),
    }

    consumer_binding = {
        "kafka": {
            "groupId": {"type": "string", "default": group_id, "description": "KAFKA_GROUP_ID"},
            "clientId": {"type": "string", "default": client_id, "description": "KAFKA_CLIENT_ID"},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }

    def receive(channel: str, models: list[type], summary: str) -> dict[str, Any]:
        return {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": summary,
            "description": (
                "Applies each event to the PostgreSQL read model iff its version is greater than the stored "
                "one (one transaction per fetched batch, offsets stored with the data); invalid records go "
                "to the dead-letter topic."
            ),
            "bindings": consumer_binding,
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message_id(event_type_of(m))}"} for m in models],
        }

    def send_dlq(channel: str, source: str) -> dict[str, Any]:
        return {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": f"Dead-letters the records of {source} that can never be applied.",
            "messages": [{"$ref": f"#/channels/{channel}/messages/deadLetter"}],
        }

    users_ch, orders_ch = _channel_id(users_topic), _channel_id(orders_topic)
    users_dlq_ch, orders_dlq_ch = _channel_id(users_dlq), _channel_id(orders_dlq)
    operations = {
        "receiveUserEvents": receive(users_ch, user_models, "Consumes user events into the users table."),
        "receiveOrderEvents": receive(orders_ch, order_models, "Consumes order events into the orders table."),
        "sendUserDeadLetters": send_dlq(users_dlq_ch, users_topic),
        "sendOrderDeadLetters": send_dlq(orders_dlq_ch, orders_topic),
    }

    document = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "event-consumer",
            "version": CONTRACT_VERSION,
            "description": (
                "Reads user and order events from Apache Kafka and keeps a PostgreSQL read model: "
                "version-guarded upserts, one transaction per fetched batch, poison records to a "
                "dead-letter topic with their original bytes.\n\n"
                "Each record value is a UTF-8 JSON envelope (event_id, event_type, occurred_at with an "
                "offset, version >= 1, data); the record key is the entity id as a decimal string. "
                "Extra fields are ignored.\n\n"
                "Generated by `event-consumer asyncapi` from handlers/events.py; do not edit by hand.\n"
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": PLACEHOLDER_HOST,
                "protocol": "kafka",
                "description": (
                    "Placeholder: the brokers are KAFKA_BOOTSTRAP_SERVERS; the security protocol is "
                    "KAFKA_SECURITY_PROTOCOL (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)."
                ),
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": all_schemas, "messages": messages},
    }
    # Through JSON: plain, unshared containers (no YAML anchors) and proof the document is JSON.
    return json.loads(json.dumps(document))


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)

HEADER = "# Generated by `event-consumer asyncapi --output asyncapi.yaml` from handlers/events.py. Do not edit.\n"


def render_asyncapi() -> str:
    """The document as YAML, byte-for-byte deterministic (insertion order, no anchors)."""
    body = yaml.dump(
        build_document(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return HEADER + body
