"""`plivo-tracker simulate`: every fault and scenario knob reaches the simulator it serves.

The server itself is not started: uvicorn.run is replaced by a stub that keeps the app, so the
test reads the simulator's state directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from plivo_tracker import logging as tracker_logging
from plivo_tracker.cli import app
from plivo_tracker.simulator.api import Faults, SimulatedPlivo
from plivo_tracker.simulator.scenario import ScenarioConfig
from tests.conftest import AUTH_ID, MAIN_TOKEN, TOKEN


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Any]:
    """The apps `simulate` would have served, in the simulated account's environment."""
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("PLIVO_AUTH_ID", AUTH_ID)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("PLIVO_MAIN_AUTH_TOKEN", raising=False)
    monkeypatch.setattr(tracker_logging, "configure_logging", lambda fmt, level: None)
    apps: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kwargs: apps.append(asgi))
    return apps


def _simulate(served: list[Any], *args: str) -> SimulatedPlivo:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 0, result.output
    [asgi] = served
    sim: SimulatedPlivo = asgi.state.sim
    return sim


def test_every_knob_reaches_the_simulator(served: list[Any]) -> None:
    sim = _simulate(
        served,
        *("--fail-first", "1", "--fail-status", "503", "--retry-after", "4"),
        *("--fail-after-create", "2", "--timeout-after-create", "3", "--hang-seconds", "1.5"),
        *("--garbage-after-create", "4", "--latency", "0.25"),
        *("--list-per-minute", "5", "--api-per-5s", "0"),
        *("--callback-drop-rate", "0.1", "--sent-final-rate", "0.2"),
        *("--sent-final-prefix", "1555", "--sent-final-prefix", "1604"),
        "--per-part-callbacks",
        *("--signature-mode", "ma", "--main-token", MAIN_TOKEN),
        *("--speed", "50", "--seed", "3"),
    )
    assert sim.faults == Faults(
        fail_first=1,
        fail_status=503,
        retry_after=4,
        latency=0.25,
        fail_after_create=2,
        timeout_after_create=3,
        hang_seconds=1.5,
        garbage_after_create=4,
        list_per_minute=5,
        api_per_5s=0,
    )
    assert sim.emitter is not None
    config = sim.emitter.config
    assert (config.speed, config.callback_drop_rate, config.sent_final_rate) == (50, 0.1, 0.2)
    assert config.sent_final_prefixes == ("1555", "1604")
    assert config.per_part_callbacks is True
    assert sim.emitter.signature_mode == "ma"
    assert "x-plivo-signature-ma-v3" in {
        h.lower() for h in sim.emitter.signed("POST", "https://h/cb", {"A": ["1"]}, "1")
    }


def test_defaults_are_plivos(served: list[Any]) -> None:
    sim = _simulate(served)
    assert sim.faults == Faults()
    assert (sim.faults.list_per_minute, sim.faults.api_per_5s) == (20, 300)
    assert sim.emitter is not None
    assert sim.emitter.config == ScenarioConfig()
    assert sim.emitter.signature_mode == "both"


def test_no_callbacks_serves_the_message_api_only(served: list[Any]) -> None:
    assert _simulate(served, "--no-callbacks").emitter is None


def test_the_main_token_falls_back_to_the_setting(
    served: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLIVO_MAIN_AUTH_TOKEN", MAIN_TOKEN)
    sim = _simulate(served, "--signature-mode", "ma")
    assert sim.emitter is not None
    assert sim.emitter.signature_mode == "ma"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--signature-mode", "v1"], "signature_mode"),
        (["--signature-mode", "ma"], "main_token"),
        (["--sent-final-rate", "0.95"], "exceed"),
        (["--callback-drop-rate", "1.5"], "between 0 and 1"),
        (["--sent-final-prefix", "+1555"], "digits"),
        (["--fail-status", "200"], "fail_status"),
        (["--hang-seconds", "-1"], "hang_seconds"),
        (["--list-per-minute", "-1"], "list_per_minute"),
    ],
)
def test_bad_values_are_refused_in_one_line(
    served: list[Any], args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert served == []


def test_help_describes_the_fault_options(served: list[Any]) -> None:
    result = CliRunner().invoke(app, ["simulate", "--help"], env={"COLUMNS": "240"})
    assert result.exit_code == 0
    for option in (
        "--fail-after-create",
        "--timeout-after-create",
        "--hang-seconds",
        "--garbage-after-create",
        "--callback-drop-rate",
        "--sent-final-rate",
        "--sent-final-prefix",
        "--per-part-callbacks",
        "--signature-mode",
        "--main-token",
        "--list-per-minute",
        "--api-per-5s",
    ):
        assert option in result.output
