"""Structured logs: one JSON object per line with service, level, time and trace ids, and no secrets."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from pydantic import SecretStr

from collabnet_kit.logging import REDACTED, configure_logging
from collabnet_kit.principal import Principal, PrincipalSigner

SERVICE = "reviews"
NOISY = ("alembic.runtime.migration", "nats")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo configure_logging: structlog's defaults, the root logger's handlers and levels."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy_levels = {name: logging.getLogger(name).level for name in NOISY}
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, noisy_level in noisy_levels.items():
        logging.getLogger(name).setLevel(noisy_level)


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Every line written to stderr since the last call, each parsed as one JSON object."""
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def only_line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    lines = json_lines(capsys)
    assert len(lines) == 1, lines
    return lines[0]


def json_logger(level: str = "info") -> structlog.stdlib.BoundLogger:
    """Configure JSON logs to the current (captured) stderr and return a structlog logger.

    Called inside the test body: the handler binds ``sys.stderr`` as it is when configured, and
    capsys replaces it only for the test's call phase.
    """
    configure_logging(SERVICE, level, fmt="json")
    logger: structlog.stdlib.BoundLogger = structlog.get_logger("test")
    return logger


def test_a_structlog_event_is_one_json_line_with_service_level_and_timestamp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = json_logger()
    log.info("review_published", review_id="r-1", rating=5)
    line = only_line(capsys)
    assert line["event"] == "review_published"
    assert line["service"] == SERVICE
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
    assert line["review_id"] == "r-1"
    assert line["rating"] == 5


def test_auto_format_renders_json_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(SERVICE, "info", fmt="auto")
    structlog.get_logger("test").info("not on a terminal")
    assert only_line(capsys)["event"] == "not on a terminal"


def test_a_standard_library_record_is_rendered_the_same_way(capsys: pytest.CaptureFixture[str]) -> None:
    json_logger()
    logging.getLogger("grpc.somewhere").warning("channel %s went away", "identity")
    line = only_line(capsys)
    assert line["event"] == "channel identity went away"
    assert line["service"] == SERVICE
    assert line["level"] == "warning"
    assert line["logger"] == "grpc.somewhere"
    assert "timestamp" in line


def test_events_below_the_configured_level_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger("warning")
    log.info("quiet")
    logging.getLogger("lib").info("also quiet")
    log.warning("loud")
    logging.getLogger("lib").error("also loud")
    assert [line["event"] for line in json_lines(capsys)] == ["loud", "also loud"]


def test_alembic_and_nats_info_chatter_is_silenced(capsys: pytest.CaptureFixture[str]) -> None:
    json_logger()
    logging.getLogger("alembic.runtime.migration").info("Running upgrade -> 0001")
    logging.getLogger("nats").info("connected")
    logging.getLogger("nats").warning("reconnecting")
    assert [line["event"] for line in json_lines(capsys)] == ["reconnecting"]


def test_context_variables_bound_for_a_request_appear_on_its_lines_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = json_logger()
    with structlog.contextvars.bound_contextvars(request_id="req-1", session_token="s3cr3t"):
        log.info("inside")
        logging.getLogger("lib").info("inside too")
    log.info("outside")
    inside, inside_too, outside = json_lines(capsys)
    for line in (inside, inside_too):
        assert line["request_id"] == "req-1"
        assert line["session_token"] == REDACTED
    assert "request_id" not in outside


