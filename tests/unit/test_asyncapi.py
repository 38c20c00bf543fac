"""asyncapi.yaml: current with the code, AsyncAPI 3.0.0, one message per event type, every $ref
resolving inside the document, DLQ headers as the loop writes them. Pure: no Kafka, no database."""

import inspect
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

import consumer.writer
from consumer.asyncapi import DLQ_ERROR_TYPES, DLQ_HEADERS, SCHEMA_REF, build_document, render_asyncapi
from consumer.batch import PoisonRecord, dead_letter_headers
from consumer.cli import main
from handlers.decode import Poison, decode
from handlers.events import EVENT_TYPE_NAMES, EVENT_TYPES, event_adapter

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI_FILE = ROOT / "asyncapi.yaml"
REGENERATE = "run `event-consumer asyncapi --output asyncapi.yaml` and commit the result"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    assert ASYNCAPI_FILE.is_file(), f"asyncapi.yaml is missing: {REGENERATE}"
    return yaml.safe_load(ASYNCAPI_FILE.read_text(encoding="utf-8"))


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} does not point inside the document"
    node: Any = document
    for raw in ref[2:].split("/"):
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


def walk_refs(node: Any, path: str = "#") -> list[tuple[str, str]]:
    """(where, $ref) for every $ref in the document."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.append((path, value))
            else:
                found.extend(walk_refs(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(walk_refs(value, f"{path}/{i}"))
    return found


def event_messages(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """event type -> message, for the messages whose name is an event type."""
    return {m["name"]: m for m in doc["components"]["messages"].values() if m["name"] in EVENT_TYPE_NAMES}


def test_file_is_current() -> None:
    assert ASYNCAPI_FILE.is_file(), f"asyncapi.yaml is missing: {REGENERATE}"
    assert ASYNCAPI_FILE.read_text(encoding="utf-8") == render_asyncapi(), f"asyncapi.yaml is stale: {REGENERATE}"


def test_cli_prints_and_writes_the_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["asyncapi"]) == 0
    assert capsys.readouterr().out == render_asyncapi()
    out = tmp_path / "asyncapi.yaml"
    assert main(["asyncapi", "--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_asyncapi()
    assert capsys.readouterr().out == ""


def test_rendering_is_deterministic_and_plain_yaml() -> None:
    text = render_asyncapi()
    assert text == render_asyncapi()
    assert not re.search(r"[&*]id\d+", text), "no YAML anchors/aliases"
    assert yaml.safe_load(text) == build_document()


def test_declares_asyncapi_3_0_0(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert [s["protocol"] for s in doc["servers"].values()] == ["kafka"]


def test_every_ref_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    refs = walk_refs(doc)
    assert len(refs) > 20
    for where, ref in refs:
        assert isinstance(ref, str) and ref.startswith("#/"), f"{where}: {ref!r} is not a local reference"
        resolve(doc, ref)
    assert "$defs" not in ASYNCAPI_FILE.read_text(encoding="utf-8"), "$defs must live in components/schemas"


def test_every_event_type_has_a_message(doc: dict[str, Any]) -> None:
    messages = event_messages(doc)
    assert set(messages) == EVENT_TYPE_NAMES
    for event_type, message in messages.items():
        payload = resolve(doc, message["payload"]["$ref"])
        assert payload["properties"]["event_type"]["const"] == event_type
        assert {"event_id", "event_type", "occurred_at", "version", "data"} <= set(payload["required"])
        assert message["contentType"] == "application/json"
        key = resolve(doc, message["bindings"]["kafka"]["key"]["$ref"])
        assert key["type"] == "string"
        for example in message["examples"]:
            event = event_adapter.validate_python(example["payload"])
            assert event.event_type == event_type
            assert re.fullmatch(key["pattern"], str(event.data.id))


def test_payload_schemas_are_the_pydantic_models(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for model in EVENT_TYPES:
        generated = model.model_json_schema(ref_template=SCHEMA_REF)
        defs = generated.pop("$defs", {})
        assert schemas[model.__name__] == generated
        for name, definition in defs.items():
            assert schemas[name] == definition


def test_channels_and_operations(doc: dict[str, Any]) -> None:
    addresses = {name: channel["address"] for name, channel in doc["channels"].items()}
    assert sorted(addresses.values()) == ["orders", "orders.dlq", "users", "users.dlq"]
    actions = {}
    for op_id, op in doc["operations"].items():
        channel_ref = op["channel"]["$ref"]
        address = resolve(doc, channel_ref)["address"]
        actions[address] = op["action"]
        for message in op["messages"]:  # AsyncAPI 3: an operation's messages are its channel's
            assert message["$ref"].startswith(channel_ref + "/messages/"), f"{op_id}: {message['$ref']}"
    assert actions == {"users": "receive", "orders": "receive", "users.dlq": "send", "orders.dlq": "send"}
    users = {resolve(doc, m["$ref"])["name"] for m in doc["channels"]["users"]["messages"].values()}
    orders = {resolve(doc, m["$ref"])["name"] for m in doc["channels"]["orders"]["messages"].values()}
    assert users == {t for t in EVENT_TYPE_NAMES if t.startswith("user.")}
    assert orders == {t for t in EVENT_TYPE_NAMES if t.startswith("order.")}


POISON_SAMPLES = {
    "not_utf8": b"\xff\xfe",
    "invalid_json": b'{"event_type": ',
    "not_object": b"[1, 2, 3]",
    "unknown_event_type": b'{"event_type": "user.renamed"}',
    "validation_error": b'{"event_type": "user.created", "version": 0}',
}


def test_dead_letter_message_matches_what_the_loop_writes(doc: dict[str, Any]) -> None:
    (dead_letter,) = [m for m in doc["components"]["messages"].values() if m["name"] not in EVENT_TYPE_NAMES]
    headers = resolve(doc, dead_letter["headers"]["$ref"])
    assert headers["required"] == list(DLQ_HEADERS)
    assert headers["properties"]["x-error-type"]["enum"] == list(DLQ_ERROR_TYPES)
    payload = resolve(doc, dead_letter["payload"]["$ref"])
    assert payload["format"] == "binary"

    # Every kind decode() reports, plus the database rejection of the loop, is in the enum ...
    for error_type, value in POISON_SAMPLES.items():
        poison = decode(value)
        assert isinstance(poison, Poison) and poison.error_type == error_type
    assert set(POISON_SAMPLES) | {"database_error"} == set(DLQ_ERROR_TYPES)
    assert 'Poison("database_error"' in inspect.getsource(consumer.writer)

    # ... and the loop's headers are exactly the documented ones, valid per their patterns.
    record = SimpleNamespace(topic="users", partition=2, offset=17, key=b"42", value=b"[]", headers=[("trace", b"x")])
    written = dict(dead_letter_headers(PoisonRecord(record, decode(b"[]"))))  # type: ignore[arg-type]
    assert set(written) - {"trace"} == set(DLQ_HEADERS)
    for name, value in written.items():
        if name in DLQ_HEADERS:
            spec = headers["properties"][name]
            text = value.decode("utf-8")
            if "pattern" in spec:
                assert re.fullmatch(spec["pattern"], text)
            if "enum" in spec:
                assert text in spec["enum"]
