"""`plivo-tracker doctor` as a user runs it: one line per check, exit 1 when one fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from plivo_tracker.config import load_settings
from plivo_tracker.doctor import callback_checks, key_checks, sender_problem
from tests.conftest import AUTH_ID, TOKEN
from tests.e2e.server import server_cmd


def _doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PLIVO_", "API_KEYS"))}
    full.update(env)
    full.setdefault("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'doctor.db'}")
    return subprocess.run(
        [server_cmd()[0], "doctor"],
        cwd=tmp_path,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_fresh_simulator_install_is_healthy(tmp_path: Path) -> None:
    done = _doctor(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    names = [line.split(":")[0][2:] for line in done.stdout.splitlines()]
    for name in (
        "configuration",
        "database",
        "schema",
        "Plivo credentials",
        "callback URL",
        "API keys",
        "spool",
    ):
        assert name in names, done.stdout


def test_a_real_account_with_problems_gets_one_line_each_with_the_fix(
    tmp_path: Path, live_simulator_process: str
) -> None:
    done = _doctor(
        tmp_path,
        PLIVO_AUTH_ID=AUTH_ID,
        PLIVO_AUTH_TOKEN="wrong-token",
        PLIVO_API_URL=live_simulator_process,
        PUBLIC_BASE_URL="https://hooks.example.com",
        API_KEYS="",
        PLIVO_SRC="not a sender!",
    )
    assert done.returncode == 1
    lines = {line.split(":")[0][2:]: line for line in done.stdout.splitlines()}
    assert lines["Plivo credentials"].startswith("✗")
    assert "PLIVO_AUTH_TOKEN" in lines["Plivo credentials"]
    assert lines["API keys"].startswith("✗")
    assert lines["sender"].startswith("✗")
    assert lines["callback URL"].startswith("✓")
    fixed = _doctor(
        tmp_path,
        PLIVO_AUTH_ID=AUTH_ID,
        PLIVO_AUTH_TOKEN=TOKEN,
        PLIVO_API_URL=live_simulator_process,
        PUBLIC_BASE_URL="https://hooks.example.com",
        API_KEYS="k" * 40,
        PLIVO_SRC="14155550100",
    )
    assert fixed.returncode == 0, fixed.stdout
    assert "✓ Plivo credentials" in fixed.stdout


def test_a_configuration_error_is_one_failed_line(tmp_path: Path) -> None:
    done = _doctor(tmp_path, PLIVO_MPS="fast")
    assert done.returncode == 1
    assert done.stdout.strip().startswith("✗ configuration: PLIVO_MPS")
    assert len(done.stdout.strip().splitlines()) == 1


def test_credentials_without_a_public_url_fail_the_callback_check(tmp_path: Path) -> None:
    done = _doctor(tmp_path, PLIVO_AUTH_ID=AUTH_ID, PLIVO_AUTH_TOKEN=TOKEN)
    assert done.returncode == 1
    lines = {line.split(":")[0][2:]: line for line in done.stdout.splitlines()}
    assert lines["callback URL"].startswith("✗ callback URL: required with Plivo credentials")


def test_pure_checks() -> None:
    assert sender_problem("14155550100") is None
    assert sender_problem("MyBrand") is None
    assert sender_problem("powerpack:abc") is None
    assert sender_problem("x" * 12) is not None
    assert sender_problem("12") is not None
    lab = load_settings(
        plivo_auth_id=AUTH_ID,
        plivo_auth_token=TOKEN,
        public_base_url="https://Hooks.Example.com:443",
        api_keys="k" * 40,
    )
    [url, form] = callback_checks(lab)
    assert url.ok
    assert form.warning
    assert "default port" in form.detail
    assert key_checks(lab)[0].ok
    open_api = load_settings(
        plivo_auth_id=AUTH_ID, plivo_auth_token=TOKEN, public_base_url="https://hooks.example.com"
    )
    assert not key_checks(open_api)[0].ok
