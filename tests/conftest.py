import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.services import Services, ServicesUnavailable, discover


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    try:
        found = discover()
    except ServicesUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield found
    found.close()


def _plain_dsn(url: str, database: str | None = None) -> str:
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


@asynccontextmanager
async def fresh_database(server_url: str, prefix: str = "ec_test", create_options: str = "") -> AsyncIterator[str]:
    """A new database on the server, migrated to head, dropped afterwards: its URL."""
    from database.migrate import upgrade

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(_plain_dsn(server_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}" {create_options}')
    finally:
        await admin.close()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(upgrade, url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(_plain_dsn(server_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="session")
async def database_url(services: Services) -> AsyncIterator[str]:
    """A fresh database for this test session on the given server, migrated to head."""
    async with fresh_database(services.database_url) as url:
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    from handlers.native import install_batch_tables
    from handlers.registry import build_registry

    eng = create_async_engine(database_url, pool_size=2, max_overflow=2, pool_pre_ping=True)
    install_batch_tables(eng, build_registry().aggregates)  # as consumer.app does
    yield eng
    await eng.dispose()


def pytest_report_header(config) -> list[str]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    db = os.environ.get("DATABASE_URL")
    if not (kafka and db):
        return ["services: none in the environment (testcontainers if Docker answers, else integration tests fail)"]
    url = make_url(db)
    return [f"services: real Kafka broker at {kafka}, real PostgreSQL at {url.host}:{url.port}/{url.database}"]
