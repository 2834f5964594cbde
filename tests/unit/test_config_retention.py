"""Retention settings: defaults, bounds, the statistics outliving the messages, one-line errors."""

from __future__ import annotations

import pytest

from plivo_tracker.config import load_settings
from tests.unit.test_config import assert_one_line_naming, clean_env, config_error

__all__ = ["clean_env"]  # autouse: no setting leaks in from the caller's environment


def test_defaults() -> None:
    s = load_settings()
    assert s.retention_days == 90
    assert s.stats_retention_days == 400
    assert s.store_message_text is True
    assert s.purge_interval_seconds == 86_400
    assert s.purge_batch_size == 500
    assert s.erasure is None


def test_env_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_DAYS", "30")
    monkeypatch.setenv("STATS_RETENTION_DAYS", "30")
    monkeypatch.setenv("STORE_MESSAGE_TEXT", "false")
    monkeypatch.setenv("PURGE_INTERVAL_SECONDS", "3600")
    monkeypatch.setenv("PURGE_BATCH_SIZE", "50")
    s = load_settings()
    assert (s.retention_days, s.stats_retention_days) == (30, 30)
    assert s.store_message_text is False
    assert s.erasure is not None
    assert (s.purge_interval_seconds, s.purge_batch_size) == (3600, 50)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RETENTION_DAYS", "0"),
        ("RETENTION_DAYS", "-3"),
        ("RETENTION_DAYS", "90d"),
        ("STATS_RETENTION_DAYS", "0"),
        ("STORE_MESSAGE_TEXT", "maybe"),
        ("PURGE_INTERVAL_SECONDS", "0"),
        ("PURGE_INTERVAL_SECONDS", "abc"),
        ("PURGE_BATCH_SIZE", "0"),
        ("PURGE_BATCH_SIZE", "1000000"),
    ],
)
def test_bad_values_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert_one_line_naming(config_error(), variable)


def test_statistics_may_not_go_before_the_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_DAYS", "500")  # the default 400 of the statistics is shorter
    message = config_error()
    assert_one_line_naming(message, "STATS_RETENTION_DAYS")
    assert "RETENTION_DAYS (500)" in message
    message = config_error(retention_days=30, stats_retention_days=20)
    assert_one_line_naming(message, "STATS_RETENTION_DAYS")
    assert load_settings(retention_days=500, stats_retention_days=500).stats_retention_days == 500
