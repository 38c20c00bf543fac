"""Lag that moves during an outage: PostgreSQL stopped for 60 s while 20,000 more events are
published; /metrics scraped every second from the real `event-consumer run`."""

import asyncio
import json
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.generate import Generator, topic_for
from tests.integration.harness import envelope_messages, kcat_publish
from tests.integration.test_observability import free_port, http_get, wait_status

OUTAGE_S = 60


def gauges(text: str) -> dict[str, float]:
    """Sum over partitions of each lag gauge, and the last-applied timestamp."""
    out: dict[str, float] = {"lag_records": 0.0, "lag_seconds_max": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "event_consumer_lag_records":
                out["lag_records"] += sample.value
            elif sample.name == "event_consumer_lag_seconds":
                out["lag_seconds_max"] = max(out["lag_seconds_max"], sample.value)
            elif sample.name == "event_consumer_last_applied_timestamp_seconds":
                out["last_applied"] = sample.value
    return out


async def scrape(port: int) -> dict[str, float]:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return gauges(body.decode())


def publish(kafka, topics, events: list[dict]) -> None:
    for topic in (topics.users, topics.orders):
        kcat_publish(kafka.bootstrap, topic, envelope_messages([e for e in events if topic_for(e, topics.users, topics.orders) == topic]))


@pytest.mark.slow
async def test_lag_rises_through_a_database_outage_and_falls_after(kafka, topics, consumers, engine, clean_db, control, consumer_env):
    gen = Generator(seed=211)
    first, outage = gen.stream(2_000), gen.stream(20_000)
    publish(kafka, topics, first)
    port = free_port()
    proc = consumers.start(HTTP_PORT=str(port), LAG_REFRESH_S="1")
    await kafka.wait_committed(topics.group, topics.all, timeout=120)
    await wait_status(port, "/healthz", 200, timeout=30, proc=proc, logs=consumers.log_text)
    before = await scrape(port)
    assert before["lag_records"] == 0

    await asyncio.to_thread(control.pg_stop, "fast")
    samples = []
    try:
        started = time.monotonic()
        await asyncio.to_thread(publish, kafka, topics, outage)
        while time.monotonic() - started < OUTAGE_S:
            samples.append(await scrape(port))
            await asyncio.sleep(1)
    finally:
        await asyncio.to_thread(control.pg_start)
    peak = max(s["lag_records"] for s in samples)
    assert peak >= 19_000, [s["lag_records"] for s in samples]
    seconds = [s["lag_seconds_max"] for s in samples if s["lag_records"] > 0]
    assert seconds and seconds[-1] > seconds[0] + 10, seconds  # grows through the outage

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        after = await scrape(port)
        if after["lag_records"] == 0 and after["lag_seconds_max"] == 0:
            break
        await asyncio.sleep(1)
    assert after["lag_records"] == 0 and after["lag_seconds_max"] == 0, after
    assert after["last_applied"] > before.get("last_applied", 0)

    # at rest, `offsets show` gives the same lag (0) per partition as /metrics
    shown = subprocess.run([sys.executable, "-m", "consumer", "offsets", "show", "--json"], env=consumer_env,
                           capture_output=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["total_lag"] == 0
    assert consumers.stop(proc) == 0, consumers.log_text()
