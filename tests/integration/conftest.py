import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.harness import ConsumerProcesses, KafkaHelper, Topics
from tests.services import Services


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def control(services: Services):
    """Stops and starts the local services, for the tests of outages."""
    if services.control is None:
        pytest.fail("this test stops and starts services: run it with scripts/services.sh (EC_SERVICES_SCRIPT)", pytrace=False)
    return services.control


@pytest.fixture
async def clean_db(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE users, orders, consumer_offsets"))


@pytest.fixture(scope="session")
async def kafka(services: Services) -> AsyncIterator[KafkaHelper]:
    helper = KafkaHelper(services.kafka_bootstrap)
    await helper.start()
    yield helper
    await helper.close()


@pytest.fixture
async def topics(kafka: KafkaHelper) -> Topics:
    """Fresh topics (3 partitions each) and a fresh group for one test."""
    suffix = uuid.uuid4().hex[:8]
    t = Topics(users=f"users-{suffix}", orders=f"orders-{suffix}", group=f"group-{suffix}")
    await kafka.create_topics([t.users, t.orders, t.users + ".dlq", t.orders + ".dlq"], partitions=3)
    return t


@pytest.fixture
def consumer_env(services: Services, database_url: str, topics: Topics) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_", "BATCH_", "LOG_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=services.kafka_bootstrap,
        DATABASE_URL=database_url,
        KAFKA_TOPICS=f"{topics.users},{topics.orders}",
        KAFKA_GROUP_ID=topics.group,
        LOG_LEVEL="INFO",
        RETRY_MAX_S="2",
        SESSION_TIMEOUT_MS="10000",
        HTTP_PORT="0",  # an ephemeral port: consumers run side by side
    )
    return env


@pytest.fixture
def consumers(consumer_env: dict[str, str], tmp_path) -> Iterator[ConsumerProcesses]:
    procs = ConsumerProcesses(consumer_env, tmp_path)
    yield procs
    procs.kill_all()
