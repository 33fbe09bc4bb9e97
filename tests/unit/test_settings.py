from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import Settings

STRONG = {
    "mongodb_uri": "mongodb://queuesvc:Xk2v9Lq@db1:27017/queuesvc?authSource=admin",
    "redis_url": "redis://:Rr83nq1Zp@cache1:6379/0",
    "broker_url": "amqp://queuesvc:Mq72hHa@mq1:5672/queuesvc",
}


def test_production_refuses_the_placeholder_defaults() -> None:
    with pytest.raises(ValidationError) as error:
        Settings(env="production")
    message = str(error.value)
    assert "refusing to start in production" in message
    for name in ("APP_MONGODB_URI", "APP_REDIS_URL", "APP_BROKER_URL"):
        assert name in message


@pytest.mark.parametrize("field", sorted(STRONG))
@pytest.mark.parametrize("weak", ["", "change-me", "guest", "password"])
def test_production_refuses_each_weak_password(field: str, weak: str) -> None:
    values = dict(STRONG)
    scheme, rest = values[field].split("://", 1)
    user = rest.split(":", 1)[0]
    host = rest.split("@", 1)[1]
    values[field] = f"{scheme}://{user}:{weak}@{host}" if weak else f"{scheme}://{host}"
    with pytest.raises(ValidationError, match=f"APP_{field.upper()}"):
        Settings(env="production", **values)


def test_production_accepts_real_secrets_and_hides_them() -> None:
    settings = Settings(env="production", **STRONG)
    assert "Xk2v9Lq" not in repr(settings)
    assert settings.broker_url.get_secret_value() == STRONG["broker_url"]


def test_development_allows_placeholders() -> None:
    assert Settings(env="development").env == "development"


def test_environment_variables_use_the_app_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "development")
    monkeypatch.setenv("APP_IMPORT_BATCH_SIZE", "250")
    assert Settings().import_batch_size == 250


def test_soft_limit_must_be_below_hard_limit() -> None:
    with pytest.raises(ValidationError, match="SOFT_TIME_LIMIT"):
        Settings(env="development", process_soft_time_limit=400, process_time_limit=300)