def test_lines_outside_a_span_carry_no_trace_ids(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    log.info("untraced")
    line = only_line(capsys)
    assert "trace_id" not in line
    assert "span_id" not in line


def test_lines_inside_a_span_carry_its_trace_and_span_ids(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner") as span:
        log.info("traced")
        logging.getLogger("lib").info("traced too")
    context = span.get_span_context()
    lines = json_lines(capsys)
    assert len(lines) == 2
    for line in lines:
        assert line["trace_id"] == format(context.trace_id, "032x")
        assert line["span_id"] == format(context.span_id, "016x")


@pytest.mark.parametrize(
    "key", ["api_key", "apiKey", "password", "db_passwd", "token", "authorization", "client_secret", "signing_key"]
)
def test_values_under_secret_keys_are_redacted(capsys: pytest.CaptureFixture[str], key: str) -> None:
    log = json_logger()
    log.info("calling", **{key: "s3cr3t-value"})
    line = only_line(capsys)
    assert line[key] == REDACTED
    assert "s3cr3t-value" not in json.dumps(line)


def test_a_password_inside_a_database_url_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    log.info("connecting", target="connecting to postgresql+asyncpg://app:s3cr3t@db:5432/reviews now")
    line = only_line(capsys)
    assert line["target"] == f"connecting to postgresql+asyncpg://app:{REDACTED}@db:5432/reviews now"


def test_a_password_inside_the_event_text_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    log.info("cannot reach nats://bus:s3cr3t@nats:4222")
    assert only_line(capsys)["event"] == f"cannot reach nats://bus:{REDACTED}@nats:4222"


def test_a_password_in_a_positional_argument_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    log.info("connecting to %s", "postgresql://app:s3cr3t@db/app")
    assert only_line(capsys)["event"] == f"connecting to postgresql://app:{REDACTED}@db/app"


def test_bearer_tokens_inside_text_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    log.info("forwarding", header="Authorization: Bearer xyz.abc-123_def")
    line = only_line(capsys)
    assert line["header"] == f"Authorization: Bearer {REDACTED}"


def test_jwt_looking_strings_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    token = PrincipalSigner("a-signing-key-for-this-test-0123456789").sign(Principal(partner_id="retailer-r"))
    log.info("received", detail=f"token={token} from gateway")
    line = only_line(capsys)
    assert line["detail"] == f"token={REDACTED} from gateway"
    assert token not in json.dumps(line)


def test_secrets_in_nested_dicts_and_lists_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    log.info(
        "request",
        request={
            "headers": {"Authorization": "Bearer abc", "x-request-id": "req-1"},
            "database": {"url": "postgresql://app:s3cr3t@db/app", "password": "s3cr3t"},
            "metadata": [("authorization", "Bearer def"), ("x-partner", "retailer-r")],
        },
    )
    request = only_line(capsys)["request"]
    assert request["headers"] == {"Authorization": REDACTED, "x-request-id": "req-1"}
    assert request["database"] == {"url": f"postgresql://app:{REDACTED}@db/app", "password": REDACTED}
    assert request["metadata"] == [["authorization", f"Bearer {REDACTED}"], ["x-partner", "retailer-r"]]


def test_pydantic_secret_values_are_redacted_under_any_key(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    log.info("settings", database=SecretStr("postgresql://app:s3cr3t@db/app"))
    assert only_line(capsys)["database"] == REDACTED


def test_secrets_in_standard_library_messages_are_masked(capsys: pytest.CaptureFixture[str]) -> None:
    json_logger()
    logging.getLogger("sqlalchemy.engine").warning("connect failed for %s", "postgresql://app:s3cr3t@db/app")
    line = only_line(capsys)
    assert line["event"] == f"connect failed for postgresql://app:{REDACTED}@db/app"


def _fail_holding_a_secret() -> None:
    database_password = "hunter2-in-a-local"
    raise RuntimeError(f"cannot connect with {len(database_password)} characters of password")


def test_an_exception_traceback_does_not_print_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    try:
        _fail_holding_a_secret()
    except RuntimeError:
        log.exception("rpc_failed")
    text = capsys.readouterr().err
    assert "hunter2" not in text
    line = json.loads(text)
    assert line["event"] == "rpc_failed"
    assert line["level"] == "error"
    (exception,) = line["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert [frame["name"] for frame in exception["frames"]][-1] == "_fail_holding_a_secret"


def test_a_standard_library_exception_does_not_print_local_variables(capsys: pytest.CaptureFixture[str]) -> None:
    json_logger()
    try:
        _fail_holding_a_secret()
    except RuntimeError:
        logging.getLogger("grpc.aio").exception("handler failed")
    text = capsys.readouterr().err
    assert "hunter2" not in text
    line = json.loads(text)
    assert line["exception"][0]["exc_type"] == "RuntimeError"


def test_a_secret_in_an_exception_message_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    log = json_logger()
    try:
        raise ConnectionError("cannot reach postgresql://app:s3cr3t@db/app")
    except ConnectionError:
        log.exception("database_unavailable")
    text = capsys.readouterr().err
    assert "s3cr3t" not in text
    assert json.loads(text)["exception"][0]["exc_value"] == f"cannot reach postgresql://app:{REDACTED}@db/app"


def test_console_format_redacts_secrets_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(SERVICE, "info", fmt="console")
    log: structlog.stdlib.BoundLogger = structlog.get_logger("test")
    log.info("calling", api_key="s3cr3t-key", target="postgresql://app:s3cr3t-pw@db/app")
    text = capsys.readouterr().err
    assert "calling" in text
    assert "s3cr3t" not in text
    assert REDACTED in text


def test_console_format_masks_a_password_in_an_exception_message(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(SERVICE, "info", fmt="console")
    log: structlog.stdlib.BoundLogger = structlog.get_logger("test")
    password = "s3cr3t"
    url = f"postgresql://app:{password}@db/app"  # built here so the traceback's source lines hold no secret
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        log.exception("database_unavailable")
    text = capsys.readouterr().err
    assert "database_unavailable" in text
    assert "ConnectionError: cannot reach postgresql://app:" in text
    assert "s3cr3t" not in text
