"""Where the tests find the real Kafka broker and PostgreSQL.

Order: KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL from the environment (what .ci/run and
scripts/services.sh provide), else testcontainers when a Docker daemon answers, else a clear
failure. Never a skip: a test that needs a service and has none has failed."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ServicesUnavailable(RuntimeError):
    pass


@dataclass
class Services:
    kafka_bootstrap: str
    database_url: str  # postgresql+asyncpg://... of a server where the tests may create databases
    control: "ServiceControl | None"
    _containers: tuple = ()

    def close(self) -> None:
        for container in self._containers:
            container.stop()


class ServiceControl:
    """Stops and starts the local services (scripts/services.sh), for the fault tests."""

    def __init__(self, script: str) -> None:
        self.script = script

    def _call(self, *args: str) -> None:
        subprocess.run(["bash", self.script, *args], check=True, timeout=180, stdout=subprocess.DEVNULL)

    def pg_stop(self, mode: str = "fast") -> None:
        self._call("pg-stop", mode)

    def pg_start(self) -> None:
        self._call("pg-start")

    def kafka_stop(self) -> None:
        self._call("kafka-stop")

    def kafka_start(self) -> None:
        self._call("kafka-start")


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def discover() -> Services:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    db = os.environ.get("DATABASE_URL")
    script = os.environ.get("EC_SERVICES_SCRIPT")
    if kafka and db:
        return Services(kafka, db, ServiceControl(script) if script else None)
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:16-alpine", driver="asyncpg").start()
        kc = KafkaContainer("apache/kafka:4.1.1").with_kraft().start()
        return Services(kc.get_bootstrap_server(), pg.get_connection_url(), None, (kc, pg))
    raise ServicesUnavailable(
        "integration tests need a real Kafka broker and PostgreSQL: set KAFKA_BOOTSTRAP_SERVERS and "
        "DATABASE_URL (scripts/services.sh start; eval \"$(scripts/services.sh env)\"), or run a Docker daemon "
        "for testcontainers"
    )
