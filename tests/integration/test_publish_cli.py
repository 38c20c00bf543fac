"""`event-consumer publish`: NDJSON validated line by line, keyed by entity id; --generate."""

import subprocess
import sys

import orjson

from consumer.generate import Generator
from handlers.decode import decode


def _publish(env: dict[str, str], *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "consumer", "publish", *args], env=env, input=stdin, capture_output=True, timeout=120)


async def test_publish_file_sends_valid_lines_and_reports_invalid_ones(kafka, topics, consumer_env, tmp_path):
    gen = Generator(seed=97)
    good = [gen.envelope("user.created", 1, gen.user_state(i)) for i in (11, 12, 13)]
    lines = [
        orjson.dumps(good[0]),
        b'{"event_type": "user.created", "version": 0}',
        orjson.dumps(good[1]),
        b"",  # blank lines are skipped
        b"not json",
        orjson.dumps(good[2] | {"extra": "kept as published"}),
    ]
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = _publish(consumer_env, "--topic", topics.users, str(path))
    assert result.returncode == 1, result.stderr
    stderr = result.stderr.decode()
    assert "line 2: validation_error" in stderr and "line 5: invalid_json" in stderr
    assert "line 1:" not in stderr and "line 3:" not in stderr and "line 6:" not in stderr

    records = await kafka.read_all(topics.users)
    assert sorted(r.key for r in records) == [b"11", b"12", b"13"]
    assert sorted(r.value for r in records) == sorted([lines[0], lines[2], lines[5]])  # bytes as given


async def test_publish_from_stdin_all_valid_exits_0(kafka, topics, consumer_env):
    gen = Generator(seed=101)
    events = [gen.envelope("order.created", 1, gen.order_state(i, 1)) for i in range(1, 6)]
    result = _publish(consumer_env, "--topic", topics.orders, "-", stdin=b"\n".join(orjson.dumps(e) for e in events))
    assert result.returncode == 0, result.stderr
    records = await kafka.read_all(topics.orders)
    assert sorted(int(r.key) for r in records) == [1, 2, 3, 4, 5]


async def test_publish_generate_routes_users_and_orders(kafka, topics, consumer_env):
    result = _publish(consumer_env, "--generate", "500", "--seed", "3")
    assert result.returncode == 0, result.stderr
    users = await kafka.read_all(topics.users)
    orders = await kafka.read_all(topics.orders)
    assert len(users) + len(orders) == 500
    assert users and orders
    assert all(decode(r.value).event_type.startswith("user.") for r in users)
    assert all(decode(r.value).event_type.startswith("order.") for r in orders)
    assert all(r.key == str(decode(r.value).data.id).encode() for r in users + orders)


def test_publish_file_without_topic_exits_2(consumer_env, tmp_path):
    path = tmp_path / "e.ndjson"
    path.write_bytes(b"{}\n")
    result = _publish(consumer_env, str(path))
    assert result.returncode == 2
    assert b"--topic" in result.stderr


async def test_publish_needs_only_kafka_settings(kafka, topics, consumer_env):
    env = {k: v for k, v in consumer_env.items() if k != "DATABASE_URL"}
    result = _publish(env, "--generate", "200", "--seed", "5")
    assert result.returncode == 0, result.stderr
    assert len(await kafka.read_all(topics.users)) + len(await kafka.read_all(topics.orders)) == 200


async def test_the_readmes_example_file_publishes(kafka, topics, consumer_env):
    from tests.unit.test_contract_files import ROOT

    result = _publish(consumer_env, "--topic", topics.users, str(ROOT / "examples" / "events.ndjson"))
    assert result.returncode == 0, result.stderr
    lines = (ROOT / "examples" / "events.ndjson").read_bytes().splitlines()
    assert sorted(r.value for r in await kafka.read_all(topics.users)) == sorted(lines)


def test_a_missing_input_file_exits_2_naming_it(consumer_env, tmp_path):
    missing = tmp_path / "no-such-events.ndjson"
    result = _publish(consumer_env, "--topic", "users", str(missing))
    assert result.returncode == 2
    assert str(missing).encode() in result.stderr and b"database" not in result.stderr


def test_version_names_the_package_and_the_native_path():
    result = subprocess.run([sys.executable, "-m", "consumer", "--version"], capture_output=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.decode().startswith("event-consumer 0.1.0 (native fast path: built)")
