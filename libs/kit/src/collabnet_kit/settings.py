"""Settings from the environment (prefix ``COLLABNET_``), validated when the process starts.

Every default works on a developer's machine. With ``COLLABNET_ENV=production`` the values that
have no safe default (database, NATS, the principal-signing key) must be given explicitly; a missing
one stops the process with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "COLLABNET_"
DEV_SIGNING_KEY = "collabnet-development-signing-key-not-for-production"


class ServiceSettings(BaseSettings):
    """What every service reads. A service subclasses it to add its own settings."""

    # An empty variable counts as unset, so COLLABNET_DATABASE_URL= cannot pass for a production value.
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", validate_default=True, env_ignore_empty=True)

    # Values that production must set itself: a default here would point at the wrong place.
    required_in_production: ClassVar[tuple[str, ...]] = ("database_url", "nats_url", "principal_signing_key")

    service_name: str = Field(default="collabnet", description="Set by the service, not the environment.")
    env: Literal["development", "production"] = "development"
    state_dir: Path = Path(".collabnet")
    database_url: SecretStr = SecretStr("")
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str = ""
    nats_password: SecretStr = SecretStr("")
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50050, ge=0, le=65535)
    principal_signing_key: SecretStr = SecretStr(DEV_SIGNING_KEY)
    principal_ttl_seconds: int = Field(default=300, gt=0)
    migrate_on_start: bool | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    outbox_poll_seconds: float = Field(default=1.0, gt=0)
    outbox_batch_size: int = Field(default=100, gt=0)
    consumer_max_deliveries: int = Field(default=5, ge=1)
    consumer_backoff_seconds: float = Field(default=0.5, gt=0)
    consumer_ack_wait_seconds: float = Field(default=30.0, gt=0)
    health_check_seconds: float = Field(default=2.0, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Clients' connections are closed (gracefully) after this long, so they resolve the service's
    # name again and spread their calls over replicas that started since.
    grpc_max_connection_age_seconds: float = Field(default=300.0, gt=0)
    stream_duplicate_window_seconds: float = Field(default=120.0, ge=120.0)
    # Copies JetStream keeps of each stream: 1 for one nats-server; 3 on a cluster, so an acknowledged
    # event survives the loss of a server (JetStream acknowledges before it writes to disk).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    # The Prometheus scrape endpoint (``/metrics``); 0 serves none (OTLP metrics are separate).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("principal_signing_key")
    @classmethod
    def _signing_key_is_long_enough(cls, key: SecretStr) -> SecretStr:
        if len(key.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes long (HS256 needs a key as long as its hash)")
        return key

    @model_validator(mode="after")
    def _production_values_are_explicit(self) -> Self:
        if self.env == "production":
            missing = [name for name in self.required_in_production if name not in self.model_fields_set]
            if missing:
                names = ", ".join(PREFIX + name.upper() for name in missing)
                raise ValueError(f"{names} must be set when {PREFIX}ENV=production")
        return self

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def database(self) -> str:
        """The database URL, defaulting to a SQLite file of this service under the state folder."""
        url = self.database_url.get_secret_value()
        return url or f"sqlite+aiosqlite:///{self.state_dir / (self.service_name + '.db')}"

    @property
    def migrate_at_start(self) -> bool:
        return self.development if self.migrate_on_start is None else self.migrate_on_start


S = TypeVar("S", bound=ServiceSettings)


class SettingsError(SystemExit):
    """Raised instead of a traceback when the environment does not describe a valid configuration."""


def load_settings(cls: type[S], service_name: str, **overrides: object) -> S:
    """Read ``cls`` from the environment; on a bad or missing value stop with the variable's name."""
    try:
        return cls(service_name=service_name, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            variable = PREFIX + where.upper() if where else "configuration"
            lines.append(f"  {variable}: {error['msg']}")
        raise SettingsError(f"{service_name}: invalid configuration\n" + "\n".join(lines)) from None
