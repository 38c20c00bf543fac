"""One process's lifecycle, the same for `run` and `replay`: SIGTERM/SIGINT, the engine (with the
native path's batch tables), the schema check, Kafka clients started (with retry, or at once) and
everything closed in reverse order, each step bounded (aiokafka's stop can hang: #773)."""

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka.errors import KafkaConnectionError, KafkaError
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.kafka_clients import KafkaAuthError, probe
from consumer.retry import Backoff, is_transient_db_error, short_error
from consumer.settings import Settings
from database.engine import make_engine
from database.migrate import current_revision, head_revision
from handlers.native import install_batch_tables
from handlers.registry import Contract

log = structlog.get_logger("consumer.process")


class StartupError(Exception):
    pass


class Process:
    """`async with Process(...) as process:`; `process.stop` is set by a signal (the first one's
    number is in `process.signals`), `on_signal` callbacks run too."""

    def __init__(self, settings: Settings, contract: Contract | None = None, *, pool_size: int = 0, max_overflow: int = 0) -> None:
        self.settings = settings
        self.backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
        self.stop = asyncio.Event()
        self.signals: list[int] = []
        self.on_signal: list[Callable[[], None]] = []
        self.engine: AsyncEngine | None = None
        if pool_size:
            self.engine = make_engine(settings.database_url.get_secret_value(), pool_size=pool_size, max_overflow=max_overflow)
            if contract is not None:
                install_batch_tables(self.engine, contract.aggregates)
        self._clients: list[Any] = []

    async def __aenter__(self) -> "Process":
        aio = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aio.add_signal_handler(sig, self._signalled, sig)
        return self

    def _signalled(self, signum: int) -> None:
        if not self.signals:
            log.info("signal received; stopping after the current batch", signal=signal.Signals(signum).name)
        self.signals.append(signum)
        self.stop.set()
        for callback in self.on_signal:
            callback()

    def client(self, client: Any) -> Any:
        """Registers a Kafka client to be stopped at exit (in reverse order), started or not."""
        self._clients.append(client)
        return client

    async def check_schema(self) -> None:
        """Waits for the database (retrying while it is unreachable) and checks the migration."""
        assert self.engine is not None
        attempt = 0
        while True:
            try:
                async with self.engine.connect() as conn:
                    version = await current_revision(conn)
                break
            except Exception as exc:
                if not is_transient_db_error(exc):
                    raise StartupError(f"the database refused the connection: {short_error(exc)}") from None
                attempt += 1
                if self.stop.is_set():
                    raise StartupError("stopped while waiting for the database") from None
                log.warning("database not reachable yet; retrying", attempt=attempt, error=type(exc).__name__)
                await asyncio.sleep(self.backoff.delay(attempt))
        if version is None:
            raise StartupError("the database schema is missing: run `event-consumer migrate` first")
        head = head_revision()
        if version != head:
            raise StartupError(f"the database schema is at {version}, not {head}: run `event-consumer migrate`")

    async def start(self, client: Any, what: str, *, retry: bool = True) -> None:
        """Starts a registered client. A refused login stops start-up at once (aiokafka reports it
        as "Unable to bootstrap": the probe tells it apart); an unreachable broker is retried
        until `stop`, or with retry=False (a one-off command) reported at once."""
        attempt = 0
        while True:
            try:
                await probe(self.settings)
                await client.start()
                return
            except KafkaAuthError as exc:
                raise StartupError(str(exc)) from None
            except (KafkaError, KafkaConnectionError) as exc:
                if not retry:
                    raise StartupError(f"cannot use Kafka at {self.settings.kafka_bootstrap_servers}: {exc}") from None
                attempt += 1
                if self.stop.is_set():
                    raise StartupError(f"stopped while waiting for Kafka ({what})") from None
                log.warning("kafka not reachable yet; retrying", client=what, attempt=attempt, error=type(exc).__name__)
                await asyncio.sleep(self.backoff.delay(attempt))

    async def __aexit__(self, *exc_info: object) -> None:
        # Clients that never started are stopped too (that only marks them closed): otherwise a
        # start-up failure ends with aiokafka's "Unclosed AIOKafka..." noise after the real message.
        for client in reversed(self._clients):
            try:
                await asyncio.wait_for(client.stop(), timeout=self.settings.shutdown_timeout_s)
            except Exception as exc:  # noqa: BLE001 - shutdown must go on (aiokafka #773)
                log.warning("kafka client did not stop cleanly", error=type(exc).__name__)
        if self.engine is not None:
            await self.engine.dispose()
        aio = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aio.remove_signal_handler(sig)
