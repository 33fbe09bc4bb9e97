"""Configuration from the environment (prefix ``APP_``), validated once at start-up."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Passwords that mark a value as "not configured yet". Production refuses them.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "change-me",
        "changeme",
        "change_me",
        "password",
        "secret",
        "guest",
        "admin",
        "example",
        "placeholder",
        "todo",
    }
)


def uri_password(uri: str) -> str:
    """The password embedded in a service URI ('' when there is none)."""
    return urlsplit(uri).password or ""


class Settings(BaseSettings):
    """Every setting of the service; see .env.example for documentation."""

    model_config = SettingsConfigDict(env_prefix="APP_", extra="ignore")

    env: Literal["development", "test", "production"] = "production"
    log_level: str = "INFO"

    # Connection URIs carry credentials, so they are secrets (never logged).
    mongodb_uri: SecretStr = SecretStr(
        "mongodb://queuesvc:change-me@127.0.0.1:27017/queuesvc"
        "?authSource=admin&authMechanism=SCRAM-SHA-256"
    )
    mongodb_database: str = Field(default="queuesvc", min_length=1)
    # Server selection and connect timeout: a route that needs MongoDB answers 503
    # within about this long while it is down.
    mongodb_timeout_ms: int = Field(default=1500, ge=100, le=60_000)
    redis_url: SecretStr = SecretStr("redis://:change-me@127.0.0.1:6379/0")
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    redis_pool_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    broker_url: SecretStr = SecretStr("amqp://queuesvc:change-me@127.0.0.1:5672/queuesvc")

    # Request handling.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    health_timeout_seconds: float = Field(default=1.0, gt=0, le=10)
    # GET /health probes at most once per this many seconds per process; callers
    # in between share the last answer (0: every call probes, still one at a time).
    health_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Requests one process runs at once; above it, a 503 at once (app.overload).
    # At most redis_max_connections, so a request never waits for the pool.
    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    # Publishing: reaching RabbitMQ (connect, channel, declarations) and waiting
    # for its confirm are bounded apart; a slow confirm from a live broker is
    # load (503 "busy"), not an outage.
    publish_connect_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    publish_confirm_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    publish_max_retries: int = Field(default=2, ge=0, le=10)
    # Publishes of one process awaiting their confirm; more wait for a slot.
    publish_max_in_flight: int = Field(default=64, ge=1, le=10_000)

    # Group commit (app.group_commit): submits that arrive within the linger, up
    # to the batch size, share one Redis round trip and their confirms.
    submit_batch_max: int = Field(default=64, ge=1, le=1000)
    submit_linger_ms: float = Field(default=1.0, ge=0, le=100)
    # How long an Idempotency-Key holds its task.
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)

    # API keys (app.access): how long a process trusts a key it has read
    # (revocations reach every process at once regardless).
    api_key_cache_seconds: float = Field(default=60, ge=0, le=3600)
    # Callers that reach /health, /metrics and /docs without an admin key:
    # comma-separated addresses or networks. Empty: an admin key everywhere.
    ops_networks: Annotated[list[IPvAnyNetwork], NoDecode] = []

    # Quotas per owner (app.quotas), shared by every app server through Redis:
    # submits per second with a burst, and the cost of unfinished tasks (a
    # process task costs its iterations, an import its rows).
    quota_submit_rate: float = Field(default=20.0, gt=0, le=100_000)
    quota_submit_burst: int = Field(default=100, ge=1, le=1_000_000)
    quota_in_flight_cost: int = Field(default=200_000, ge=1)

    # Task status records in Redis: unfinished ones live a day; finished ones only
    # long enough for clients polling the end (the result stays in MongoDB).
    status_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    status_final_ttl_seconds: int = Field(default=600, ge=10)

    # Task event streams (GET /api/async/events/{id}): a `: ping` comment every
    # this many seconds on an idle stream (below any proxy's read timeout), and
    # at most this many streams open per process (more: 503).
    events_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    events_max_streams: int = Field(default=2000, ge=1, le=100_000)

    # Seconds a client is told to wait (Retry-After) when a dependency is down.
    retry_after_seconds: int = Field(default=2, ge=1, le=3600)

    # The processing task.
    process_rounds_per_iteration: int = Field(default=5000, ge=1, le=1_000_000)
    process_soft_time_limit: int = Field(default=300, ge=1)
    process_time_limit: int = Field(default=330, ge=1)

    # The CSV import task.
    import_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    import_max_rows: int = Field(default=50_000, ge=1)
    import_batch_size: int = Field(default=500, ge=1, le=10_000)
    import_soft_time_limit: int = Field(default=600, ge=1)
    import_time_limit: int = Field(default=660, ge=1)

    # Automatic retries for transient errors (exponential backoff with jitter):
    # the defaults ride out about four minutes of a dependency being down.
    task_max_retries: int = Field(default=10, ge=0, le=50)
    task_retry_backoff_max: int = Field(default=60, ge=1)
    # Deliveries of one message before RabbitMQ dead-letters it (a message that
    # keeps killing its worker). A queue argument: changing it means recreating
    # the queues (see README).
    task_delivery_limit: int = Field(default=5, ge=1, le=1000)

    @field_validator("ops_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for soft, hard, name in (
            (self.process_soft_time_limit, self.process_time_limit, "PROCESS"),
            (self.import_soft_time_limit, self.import_time_limit, "IMPORT"),
        ):
            if soft >= hard:
                raise ValueError(
                    f"APP_{name}_SOFT_TIME_LIMIT ({soft}) must be below "
                    f"APP_{name}_TIME_LIMIT ({hard})"
                )
        if self.max_in_flight > self.redis_max_connections:
            raise ValueError(
                f"APP_MAX_IN_FLIGHT ({self.max_in_flight}) must not exceed "
                f"APP_REDIS_MAX_CONNECTIONS ({self.redis_max_connections}): a request "
                "would wait for a Redis connection instead of being shed"
            )
        if self.env == "production":
            weak = [
                f"APP_{field.upper()}"
                for field in ("mongodb_uri", "redis_url", "broker_url")
                if uri_password(getattr(self, field).get_secret_value()).lower()
                in PLACEHOLDER_SECRETS
            ]
            if weak:
                raise ValueError(
                    "refusing to start in production with an empty or placeholder password in "
                    + ", ".join(weak)
                    + " (set real credentials, or APP_ENV=development for local use)"
                )
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
