"""Tests for plivo_tracker.config: defaults, validation, one-line ConfigError, CLI exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plivo_tracker.config import (
    DEFAULT_DATABASE_URL,
    SIMULATOR_AUTH_ID,
    ConfigError,
    Settings,
    load_settings,
)

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
SUB_AUTH_ID = "SAXXXXXXXXXXXXXXXXXX"
PUBLIC = "https://hooks.example.com"
ENV_NAMES = sorted(name.upper() for name in Settings.model_fields)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting comes from the caller's environment or from a stray .env file."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    return str(info.value)


def assert_one_line_naming(message: str, variable: str) -> None:
    assert "\n" not in message, message
    assert message.startswith(f"{variable}:"), message
    assert len(message) > len(variable) + 2, message


# --- defaults --------------------------------------------------------------------------------


def test_defaults() -> None:
    s = load_settings()
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.is_sqlite
    assert s.public_base_url == "http://127.0.0.1:8000"
    assert s.plivo_auth_id is None
    assert s.plivo_auth_token is None
    assert s.plivo_auth_tokens_previous == []
    assert s.plivo_main_auth_token is None
    assert s.plivo_src is None
    assert s.plivo_api_url == "https://api.plivo.com"
    assert s.plivo_mps == 5.0
    assert s.host == "127.0.0.1"
    assert s.port == 8000
    assert s.api_keys == []
    assert s.log_format is None
    assert s.log_level == "info"
    assert s.commit_batch_max == 256
    assert s.binds_loopback


def test_defaults_are_simulator_mode() -> None:
    s = load_settings()
    assert s.simulator_mode
    assert s.auth_id == SIMULATOR_AUTH_ID
    assert len(SIMULATOR_AUTH_ID) == 20
    assert SIMULATOR_AUTH_ID.startswith("MA")
    assert s.simulator_auth_token
    assert s.account_tokens == [s.simulator_auth_token]
    assert s.main_tokens == [s.simulator_auth_token]


def test_simulator_token_random_per_instance() -> None:
    assert load_settings().simulator_auth_token != load_settings().simulator_auth_token


def test_credentials_leave_simulator_mode() -> None:
    s = load_settings(plivo_auth_id=AUTH_ID, plivo_auth_token="tok", public_base_url=PUBLIC)
    assert not s.simulator_mode
    assert s.auth_id == AUTH_ID
    assert s.account_tokens == ["tok"]


def test_subaccount_auth_id_accepted() -> None:
    s = load_settings(plivo_auth_id=SUB_AUTH_ID, plivo_auth_token="t", public_base_url=PUBLIC)
    assert s.auth_id == SUB_AUTH_ID


# --- bad values: one line, starting with the variable ------------------------------------------

BAD_VALUES = [
    ("PLIVO_MPS", "abc"),
    ("PLIVO_MPS", "0"),
    ("PLIVO_MPS", "-1"),
    ("PORT", "70000"),
    ("PORT", "0"),
    ("PUBLIC_BASE_URL", "ftp://x"),
    ("PUBLIC_BASE_URL", "https://hooks.example.com/?tenant=acme"),
    ("PUBLIC_BASE_URL", "https://hooks.example.com/#frag"),
    ("PUBLIC_BASE_URL", "hooks.example.com"),
    ("DATABASE_URL", "oracle://x"),
    ("PLIVO_API_URL", "api.plivo.com"),
    ("LOG_LEVEL", "loud"),
    ("LOG_FORMAT", "xml"),
    ("COMMIT_BATCH_MAX", "0"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_bad_env_value_is_one_line_naming_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert_one_line_naming(config_error(), variable)


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_bad_keyword_value_is_one_line_naming_variable(variable: str, value: str) -> None:
    assert_one_line_naming(config_error(**{variable.lower(): value}), variable)


def test_bad_numeric_keyword_values() -> None:
    assert_one_line_naming(config_error(plivo_mps=0), "PLIVO_MPS")
    assert_one_line_naming(config_error(port=70000), "PORT")


@pytest.mark.parametrize("auth_id", ["bad", "MA123", "XAXXXXXXXXXXXXXXXXXX", AUTH_ID + "X"])
def test_bad_auth_id(monkeypatch: pytest.MonkeyPatch, auth_id: str) -> None:
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "tok")
    monkeypatch.setenv("PLIVO_AUTH_ID", auth_id)
    message = config_error()
    assert_one_line_naming(message, "PLIVO_AUTH_ID")
    assert "MA" in message
    assert "SA" in message


def test_bad_auth_id_keyword() -> None:
    assert_one_line_naming(
        config_error(plivo_auth_id="bad", plivo_auth_token="tok"), "PLIVO_AUTH_ID"
    )


def test_auth_id_without_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_ID", AUTH_ID)
    message = config_error()
    assert "\n" not in message
    assert "PLIVO_AUTH_TOKEN" in message
    # The variable named first must be one of the two settings involved.
    assert message.split(":", 1)[0] in ("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN"), message


def test_token_without_auth_id_keyword() -> None:
    message = config_error(plivo_auth_token="tok")
    assert "\n" not in message
    assert "PLIVO_AUTH_ID" in message


def test_config_error_is_not_chained() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(plivo_mps="abc")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_dotenv_file_in_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PLIVO_MPS=abc\n", encoding="utf-8")
    assert_one_line_naming(config_error(), "PLIVO_MPS")


# --- good values and normalisation -----------------------------------------------------------


def test_env_values_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_MPS", "2.5")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    s = load_settings()
    assert s.plivo_mps == 2.5
    assert s.port == 9000
    assert s.log_level == "debug"
    assert s.log_format == "json"


def test_keyword_override_beats_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9000")
    assert load_settings(port=9001).port == 9001


# Long enough to be API keys (at least 32 characters).
A, B, C = "a" * 32, "b" * 40, "c" * 33


@pytest.mark.parametrize("variable", ["API_KEYS", "PLIVO_AUTH_TOKENS_PREVIOUS", "ALLOWED_HOSTS"])
def test_comma_list_from_env(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, f"{A}, {B},,{C}")
    assert getattr(load_settings(), variable.lower()) == [A, B, C]


@pytest.mark.parametrize("variable", ["API_KEYS", "PLIVO_AUTH_TOKENS_PREVIOUS", "ALLOWED_HOSTS"])
def test_comma_list_from_keyword(variable: str) -> None:
    assert getattr(load_settings(**{variable.lower(): f"{A}, {B},,{C}"}), variable.lower()) == [
        A,
        B,
        C,
    ]


@pytest.mark.parametrize("value", ["", " , ,"])
def test_empty_comma_list(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("API_KEYS", value)
    assert load_settings().api_keys == []


def test_comma_list_single_value_is_not_json_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", f'["{A}"]')
    assert load_settings().api_keys == [f'["{A}"]']


def test_account_tokens_current_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_ID", AUTH_ID)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "current")
    monkeypatch.setenv("PLIVO_AUTH_TOKENS_PREVIOUS", "old1, current ,old2")
    monkeypatch.setenv("PUBLIC_BASE_URL", PUBLIC)
    s = load_settings()
    assert s.account_tokens == ["current", "old1", "old2"]


def test_main_tokens_fall_back_to_account_tokens() -> None:
    s = load_settings(
        plivo_auth_id=AUTH_ID,
        plivo_auth_token="current",
        plivo_auth_tokens_previous="old",
        public_base_url=PUBLIC,
    )
    assert s.main_tokens == ["current", "old"]
    assert s.main_tokens == s.account_tokens


def test_main_tokens_use_main_token_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_ID", SUB_AUTH_ID)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "sub")
    monkeypatch.setenv("PLIVO_MAIN_AUTH_TOKEN", "main")
    monkeypatch.setenv("PUBLIC_BASE_URL", PUBLIC)
    s = load_settings()
    assert s.main_tokens == ["main"]
    assert s.account_tokens == ["sub"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://h/db", "postgresql+asyncpg://h/db"),
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
        ("sqlite+aiosqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
        ("mariadb://u@h/db", "mysql+asyncmy://u@h/db?charset=utf8mb4"),
        ("mysql://u:p@h:3306/db", "mysql+asyncmy://u:p@h:3306/db?charset=utf8mb4"),
        # a 3-byte utf8 would refuse emoji: always utf8mb4, other options kept
        ("mysql+asyncmy://h/db?charset=utf8&ssl=x", "mysql+asyncmy://h/db?charset=utf8mb4&ssl=x"),
    ],
)
def test_database_url_normalised(monkeypatch: pytest.MonkeyPatch, raw: str, expected: str) -> None:
    monkeypatch.setenv("DATABASE_URL", raw)
    s = load_settings()
    assert s.database_url == expected
    assert s.is_sqlite == expected.startswith("sqlite")


def test_public_base_url_trailing_slash_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://hooks.example.com/")
    assert load_settings().public_base_url == "https://hooks.example.com"
    assert (
        load_settings(public_base_url="https://hooks.example.com/base/").public_base_url
        == "https://hooks.example.com/base"
    )


def test_plivo_api_url_trailing_slash_removed() -> None:
    assert load_settings(plivo_api_url="http://127.0.0.1:9/").plivo_api_url == "http://127.0.0.1:9"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.10", False),
        ("example.com", False),
    ],
)
def test_binds_loopback(monkeypatch: pytest.MonkeyPatch, host: str, loopback: bool) -> None:
    monkeypatch.setenv("HOST", host)
    assert load_settings().binds_loopback is loopback


# --- the CLI: exit 2 with one line -----------------------------------------------------------


def run_serve(tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ENV_NAMES:
        env.pop(name, None)
    # A real deployment (systemd, docker logs) has no terminal; don't let the caller's
    # terminal width leak in.
    env.pop("COLUMNS", None)
    # Should validation wrongly pass, keep the server off shared paths and ports.
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        SPOOL_DIR=str(tmp_path / "spool"),
        PORT="1",
    )
    env.update(env_vars)
    return subprocess.run(
        [sys.executable, "-m", "plivo_tracker", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def nonempty_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_cli_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_serve(tmp_path, PLIVO_MPS="abc")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, lines
    assert "PLIVO_MPS" in lines[0]


def test_cli_public_host_without_api_keys_exits_2(tmp_path: Path) -> None:
    result = run_serve(tmp_path, HOST="0.0.0.0")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, lines
    assert "API_KEYS" in lines[0]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WORKERS": "0"}, "WORKERS"),
        ({"WORKERS": "many"}, "WORKERS"),
        ({"WORKERS": "3", "PLIVO_MPS": "abc"}, "PLIVO_MPS"),
        ({"WORKERS": "3", "HOST": "0.0.0.0"}, "API_KEYS"),  # checked by the app, here first
    ],
    ids=["zero", "not-a-number", "bad-setting", "no-api-keys"],
)
def test_cli_serve_with_workers_refuses_bad_settings_before_any_worker_starts(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    result = run_serve(tmp_path, **env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, lines  # one line: no worker ever started or logged
    assert lines[0].startswith(f"error: {variable}: ")


def test_cli_serve_with_workers_migrates_sqlite_first_and_says_why_it_cannot(
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-file.db").mkdir()
    url = f"sqlite+aiosqlite:///{tmp_path / 'not-a-file.db'}"
    result = run_serve(tmp_path, WORKERS="2", DATABASE_URL=url)
    assert result.returncode == 1, result.stderr
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, lines  # before any worker started
    assert lines[0].startswith("error: DATABASE_URL: cannot migrate the SQLite database (")


def test_workers_default_to_one_per_core_on_postgresql_and_one_on_sqlite() -> None:
    postgres = "postgresql+asyncpg://127.0.0.1/x"
    assert load_settings(database_url=postgres).serve_workers == (os.cpu_count() or 1)
    assert load_settings().serve_workers == 1  # SQLite: writes take turns on one file
    assert load_settings(workers=3).serve_workers == 3
    assert load_settings(database_url=postgres, workers=1).serve_workers == 1


# --- a real account needs a public callback URL --------------------------------------------------


def test_credentials_without_public_base_url_are_refused() -> None:
    assert load_settings(plivo_auth_id=AUTH_ID, plivo_auth_token="t")  # clients need no URL
    with pytest.raises(ConfigError) as err:
        load_settings(serving=True, plivo_auth_id=AUTH_ID, plivo_auth_token="t")
    assert str(err.value).startswith("PUBLIC_BASE_URL: required")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://localhost:8000",
        "https://10.1.2.3",
        "https://192.168.0.10",
        "https://172.16.5.5",
        "http://[::1]:8000",
        "https://169.254.1.1",
        "https://myserver",
        "https://tracker.internal",
        "https://box.local",
    ],
)
def test_credentials_refuse_a_callback_url_plivo_cannot_reach(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            serving=True, plivo_auth_id=AUTH_ID, plivo_auth_token="t", public_base_url=url
        )
    message = str(err.value)
    assert message.startswith("PUBLIC_BASE_URL: ")
    assert "ALLOW_PRIVATE_CALLBACK_URL" in message
    allowed = load_settings(
        serving=True,
        plivo_auth_id=AUTH_ID,
        plivo_auth_token="t",
        public_base_url=url,
        allow_private_callback_url=True,
    )
    assert allowed.public_base_url == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com", "https://abc123.ngrok-free.app", "https://8.8.8.8"]
)
def test_public_callback_urls_are_accepted(url: str) -> None:
    s = load_settings(
        serving=True, plivo_auth_id=AUTH_ID, plivo_auth_token="t", public_base_url=url
    )
    assert s.public_base_url == url


def test_simulator_mode_keeps_its_loopback_default() -> None:
    assert load_settings().public_base_url == "http://127.0.0.1:8000"


@pytest.mark.parametrize(
    "env",
    [{}, {"PUBLIC_BASE_URL": "http://192.168.1.20:8000"}],
    ids=["missing", "private"],
)
def test_cli_serve_with_credentials_needs_a_public_callback_url(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = run_serve(tmp_path, PLIVO_AUTH_ID=AUTH_ID, PLIVO_AUTH_TOKEN="t", **env)
    assert result.returncode == 2, result.stderr
    lines = nonempty_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: PUBLIC_BASE_URL: ")


# --- PgBouncer (DATABASE_POOLER, DATABASE_DIRECT_URL) -----------------------------------------


def test_direct_url_defaults_to_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://h/db")
    s = load_settings()
    assert s.database_pooler == "none"
    assert s.database_direct_url is None
    assert s.direct_database_url == "postgresql+asyncpg://h/db"


def test_pgbouncer_with_direct_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://bouncer:6432/db")
    monkeypatch.setenv("DATABASE_POOLER", "pgbouncer")
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgres://u@db-host/db")
    s = load_settings()
    assert s.database_url == "postgresql+asyncpg://bouncer:6432/db"
    assert s.direct_database_url == "postgresql+asyncpg://u@db-host/db"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        # LISTEN hears nothing through PgBouncer: the direct URL is required with it.
        ({"DATABASE_URL": "postgresql://b:6432/db", "DATABASE_POOLER": "pgbouncer"}, None),
        ({"DATABASE_POOLER": "pgbouncer", "DATABASE_DIRECT_URL": "postgresql://h/db"}, None),
        ({"DATABASE_DIRECT_URL": "postgresql://h/db"}, None),  # SQLite DATABASE_URL
        ({"DATABASE_URL": "postgresql://h/db", "DATABASE_DIRECT_URL": "sqlite:///x.db"}, None),
        ({"DATABASE_URL": "postgresql://h/db", "DATABASE_DIRECT_URL": "mysql://x"}, None),
        ({"DATABASE_URL": "postgresql://h/db", "DATABASE_POOLER": "pgpool"}, "DATABASE_POOLER"),
    ],
)
def test_pooler_settings_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_one_line_naming(config_error(), variable or "DATABASE_DIRECT_URL")
