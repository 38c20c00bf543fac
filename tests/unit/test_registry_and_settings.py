"""handlers.registry, consumer.settings and consumer.retry."""

import os
import random
from datetime import datetime, timezone
from uuid import UUID

import asyncpg
import pytest
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaConnectionError, KafkaTimeoutError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError

from consumer.retry import Backoff, is_transient_db_error, is_transient_kafka_error, sqlstate_of
from consumer.settings import Settings, SettingsError, load_settings
from handlers.events import EVENT_TYPE_NAMES, OrderCancelled, UserCreated, UserDeleted
from handlers.decode import Poison
from handlers.native import native_path
from handlers.orders import ORDERS
from handlers.projection import Projection, ProjectionError, data
from handlers.registry import RegistryError, build_registry, route
from handlers.users import USERS

# -- registry ----------------------------------------------------------------------------------


def _thief(*models):
    """A projection over the users table for the given user event models."""
    return Projection(table=USERS.table, full=models, columns=USERS.columns)


def test_default_registry_covers_all_six_event_types():
    registry = build_registry()
    assert set(registry) == EVENT_TYPE_NAMES
    assert len(registry) == 6
    assert {t for t, a in registry.items() if a is registry["user.created"]} == {"user.created", "user.updated", "user.deleted"}
    assert {t for t, a in registry.items() if a is registry["order.created"]} == {"order.created", "order.updated", "order.cancelled"}
    assert [a.name for a in registry.aggregates] == ["users", "orders"]


def test_native_path_serves_the_whole_default_registry():
    # scripts/bootstrap.sh builds it; the suite runs against the path production runs.
    path, why = native_path(build_registry())
    assert path is not None, why
    assert path.description.unsupported == {}
    assert [a.name for a in path.description.aggregates] == ["users", "orders"]


def test_duplicate_handler_is_rejected():
    with pytest.raises(RegistryError, match=r"user\.created is handled by both users and users"):
        build_registry([USERS, ORDERS, _thief(UserCreated)], expected=None)


def test_same_projection_twice_is_rejected():
    with pytest.raises(RegistryError, match="handled by both"):
        build_registry([USERS, USERS, ORDERS])


def test_missing_handler_is_rejected():
    with pytest.raises(RegistryError, match=r"missing \['order\.cancelled', 'order\.created', 'order\.updated'\]"):
        build_registry([USERS])


def test_no_projections_is_rejected():
    with pytest.raises(RegistryError, match="at least one"):
        build_registry([], expected=None)


def test_a_contract_of_other_projections_needs_no_expected_types():
    contract = build_registry([USERS], expected=None)
    assert set(contract) == {"user.created", "user.updated", "user.deleted"}
    assert isinstance(contract.decode(b'{"event_type": "order.created"}'), Poison)


def test_projection_columns_must_be_the_tables():
    with pytest.raises(ProjectionError, match="not the columns of the table"):
        Projection(table=USERS.table, full=(UserCreated,), columns={k: v for k, v in USERS.columns.items() if k != "email"})
    with pytest.raises(ProjectionError, match="has no data.phone"):
        Projection(table=USERS.table, full=(UserCreated,), columns={**USERS.columns, "email": data("phone")})


def _event(cls, event_type: str, entity_id: int, version: int):
    data = {"id": entity_id}
    if cls is UserCreated:
        data.update(email="a@example.com", name="A")
    return cls(
        event_id=UUID(int=version),
        event_type=event_type,
        occurred_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        version=version,
        data=data,
    )


def test_route_groups_by_aggregate_and_keeps_order():
    registry = build_registry()
    users, orders = registry["user.created"], registry["order.created"]
    events = [
        _event(UserCreated, "user.created", 1, 1),
        _event(OrderCancelled, "order.cancelled", 5, 2),
        _event(UserDeleted, "user.deleted", 1, 3),
        _event(OrderCancelled, "order.cancelled", 4, 4),
        _event(UserCreated, "user.created", 2, 5),
    ]
    groups = route(registry, events)
    assert list(groups) == [users, orders]  # first appearance
    assert groups[users] == [events[0], events[2], events[4]]
    assert groups[orders] == [events[1], events[3]]
    assert route(registry, []) == {}


def test_route_with_real_registry():
    registry = build_registry()
    events = [_event(OrderCancelled, "order.cancelled", 5, 1), _event(UserDeleted, "user.deleted", 1, 2)]
    groups = route(registry, events)
    assert groups == {registry["order.created"]: [events[0]], registry["user.created"]: [events[1]]}


# -- settings ----------------------------------------------------------------------------------

