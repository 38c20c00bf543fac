"""`event-consumer check`: can this configuration run? Prints the effective settings (secrets
masked), then checks Kafka (credentials, the configured topics and their dead-letter topics) and
the database (reachable, schema at the migration head). Exit 1 if anything is wrong. Every
network step is bounded by STEP_TIMEOUT_S."""

import asyncio
from dataclasses import dataclass, field
from typing import TextIO

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from consumer.kafka_clients import KafkaAuthError, KafkaUnreachable, build_admin, probe
from consumer.settings import Settings
from database.engine import make_engine
from database.migrate import current_revision, head_revision

STEP_TIMEOUT_S = 10.0
MASK = "**********"


def masked_database_url(url: str) -> str:
    u = make_url(url)
    if any(k.lower() == "password" for k in u.query):  # ?password=... is a password too
        u = u.update_query_dict({k: MASK for k in u.query if k.lower() == "password"})
    return u.render_as_string(hide_password=True)


def effective_settings(settings: Settings) -> list[tuple[str, str]]:
    """(VARIABLE, value) in declaration order; secrets never appear."""
    rows = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name == "database_url":
            shown = masked_database_url(value.get_secret_value())
        elif isinstance(value, SecretStr):
            shown = MASK
        elif value is None:
            shown = "(not set)"
        elif isinstance(value, list):
            shown = ",".join(str(v) for v in value)
        else:
            shown = str(value)
        rows.append((name.upper(), shown))
    return rows


@dataclass
class Report:
    out: TextIO
    problems: list[str] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.out.write(f"{title}\n")

    def ok(self, message: str) -> None:
        self.out.write(f"  ok    {message}\n")

    def fail(self, message: str) -> None:
        self.problems.append(message)
        self.out.write(f"  FAIL  {message}\n")


async def check_kafka(settings: Settings, report: Report) -> None:
    report.section(f"kafka ({settings.kafka_bootstrap_servers}, {settings.kafka_security_protocol}):")
    try:
        where = await probe(settings, STEP_TIMEOUT_S)
    except KafkaAuthError as exc:
        report.fail(str(exc))
        return
    except KafkaUnreachable as exc:
        report.fail(f"unreachable: {str(exc).removeprefix('KafkaUnreachable: ')}")
        return
    auth = f", authenticated as {settings.kafka_sasl_username} ({settings.kafka_sasl_mechanism})" if settings.kafka_security_protocol.startswith("SASL_") else ""
    report.ok(f"connected to {where}{auth}")
    admin = build_admin(settings)
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            await admin.start()
        async with asyncio.timeout(STEP_TIMEOUT_S):
            # All topics: asking for named ones would auto-create them on brokers that allow it.
            described = await admin.describe_topics()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        report.fail(f"could not list topics: {type(exc).__name__}: {exc}" if str(exc) else f"could not list topics: {type(exc).__name__}")
        return
    finally:
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await admin.close()
        except Exception:  # noqa: BLE001
            pass
    partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    for topic in settings.kafka_topics:
        for kind, name in (("topic", topic), ("dead-letter topic", settings.dlq_topic(topic))):
            if name in partitions:
                report.ok(f"{kind} {name}: {partitions[name]} partition(s)")
            else:
                report.fail(f"{kind} {name}: missing")


async def check_database(settings: Settings, report: Report) -> None:
    url = make_url(settings.database_url.get_secret_value())
    report.section(f"database ({url.host}:{url.port or 5432}/{url.database}):")
    engine = make_engine(settings.database_url.get_secret_value(), pool_size=1, max_overflow=0)
    head = head_revision()
    try:
        async with asyncio.timeout(STEP_TIMEOUT_S):
            async with engine.connect() as conn:
                report.ok("connected")
                version = await current_revision(conn)
                if version is None:
                    report.fail(f"no schema (no alembic_version table): run `event-consumer migrate` (head is {head})")
                    return
        if version == head:
            report.ok(f"schema at the migration head ({head})")
        else:
            report.fail(f"schema at {version}, not at the migration head {head}: run `event-consumer migrate`")
    except TimeoutError:
        report.fail(f"unreachable: no answer within {STEP_TIMEOUT_S:g} s")
    except (DBAPIError, OSError) as exc:
        # The driver's own message: it never contains the DSN, so never the password.
        root = getattr(exc, "orig", None) or exc
        cause = root.__cause__ or root  # asyncpg's own exception behind SQLAlchemy's adapter
        detail = (str(root).splitlines() or [""])[0]
        report.fail(f"unreachable: {type(cause).__name__}: {detail}")
    finally:
        await engine.dispose()


async def check(settings: Settings, out: TextIO) -> int:
    report = Report(out)
    report.section("settings:")
    rows = effective_settings(settings)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        out.write(f"  {key.ljust(width)}  {value}\n")
    await check_kafka(settings, report)
    await check_database(settings, report)
    if report.problems:
        out.write(f"check failed: {len(report.problems)} problem(s)\n")
        return 1
    out.write("check passed\n")
    return 0
