"""`event-consumer check` and Kafka over SASL_PLAINTEXT/SCRAM against the local broker's SASL
listener (scripts/services.sh: 127.0.0.1:9094, user ec-test)."""

import os
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from sqlalchemy.engine import make_url

from consumer.generate import Generator, topic_for
from tests.integration.harness import assert_matches_model, envelope_messages, kcat_publish, wait_db_positions
from tests.model import ReadModel

SASL_USER = os.environ.get("EC_KAFKA_SASL_USER", "ec-test")
SASL_PASSWORD = os.environ.get("EC_KAFKA_SASL_PASSWORD", "ec-test-secret")


def cli(env: dict[str, str], cwd, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        env=env, cwd=str(cwd), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def sasl_bootstrap() -> str:
    bootstrap = os.environ.get("EC_KAFKA_SASL_BOOTSTRAP")
    if not bootstrap:
        pytest.fail(
            "EC_KAFKA_SASL_BOOTSTRAP is not set: the SASL tests need the local broker's SASL_PLAINTEXT listener "
            '(eval "$(bash scripts/services.sh env)")',
            pytrace=False,
        )
    return bootstrap


def sasl_env(bootstrap: str, password: str, mechanism: str = "SCRAM-SHA-256") -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": SASL_USER,
        "KAFKA_SASL_PASSWORD": password,
    }


def test_check_passes_and_masks_the_database_password(consumer_env, topics, database_url, tmp_path):
    dummy = "dummy-pw-" + uuid.uuid4().hex[:8]  # the local server uses trust auth: any password works
    url = make_url(database_url).set(password=dummy).render_as_string(hide_password=False)
    env = {**consumer_env, "DATABASE_URL": url}
    proc = cli(env, tmp_path, "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert dummy not in out and dummy not in proc.stderr
    assert "***" in out and "DATABASE_URL" in out
    for name in (topics.users, topics.orders, topics.users + ".dlq", topics.orders + ".dlq"):
        assert f" {name}:" in out, out
    assert "schema at the migration head" in out and "check passed" in out


async def test_check_fails_when_a_dlq_topic_is_missing(consumer_env, kafka, tmp_path):
    lonely = f"lonely-{uuid.uuid4().hex[:8]}"
    await kafka.create_topics([lonely])  # the source topic only
    env = {**consumer_env, "KAFKA_TOPICS": lonely}
    proc = cli(env, tmp_path, "check")
    assert proc.returncode != 0, proc.stdout
    assert f"dead-letter topic {lonely}.dlq: missing" in proc.stdout, proc.stdout
    assert "check failed" in proc.stdout
    # check only looks: it did not create the missing topic
    listed = subprocess.run(["kcat", "-L", "-b", kafka.bootstrap], capture_output=True, text=True, timeout=60).stdout
    assert f'"{lonely}.dlq"' not in listed


def test_check_over_sasl(consumer_env, topics, sasl_bootstrap, tmp_path):
    ok = cli({**consumer_env, **sasl_env(sasl_bootstrap, SASL_PASSWORD, "SCRAM-SHA-512")}, tmp_path, "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert SASL_PASSWORD not in ok.stdout + ok.stderr
    assert f"authenticated as {SASL_USER}" in ok.stdout
    wrong = "wrong-" + uuid.uuid4().hex[:8]
    bad = cli({**consumer_env, **sasl_env(sasl_bootstrap, wrong)}, tmp_path, "check")
    assert bad.returncode != 0
    assert "KAFKA_SASL_PASSWORD" in bad.stdout and wrong not in bad.stdout + bad.stderr


async def test_consumer_over_sasl_scram_consumes_end_to_end(kafka, topics, consumers, engine, clean_db, sasl_bootstrap):
    events = Generator(seed=21).stream(500, duplicates=0.05, older=0.05)
    by_topic: dict[str, list] = {topics.users: [], topics.orders: []}
    for e in events:
        by_topic[topic_for(e, topics.users, topics.orders)].append(e)
    for topic, evs in by_topic.items():
        kcat_publish(kafka.bootstrap, topic, envelope_messages(evs))  # the plaintext listener
    ends = await kafka.end_offsets(topics.all)

    proc = consumers.start(**sasl_env(sasl_bootstrap, SASL_PASSWORD))
    await wait_db_positions(engine, topics.group, ends, timeout=120)
    await kafka.wait_committed(topics.group, topics.all, timeout=60)
    assert consumers.stop(proc) == 0, consumers.log_text()
    assert SASL_PASSWORD not in consumers.log_text()

    model = ReadModel()
    model.apply_bytes([orjson.dumps(e) for e in events])
    await assert_matches_model(engine, model)


async def test_consumer_with_a_wrong_sasl_password_exits_fast_and_says_why(topics, consumers, sasl_bootstrap):
    wrong = "wrong-" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    proc = consumers.start(**sasl_env(sasl_bootstrap, wrong))
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("`run` with a wrong password was still retrying after 30 s:\n" + consumers.log_text())
    assert code != 0
    assert time.monotonic() - started < 30
    log = consumers.log_text()
    assert "KAFKA_SASL_USERNAME" in log and "KAFKA_SASL_PASSWORD" in log, log
    assert wrong not in log
    assert "Traceback" not in log, log


def test_effective_settings_never_show_a_secret():
    from consumer.check import effective_settings, masked_database_url
    from consumer.settings import load_settings

    settings = load_settings(
        database_url="postgresql+asyncpg://u:pw-in-url@127.0.0.1:5433/db?password=pw-in-query",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="someone",
        kafka_sasl_password="pw-for-kafka",
    )
    shown = dict(effective_settings(settings))
    text = "\n".join(shown.values())
    for secret in ("pw-in-url", "pw-in-query", "pw-for-kafka"):
        assert secret not in text
    assert shown["KAFKA_SASL_PASSWORD"] == "**********"
    assert shown["KAFKA_SASL_USERNAME"] == "someone"
    assert masked_database_url("postgresql+asyncpg://u:x@h:1/d").startswith("postgresql+asyncpg://u:***@h:1/d")