VALID_URL = "postgresql+asyncpg://app:s3cr3t-pw@db.internal:5432/events"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment: no setting variable from outside, no .env file."""
    monkeypatch.chdir(tmp_path)
    fields = set(Settings.model_fields)
    for key in list(os.environ):
        if key.lower() in fields:
            monkeypatch.delenv(key)
    monkeypatch.setenv("DATABASE_URL", VALID_URL)
    return monkeypatch


def load_error(**overrides) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    return str(info.value)


def test_defaults(env):
    s = load_settings()
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.kafka_group_id == "event-consumer"
    assert s.kafka_topics == ["users", "orders"]
    assert s.kafka_dlq_suffix == ".dlq"
    assert s.kafka_client_id == "event-consumer"
    assert s.database_url.get_secret_value() == VALID_URL
    assert s.batch_max_records == 50_000
    assert s.write_concurrency == 2
    assert s.fetch_max_bytes == 16 * 1024 * 1024
    assert s.max_partition_fetch_bytes == 8 * 1024 * 1024
    assert s.max_poll_interval_ms == 300_000
    assert s.session_timeout_ms == 30_000
    assert (s.db_pool_size, s.db_max_overflow) == (5, 5)
    assert (s.retry_initial_s, s.retry_max_s, s.shutdown_timeout_s) == (0.2, 10.0, 30.0)
    assert (s.log_level, s.log_format) == ("INFO", "json")
    assert s.dlq_topic("users") == "users.dlq"


def test_environment_overrides(env):
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    env.setenv("KAFKA_GROUP_ID", "g")
    env.setenv("KAFKA_DLQ_SUFFIX", "-dead")
    env.setenv("BATCH_MAX_RECORDS", "17")
    env.setenv("RETRY_INITIAL_S", "0.5")
    env.setenv("LOG_LEVEL", "debug")
    env.setenv("LOG_FORMAT", "CONSOLE")
    s = load_settings()
    assert s.kafka_bootstrap_servers == "k1:9092,k2:9092"
    assert s.kafka_group_id == "g"
    assert s.batch_max_records == 17
    assert s.retry_initial_s == 0.5
    assert (s.log_level, s.log_format) == ("DEBUG", "console")
    assert s.dlq_topic("orders") == "orders-dead"


def test_env_file_is_read_from_the_working_directory(env, tmp_path):
    env.delenv("DATABASE_URL")
    (tmp_path / ".env").write_text(f"DATABASE_URL={VALID_URL}\nKAFKA_TOPICS=a,b\n", encoding="utf-8")
    s = load_settings()
    assert s.kafka_topics == ["a", "b"]
    assert s.database_url.get_secret_value() == VALID_URL


@pytest.mark.parametrize(
    ("raw", "topics"),
    [("users,orders", ["users", "orders"]), (" users , orders ,, ", ["users", "orders"]), ("one", ["one"]),
     ("a,b,c", ["a", "b", "c"])],
)
def test_kafka_topics_comma_parsing(env, raw, topics):
    env.setenv("KAFKA_TOPICS", raw)
    assert load_settings().kafka_topics == topics


@pytest.mark.parametrize("raw", ["", ",", " , ,"])
def test_kafka_topics_must_not_be_empty(env, raw):
    env.setenv("KAFKA_TOPICS", raw)
    message = load_error()
    assert "KAFKA_TOPICS" in message
    assert "at least one topic" in message


def test_missing_database_url(env):
    env.delenv("DATABASE_URL")
    message = load_error()
    assert "DATABASE_URL" in message
    assert "required" in message


def test_nonsense_database_url(env):
    env.setenv("DATABASE_URL", "nonsense")
    message = load_error()
    assert "DATABASE_URL" in message
    assert "nonsense" not in message


@pytest.mark.parametrize(
    "url",
    ["postgresql://app:pw@db/events", "postgresql+psycopg://app:pw@db/events", "mysql://app:pw@db/events",
     "sqlite+aiosqlite:///events.db"],
)
def test_non_asyncpg_url_is_rejected(env, url):
    env.setenv("DATABASE_URL", url)
    message = load_error()
    assert "DATABASE_URL" in message
    assert "postgresql+asyncpg" in message


@pytest.mark.parametrize("url", ["postgresql+asyncpg://app:pw@/events", "postgresql+asyncpg://app:pw@db/"])
def test_url_needs_host_and_database(env, url):
    env.setenv("DATABASE_URL", url)
    assert "DATABASE_URL needs a host and a database name" in load_error()


@pytest.mark.parametrize("value", ["abc", "0", "100001", "1.5", ""])
def test_bad_batch_max_records(env, value):
    env.setenv("BATCH_MAX_RECORDS", value)
    message = load_error()
    assert "BATCH_MAX_RECORDS" in message


def test_every_problem_is_named(env):
    env.delenv("DATABASE_URL")
    env.setenv("BATCH_MAX_RECORDS", "abc")
    env.setenv("LOG_FORMAT", "xml")
    message = load_error()
    for name in ("DATABASE_URL", "BATCH_MAX_RECORDS", "LOG_FORMAT"):
        assert name in message


def test_overrides_are_validated_too(env):
    assert load_settings(batch_max_records=3).batch_max_records == 3
    assert "DB_POOL_SIZE" in load_error(db_pool_size=0)


SECRET = "hunter2-secret"


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://u:{SECRET}@h/db",
        f"postgresql://u:{SECRET}@h/db",
        f"postgresql+asyncpg://u:{SECRET}@/db",
        f"postgresql+asyncpg://u:{SECRET}@h/",
        f"postgresql+asyncpg://u:{SECRET}@h:notaport/db",
        f"not a url {SECRET}",
        f"://u:{SECRET}@h/db",
    ],
)
def test_password_of_an_invalid_url_never_appears_in_the_error(env, url):
    env.setenv("DATABASE_URL", url)
    message = load_error()
    assert "DATABASE_URL" in message
    assert SECRET not in message
    assert "hunter2" not in message


def test_password_with_at_and_colon_never_appears_in_the_error(env):
    env.setenv("DATABASE_URL", "postgresql+asyncpg://app:p@ss:hunter2-secret@db.internal:5432/events")
    message = load_error()
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"postgresql+asyncpg://app:p@{SECRET}@db.internal:5432/events", "unescaped '@'"),
        (f"postgresql+asyncpg://app:p/{SECRET}@db.internal:5432/events", "unescaped '/'"),
        (f"postgresql+asyncpg://app@x:{SECRET}@db/events", "unescaped '@'"),
    ],
)
def test_an_unescaped_at_or_slash_in_the_password_is_refused_without_echoing_it(env, url, says):
    env.setenv("DATABASE_URL", url)
    message = load_error()
    assert "DATABASE_URL" in message and says in message
    assert "hunter2" not in message and "secret" not in message


def test_percent_encoded_at_and_slash_are_fine(env):
    env.setenv("DATABASE_URL", "postgresql+asyncpg://app:p%40s%2Fs@db.internal:5432/events")
    assert load_settings().database_url.get_secret_value().endswith("@db.internal:5432/events")


def test_a_group_id_longer_than_the_offsets_column_is_refused(env):
    env.setenv("KAFKA_GROUP_ID", "g" * 256)
    assert "KAFKA_GROUP_ID" in load_error()
    env.setenv("KAFKA_GROUP_ID", "g" * 255)
    assert load_settings().kafka_group_id == "g" * 255


@pytest.mark.parametrize("suffix", ["!dlq", ".d l q", "/dlq", ".dlq\n"])
def test_a_dlq_suffix_kafka_cannot_name_a_topic_with_is_refused(env, suffix):
    env.setenv("KAFKA_DLQ_SUFFIX", suffix)
    assert "KAFKA_DLQ_SUFFIX" in load_error()


def test_a_dlq_suffix_that_makes_a_topic_name_too_long_is_refused(env):
    env.setenv("KAFKA_TOPICS", "users," + "o" * 240)
    env.setenv("KAFKA_DLQ_SUFFIX", ".dead-letters")
    message = load_error()
    assert "KAFKA_DLQ_SUFFIX" in message and "249" in message
    env.setenv("KAFKA_DLQ_SUFFIX", ".dlq")
    assert load_settings().dlq_topic("o" * 240) == "o" * 240 + ".dlq"


def test_sasl_plain_over_plaintext_is_warned_about(env):
    env.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    env.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    env.setenv("KAFKA_SASL_USERNAME", "u")
    env.setenv("KAFKA_SASL_PASSWORD", SECRET)
    [warning] = load_settings().warnings()
    assert "in clear" in warning and SECRET not in warning
    env.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    assert load_settings().warnings() == []


def test_password_of_a_valid_url_never_appears_in_repr_or_str(env):
    env.setenv("DATABASE_URL", f"postgresql+asyncpg://u:{SECRET}@h:5432/db")
    s = load_settings()
    for text in (repr(s), str(s), repr(s.database_url), str(s.database_url), repr(s.model_dump())):
        assert SECRET not in text
    assert s.database_url.get_secret_value().endswith(f"{SECRET}@h:5432/db")


# -- backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backoff", [Backoff(), Backoff(0.001, 0.002), Backoff(1.0, 3.0), Backoff(0.1, 100.0)])
def test_backoff_delay_is_within_bounds(backoff):
    rng_state = random.getstate()
    try:
        random.seed(1234)
        for attempt in range(0, 40):
            for _ in range(20):
                delay = backoff.delay(attempt)
                cap = min(backoff.max_s, backoff.initial_s * 2 ** max(attempt - 1, 0))
                assert backoff.initial_s / 2 <= delay <= backoff.max_s
                assert delay <= max(cap, backoff.initial_s / 2)
    finally:
        random.setstate(rng_state)


def test_backoff_cap_grows_exponentially_up_to_max(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # always the cap
    b = Backoff(initial_s=0.2, max_s=10.0)
    caps = [b.delay(attempt) for attempt in range(1, 10)]
    assert caps == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0])
    assert all(x <= y for x, y in zip(caps, caps[1:]))
    assert b.delay(0) == pytest.approx(0.2)


def test_backoff_floor_is_half_the_initial_delay(monkeypatch):
    monkeypatch.setattr(random, "uniform", lambda low, high: low)  # always 0
    b = Backoff(initial_s=0.2, max_s=10.0)
    assert [b.delay(a) for a in (1, 5, 50)] == [0.1, 0.1, 0.1]


# -- transient errors --------------------------------------------------------------------------

E = asyncpg.exceptions


@pytest.mark.parametrize(
    "exc",
    [
        E.DeadlockDetectedError("x"),
        E.SerializationError("x"),
        E.TooManyConnectionsError("x"),
        E.AdminShutdownError("x"),
        E.CannotConnectNowError("x"),
        E.ConnectionDoesNotExistError("x"),
        E.ConnectionFailureError("x"),
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        OSError("network is unreachable"),
    ],
)
def test_transient_errors(exc):
    assert is_transient_db_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        E.CheckViolationError("x"),
        E.UniqueViolationError("x"),
        E.NotNullViolationError("x"),
        E.InvalidTextRepresentationError("x"),
        E.NumericValueOutOfRangeError("x"),
        E.UndefinedTableError("x"),
        E.SyntaxOrAccessError("x"),
        ValueError("x"),
        KeyError("x"),
    ],
)
def test_permanent_errors(exc):
    assert not is_transient_db_error(exc)


def test_sqlstate_of_reads_the_asyncpg_error():
    assert sqlstate_of(E.DeadlockDetectedError("x")) == "40P01"
    assert sqlstate_of(ValueError()) is None


def _wrapped(cls, orig: BaseException) -> DBAPIError:
    return cls("INSERT ...", {}, orig)


def test_sqlalchemy_wrapped_errors_are_classified_by_the_original():
    assert is_transient_db_error(_wrapped(OperationalError, ConnectionRefusedError()))
    assert is_transient_db_error(_wrapped(DBAPIError, E.DeadlockDetectedError("x")))
    assert is_transient_db_error(_wrapped(InterfaceError, Exception("connection is closed")))
    assert sqlstate_of(_wrapped(IntegrityError, E.CheckViolationError("x"))) == "23514"
    assert not is_transient_db_error(_wrapped(IntegrityError, E.CheckViolationError("x")))
    assert not is_transient_db_error(_wrapped(ProgrammingError, E.UndefinedTableError("x")))
    assert not is_transient_db_error(_wrapped(OperationalError, E.CheckViolationError("x")))


def test_invalidated_connection_is_transient():
    exc = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_transient_db_error(exc)


def test_transient_cause_makes_an_error_transient():
    try:
        try:
            raise ConnectionRefusedError()
        except ConnectionRefusedError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_transient_db_error(outer)
    assert not is_transient_db_error(RuntimeError("no cause"))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (KafkaConnectionError(), True),
        (KafkaTimeoutError(), True),
        (ConnectionResetError(), True),
        (CommitFailedError(), False),
        (IllegalStateError(), False),
        (ValueError(), False),
    ],
)
def test_kafka_error_classification(exc, transient):
    assert is_transient_kafka_error(exc) is transient


@pytest.mark.parametrize(("concurrency", "pool", "overflow"), [("0", "5", "5"), ("33", "50", "50"), ("10", "5", "5"), ("3", "2", "1")])
def test_bad_write_concurrency_names_the_variable(env, concurrency, pool, overflow):
    env.setenv("WRITE_CONCURRENCY", concurrency)
    env.setenv("DB_POOL_SIZE", pool)
    env.setenv("DB_MAX_OVERFLOW", overflow)
    with pytest.raises(SettingsError, match="WRITE_CONCURRENCY"):
        load_settings()
