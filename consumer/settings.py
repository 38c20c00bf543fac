"""Configuration from the environment and `.env`, built once in main(), never at import."""

from typing import Annotated, Literal

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class SettingsError(Exception):
    """A missing or invalid setting; the message names the variable and never its secret value."""


MAX_GROUP_ID = 255  # consumer_offsets.group_id is a VARCHAR(255)
MAX_TOPIC_NAME = 249  # Kafka's limit on a topic name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_group_id: str = Field("event-consumer", min_length=1, max_length=MAX_GROUP_ID)
    kafka_topics: Annotated[list[str], NoDecode] = ["users", "orders"]
    kafka_dlq_suffix: str = Field(".dlq", min_length=1, pattern=r"^[a-zA-Z0-9._-]+$")
    kafka_client_id: str = "event-consumer"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    database_url: SecretStr
    batch_max_records: int = Field(50_000, ge=1, le=100_000)
    write_concurrency: int = Field(2, ge=1, le=32)
    fetch_max_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_partition_fetch_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    session_timeout_ms: int = Field(30_000, ge=1000)
    db_pool_size: int = Field(5, ge=1, le=100)
    db_max_overflow: int = Field(5, ge=0, le=100)
    retry_initial_s: float = Field(0.2, gt=0)
    retry_max_s: float = Field(10.0, gt=0)
    shutdown_timeout_s: float = Field(30.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    http_host: str = "0.0.0.0"
    http_port: int = Field(8000, ge=0, le=65535)
    http_max_connections: int = Field(64, ge=2, le=10_000)
    health_stuck_after_s: float = Field(120.0, gt=0)
    dlq_blocked_after_s: float = Field(300.0, gt=0)
    dlq_retention_ms: int = Field(30 * 24 * 3600 * 1000, ge=-1)
    ready_requires_partitions: bool = False
    lag_refresh_s: float = Field(5.0, gt=0)

    @field_validator("kafka_topics", mode="before")
    @classmethod
    def _split_topics(cls, value: object) -> object:
        if isinstance(value, str):
            value = [t.strip() for t in value.split(",") if t.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("at least one topic is required")
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalize_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) and value.lower() in {"debug", "info", "warning", "error"} else (
            value.lower() if isinstance(value, str) else value
        )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        # Error messages here must never echo the value: it holds the password.
        raw = value.get_secret_value()
        _, sep, rest = raw.partition("://")
        authority = rest.split("?", 1)[0]
        if sep and authority.count("@") > 1:
            raise ValueError("has an unescaped '@' in its user or password: percent-encode it as %40")
        if sep and "@" in authority and "/" in authority.rpartition("@")[0]:
            raise ValueError("has an unescaped '/' in its user or password: percent-encode it as %2F")
        try:
            url = make_url(value.get_secret_value())
            port = url.port
        except (ArgumentError, ValueError):
            # e.g. an unescaped '@' or ':' in the password makes the port unparsable; the
            # driver's message would quote the password, so it is not passed on.
            raise ValueError(
                "is not a database URL (expected postgresql+asyncpg://user:password@host:port/dbname; "
                "percent-encode special characters in the password)"
            ) from None
        if port is not None and not 0 < port < 65536:
            raise ValueError("has a port outside 1..65535")
        if url.drivername != "postgresql+asyncpg":
            raise ValueError(f"must use the postgresql+asyncpg driver, not {url.drivername!r}")
        if not url.host or not url.database:
            raise ValueError("needs a host and a database name")
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            return value or None
        return value

    @model_validator(mode="after")
    def _check_security(self) -> "Settings":
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism is None:
                raise ValueError("KAFKA_SASL_MECHANISM is required when KAFKA_SECURITY_PROTOCOL is SASL_*")
            if not self.kafka_sasl_username or self.kafka_sasl_password is None:
                raise ValueError("KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required when KAFKA_SECURITY_PROTOCOL is SASL_*")
        if self.kafka_ssl_cafile and not Path(self.kafka_ssl_cafile).is_file():
            raise ValueError("KAFKA_SSL_CAFILE does not name a readable file")
        return self

    @model_validator(mode="after")
    def _check_dlq_names(self) -> "Settings":
        longest = max(self.kafka_topics, key=len)
        if len(longest) + len(self.kafka_dlq_suffix) > MAX_TOPIC_NAME:
            raise ValueError(
                f"KAFKA_DLQ_SUFFIX makes the dead-letter topic of {longest[:40]!r} longer than Kafka's {MAX_TOPIC_NAME} characters"
            )
        return self

    @model_validator(mode="after")
    def _check_health(self) -> "Settings":
        # A batch that keeps retrying reports progress once per attempt, so the threshold must exceed the backoff cap.
        if self.health_stuck_after_s <= self.retry_max_s:
            raise ValueError("HEALTH_STUCK_AFTER_S must be greater than RETRY_MAX_S")
        return self

    @model_validator(mode="after")
    def _check_pool(self) -> "Settings":
        # Each writer holds a connection for its transaction; /readyz and the rebalance listener need one more.
        if self.write_concurrency >= self.db_pool_size + self.db_max_overflow:
            raise ValueError("WRITE_CONCURRENCY must be less than DB_POOL_SIZE + DB_MAX_OVERFLOW")
        return self

    def warnings(self) -> list[str]:
        """What works but should not be run so (logged at start-up by every command)."""
        out = []
        if self.kafka_security_protocol == "SASL_PLAINTEXT" and self.kafka_sasl_mechanism == "PLAIN":
            out.append("KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the password in clear: use SASL_SSL or SCRAM")
        return out

    def dlq_topic(self, topic: str) -> str:
        return f"{topic}{self.kafka_dlq_suffix}"


def load_settings(settings_class: type[Settings] | None = None, **overrides: object) -> Settings:
    """Settings (or a subclass) from the environment and .env; SettingsError names each variable
    that is wrong and never echoes a secret."""
    try:
        return (settings_class or Settings)(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            message = "is required but not set" if error["type"] == "missing" else error["msg"]
            message = message.removeprefix("Value error, ")
            if error["loc"]:
                problems.append(f"{str(error['loc'][0]).upper()} {message}")
            else:  # a cross-field rule: its message names the variables
                problems.append(message)
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
