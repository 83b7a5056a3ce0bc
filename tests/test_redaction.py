"""Redaction by value and by pattern at the choke points (core/redaction.py)."""

from __future__ import annotations

import base64
import logging
import secrets
from pathlib import Path

import pytest

from leviathan_dagster.core import redaction
from leviathan_dagster.core.attempts.artifacts import ArtifactDir
from leviathan_dagster.core.config.project import parse_project_config
from leviathan_dagster.core.errors import ConfigError
from leviathan_dagster.core.events.model import Event
from leviathan_dagster.core.redaction import MASK, RedactingFilter, redact, register_secret


@pytest.fixture(autouse=True)
def clean_registry():
    saved = set(redaction._registered)
    yield
    redaction._registered.clear()
    redaction._registered.update(saved)


def dotted_installation_token() -> str:
    """GitHub's new installation token shape: ghs_ then base64url segments joined by dots (~520 chars)."""
    segments = [base64.urlsafe_b64encode(secrets.token_bytes(n)).decode().rstrip("=") for n in (36, 240, 110)]
    return "ghs_" + ".".join(segments)


def test_a_dotted_installation_token_is_masked_whole():
    token = dotted_installation_token()
    assert len(token) > 480
    out = redact(f"remote: Invalid username or password {token} (end)")
    assert out == f"remote: Invalid username or password {MASK} (end)"
    for segment in token[4:].split("."):
        assert segment not in out


def test_an_anthropic_key_is_masked_by_pattern():
    key = "sk-ant-api03-" + secrets.token_urlsafe(60)
    assert key not in redact(f"invalid x-api-key: {key}")
    assert key not in redact(f'{{"error": "bad key {key}"}}')


def test_a_registered_secret_of_any_shape_is_masked_everywhere():
    value = "plain-canary-" + secrets.token_hex(6)
    assert redact(f"echo: {value}") == f"echo: {value}"
    register_secret(value)
    assert redact(f"echo: {value}!") == f"echo: {MASK}!"
    register_secret("short")  # too short to be a credential: ordinary words stay
    assert redact("a short text") == "a short text"


def test_environment_secrets_are_registered_by_name():
    redaction.register_environment_secrets(
        {"AWS_SECRET_ACCESS_KEY": "aws-canary-value", "MY_CUSTOM": "custom-canary-value", "LANG": "C.UTF-8"},
        names=["MY_CUSTOM"],
    )
    assert redact("aws-canary-value custom-canary-value C.UTF-8") == f"{MASK} {MASK} C.UTF-8"


def test_events_are_redacted_before_they_are_hashed():
    register_secret("event-canary-value")
    event = Event.new(
        "attempt.failed", {"error_summary": "gateway said event-canary-value", "n": 1}, actor_id="w"
    )
    assert event.payload == {"error_summary": f"gateway said {MASK}", "n": 1}


def test_artifacts_are_redacted(tmp_path: Path):
    register_secret("artifact-canary-value")
    artifacts = ArtifactDir(tmp_path / "a")
    artifacts.write_json("result.json", {"summary": "artifact-canary-value"})
    assert "artifact-canary-value" not in (tmp_path / "a" / "result.json").read_text()


def test_log_records_are_redacted(caplog):
    register_secret("log-canary-value")
    logger = logging.getLogger("leviathan.test.redaction")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            logger.info("got %s", "log-canary-value")
    finally:
        logger.filters.clear()
    assert "log-canary-value" not in caplog.text and MASK in caplog.text


TARGET_WITH_COMMAND = """\
targets:
  - id: t
    repo_url: ./t.git
    test_command: {command}
"""


@pytest.mark.parametrize(
    "command",
    [
        '["env", "GITHUB_TOKEN=ghp_0123456789abcdef0123", "pytest"]',
        "\"curl -H 'Authorization: Bearer abcdefabcdef0123' http://x\"",
        '["pytest", "--api-key=sk-ant-api03-abcdefghijklmnopqrstuvwxyz"]',
        '["AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI", "pytest"]',
        '["git", "clone", "https://user:hunter2@example.com/r.git"]',
    ],
)
def test_a_literal_credential_in_test_command_is_a_validation_error(command: str):
    text = TARGET_WITH_COMMAND.format(command=command)
    with pytest.raises(ConfigError) as caught:
        parse_project_config(text, "leviathan.yaml", base_dir=Path("."))
    message = str(caught.value)
    assert "leviathan.yaml:4: target 't': field 'test_command' holds a literal credential" in message
    assert "sandbox" in message
    for secret in ("ghp_0123456789abcdef0123", "abcdefabcdef0123", "wJalrXUtnFEMI", "hunter2"):
        assert secret not in message


CMD = '["python", "-m", "pytest", "-q"]'


def test_an_ordinary_test_command_is_fine():
    config = parse_project_config(TARGET_WITH_COMMAND.format(command=CMD), "x", base_dir=Path("."))
    assert config.targets[0].test_command == ("python", "-m", "pytest", "-q")


def test_variables_that_only_name_a_secret_or_count_tokens_are_not_registered():
    redaction.register_environment_secrets(
        {
            "GITHUB_TOKEN_FILE": "/run/secrets/gh",
            "LEVIATHAN_CLAUDE_MAX_TOKENS": "123456789",
            "API_KEY": "real-key-123",
        }
    )
    assert redact("/run/secrets/gh 123456789 real-key-123") == f"/run/secrets/gh 123456789 {MASK}"
