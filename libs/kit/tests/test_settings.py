"""Settings from the environment: safe defaults locally, explicit values required in production."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collabnet_kit.settings import DEV_SIGNING_KEY, ServiceSettings, SettingsError, load_settings

REQUIRED_IN_PRODUCTION = ("COLLABNET_DATABASE_URL", "COLLABNET_NATS_URL", "COLLABNET_PRINCIPAL_SIGNING_KEY")


class ReviewsSettings(ServiceSettings):
    """A service's own settings, read with the same prefix."""

    max_review_length: int = 2000


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No COLLABNET_* variable of the outer environment reaches these tests."""
    for name in list(os.environ):
        if name.startswith("COLLABNET_"):
            monkeypatch.delenv(name)


def production(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    monkeypatch.setenv("COLLABNET_ENV", "production")
    for name, value in values.items():
        monkeypatch.setenv(f"COLLABNET_{name.upper()}", value)


def failure_message(raised: pytest.ExceptionInfo[SettingsError]) -> str:
    return str(raised.value.code)


def test_defaults_describe_a_development_setup() -> None:
    settings = load_settings(ServiceSettings, "reviews")
    assert settings.service_name == "reviews"
    assert settings.env == "development"
    assert settings.development
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.grpc_port == 50050
    assert settings.principal_signing_key.get_secret_value() == DEV_SIGNING_KEY


def test_database_defaults_to_a_sqlite_file_named_after_the_service_under_the_state_dir() -> None:
    settings = load_settings(ServiceSettings, "reviews")
    assert settings.database == f"sqlite+aiosqlite:///{Path('.collabnet') / 'reviews.db'}"


def test_the_default_database_follows_a_state_dir_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COLLABNET_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings(ServiceSettings, "identity")
    assert settings.state_dir == tmp_path / "state"
    assert settings.database == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'identity.db'}"


def test_prefixed_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_DATABASE_URL", "postgresql+asyncpg://app:pw@db:5432/reviews")
    monkeypatch.setenv("COLLABNET_NATS_URL", "nats://nats:4222")
    monkeypatch.setenv("COLLABNET_GRPC_PORT", "6001")
    monkeypatch.setenv("COLLABNET_LOG_LEVEL", "debug")
    monkeypatch.setenv("COLLABNET_MAX_REVIEW_LENGTH", "500")
    settings = load_settings(ReviewsSettings, "reviews")
    assert settings.database == "postgresql+asyncpg://app:pw@db:5432/reviews"
    assert settings.nats_url == "nats://nats:4222"
    assert settings.grpc_port == 6001
    assert settings.log_level == "debug"
    assert settings.max_review_length == 500


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_PORT", "7001")
    monkeypatch.setenv("NATS_URL", "nats://elsewhere:4222")
    settings = load_settings(ServiceSettings, "reviews")
    assert settings.grpc_port == 50050
    assert settings.nats_url == "nats://127.0.0.1:4222"


def test_the_database_url_is_kept_secret_when_settings_are_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_DATABASE_URL", "postgresql+asyncpg://app:hunter2@db/reviews")
    settings = load_settings(ServiceSettings, "reviews")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_production_without_any_required_value_stops_naming_every_missing_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production(monkeypatch)
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings, "reviews")
    message = failure_message(raised)
    assert message.startswith("reviews: invalid configuration")
    for variable in REQUIRED_IN_PRODUCTION:
        assert variable in message


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_missing_production_value_stops_with_the_variable_name(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    production(monkeypatch)
    values = {
        "COLLABNET_DATABASE_URL": "postgresql+asyncpg://app@db/reviews",
        "COLLABNET_NATS_URL": "nats://nats:4222",
        "COLLABNET_PRINCIPAL_SIGNING_KEY": "a-production-signing-key-0123456789abcdef",
    }
    for name, value in values.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings, "reviews")
    message = failure_message(raised)
    assert missing in message
    for present in values.keys() - {missing}:
        assert present not in message


def test_empty_production_values_count_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty variable (a secret reference that resolved to nothing) must not fall back to the
    # development defaults: an empty database URL would silently mean a local SQLite file.
    production(monkeypatch, database_url="", nats_url="", principal_signing_key="")
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings, "reviews")
    message = failure_message(raised)
    for variable in REQUIRED_IN_PRODUCTION:
        assert variable in message


def test_settings_error_is_a_system_exit_so_the_process_stops_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production(monkeypatch)
    with pytest.raises(SystemExit) as raised:
        load_settings(ServiceSettings, "reviews")
    assert isinstance(raised.value, SettingsError)


def test_production_with_every_required_value_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    production(
        monkeypatch,
        database_url="postgresql+asyncpg://app@db/reviews",
        nats_url="nats://nats:4222",
        principal_signing_key="a-production-signing-key-0123456789abcdef",
    )
    settings = load_settings(ServiceSettings, "reviews")
    assert settings.env == "production"
    assert not settings.development
    assert settings.database == "postgresql+asyncpg://app@db/reviews"
    assert settings.principal_signing_key.get_secret_value() == "a-production-signing-key-0123456789abcdef"


def test_a_badly_typed_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_GRPC_PORT", "abc")
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings, "reviews")
    assert "COLLABNET_GRPC_PORT" in failure_message(raised)


def test_an_out_of_range_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_GRPC_PORT", "70000")
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings, "reviews")
    assert "COLLABNET_GRPC_PORT" in failure_message(raised)


def test_every_bad_value_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_GRPC_PORT", "abc")
    monkeypatch.setenv("COLLABNET_LOG_LEVEL", "loud")
    monkeypatch.setenv("COLLABNET_MAX_REVIEW_LENGTH", "many")
    with pytest.raises(SettingsError) as raised:
        load_settings(ReviewsSettings, "reviews")
    message = failure_message(raised)
    for variable in ("COLLABNET_GRPC_PORT", "COLLABNET_LOG_LEVEL", "COLLABNET_MAX_REVIEW_LENGTH"):
        assert variable in message


def test_an_unknown_environment_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_ENV", "staging")
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings, "reviews")
    assert "COLLABNET_ENV" in failure_message(raised)


def test_migrate_at_start_defaults_to_true_in_development() -> None:
    assert load_settings(ServiceSettings, "reviews").migrate_at_start is True


def test_migrate_at_start_defaults_to_false_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    production(
        monkeypatch,
        database_url="postgresql+asyncpg://app@db/reviews",
        nats_url="nats://nats:4222",
        principal_signing_key="a-production-signing-key-0123456789abcdef",
    )
    assert load_settings(ServiceSettings, "reviews").migrate_at_start is False


def test_migrate_on_start_overrides_the_default_in_either_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_MIGRATE_ON_START", "false")
    assert load_settings(ServiceSettings, "reviews").migrate_at_start is False
    production(
        monkeypatch,
        database_url="postgresql+asyncpg://app@db/reviews",
        nats_url="nats://nats:4222",
        principal_signing_key="a-production-signing-key-0123456789abcdef",
        migrate_on_start="true",
    )
    assert load_settings(ServiceSettings, "reviews").migrate_at_start is True


def test_overrides_take_precedence_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_GRPC_PORT", "6001")
    assert load_settings(ServiceSettings, "reviews", grpc_port=0).grpc_port == 0


def test_the_service_name_comes_from_the_service_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_SERVICE_NAME", "impostor")
    settings = load_settings(ServiceSettings, "reviews")
    assert settings.service_name == "reviews"
    assert settings.database.endswith("reviews.db")


def test_a_signing_key_shorter_than_32_bytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLABNET_PRINCIPAL_SIGNING_KEY", "too-short")
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings, "reviews")
    assert "COLLABNET_PRINCIPAL_SIGNING_KEY" in failure_message(raised)
    assert "32 bytes" in failure_message(raised)
