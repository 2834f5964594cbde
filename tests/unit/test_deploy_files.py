"""The deployment files agree with the code: .env.example lists exactly the settings (with their
defaults), alerts and the dashboard use only metrics the service exports, the systemd units, the
container files and the proxies call commands and routes that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from plivo_tracker import cli, metrics
from plivo_tracker.config import Settings
from plivo_tracker.inbound.routes import CALLBACK_PATH, INBOUND_PATH
from plivo_tracker.live.routes import router as live_router
from plivo_tracker.web.ops import router as ops_router

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)

# ---- .env.example ------------------------------------------------------------------------------

# `NAME=value`, or commented out as `# NAME=value`; prose comments never start with `NAME=`.
_ENV_LINE = re.compile(r"^(?:#\s?)?([A-Z][A-Z0-9_]*)=(.*)$")


def env_example_lines() -> list[tuple[str, str]]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return [(m[1], m[2].strip()) for line in text.splitlines() if (m := _ENV_LINE.match(line))]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No setting from the caller's environment or a stray .env file."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_env_example_lists_every_setting_once() -> None:
    names = [name for name, _ in env_example_lines()]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert sorted(SETTING_NAMES - set(names)) == []


def test_env_example_holds_only_settings() -> None:
    names = {name for name, _ in env_example_lines()}
    assert sorted(names - SETTING_NAMES) == []


def test_env_example_values_are_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    """Uncommenting every line of .env.example as it is changes no setting."""
    baseline = Settings(_env_file=None)  # type: ignore[call-arg]
    given = {name: value for name, value in env_example_lines() if name in SETTING_NAMES and value}
    assert given, "no default written in .env.example"
    for name, value in given.items():
        clean_env.setenv(name, value)
    configured = Settings(_env_file=None)  # type: ignore[call-arg]
    differing = {
        name: (value, getattr(baseline, name.lower()))
        for name, value in given.items()
        if getattr(configured, name.lower()) != getattr(baseline, name.lower())
    }
    assert differing == {}


# ---- metric names in alerts.yml, its promtool tests and the Grafana dashboard -----------------

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exported_series() -> dict[str, str]:
    """Every series name plivo_tracker.metrics exports, with its metric's type."""
    series: dict[str, str] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, MetricWrapperBase):
            for family in collector.describe():
                for suffix in _SUFFIXES[family.type]:
                    series[family.name + suffix] = family.type
    return series


def unknown_metrics(names: set[str]) -> list[str]:
    exported = exported_series()
    return sorted(name for name in names if name not in exported)


def referenced_metrics(promql: str) -> set[str]:
    """Identifiers `plivo_tracker_*` in a PromQL expression (string literals left out)."""
    code = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', promql)
    return set(re.findall(r"\bplivo_tracker_\w*", code))


def _strings_under(node: Any, keys: set[str]) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_strings_under(value, keys))
    elif isinstance(node, list):
        for value in node:
            found.extend(_strings_under(value, keys))
    return found


def load_alerts() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def load_dashboard() -> dict[str, Any]:
    data = json.loads((DEPLOY / "grafana" / "plivo-tracker.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_exported_series_names_match_what_metrics_shows() -> None:
    """The name rules above are prometheus_client's: whatever /metrics shows now is covered."""
    shown = {
        line.split("{")[0].split(" ")[0]
        for line in generate_latest(REGISTRY).decode().splitlines()
        if line.startswith("plivo_tracker_")
    }
    shown = {name for name in shown if not name.endswith("_created")}
    assert "plivo_tracker_spool_files" in shown
    assert "plivo_tracker_commit_seconds_bucket" in shown
    assert sorted(shown - set(exported_series())) == []


def test_the_checker_refuses_names_that_are_not_exported() -> None:
    good = {
        "plivo_tracker_callbacks_total",
        "plivo_tracker_spool_files",
        "plivo_tracker_commit_seconds_bucket",
        "plivo_tracker_commit_batch_size_count",
    }
    bad = {
        "plivo_tracker_nope",
        "plivo_tracker_callbacks",  # a counter without _total
        "plivo_tracker_spool_files_total",  # a gauge is not a counter
        "plivo_tracker_dispatch_paused_bucket",  # nor a histogram
        "plivo_tracker_commit_seconds_total",  # a histogram is not a counter
    }
    assert unknown_metrics(good | bad) == sorted(bad)
    expr = 'sum(rate(plivo_tracker_callbacks_total{outcome="plivo_tracker_x"}[5m]))'
    assert referenced_metrics(expr) == {"plivo_tracker_callbacks_total"}


def test_alert_rules_use_only_exported_metrics() -> None:
    exprs = _strings_under(load_alerts(), {"expr"})
    used = set().union(*(referenced_metrics(e) for e in exprs))
    assert unknown_metrics(used) == []
    # The facts an operator must hear about, each watched by a rule.
    assert {
        "plivo_tracker_spool_files",
        "plivo_tracker_callbacks_total",  # failed, quarantined
        "plivo_tracker_signature_failures_total",
        "plivo_tracker_dispatch_paused",
        "plivo_tracker_messages_unknown",
        "plivo_tracker_swept_total",
        "plivo_tracker_commit_seconds_bucket",
    } <= used


def test_promtool_rule_tests_use_only_exported_metrics() -> None:
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text("utf-8"))
    series = _strings_under(tests, {"series"})
    assert series
    used = set().union(*(referenced_metrics(s) for s in series))
    assert unknown_metrics(used) == []


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = load_dashboard()
    queries = _strings_under(dashboard, {"expr", "query", "definition"})
    used = set().union(*(referenced_metrics(q) for q in queries))
    assert unknown_metrics(used) == []
    assert {
        "plivo_tracker_callbacks_total",
        "plivo_tracker_callback_ack_seconds_bucket",
        "plivo_tracker_commit_batch_size_bucket",
        "plivo_tracker_commit_queue_depth",
        "plivo_tracker_spool_files",
        "plivo_tracker_dispatch_paused",
        "plivo_tracker_reconciled_total",
        "plivo_tracker_swept_total",
        "plivo_tracker_signature_failures_total",
    } <= used


_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def test_alerts_have_the_prometheus_rule_group_shape() -> None:
    data = load_alerts()
    assert set(data) == {"groups"}
    groups = data["groups"]
    assert isinstance(groups, list)
    assert groups
    assert len({g["name"] for g in groups}) == len(groups)
    alerts: list[str] = []
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit"}, group.keys()
        assert isinstance(group["rules"], list)
        assert group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= _RULE_KEYS, rule
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            if "record" in rule:
                continue
            alerts.append(rule["alert"])
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            if "for" in rule:
                assert _DURATION.match(str(rule["for"])), rule["for"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])
    assert len(alerts) == len(set(alerts)), alerts


def test_dashboard_is_a_grafana_dashboard() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "plivo_tracker_" in target["expr"], panel["title"]


# ---- commands and routes the deployment files rely on ------------------------------------------

ROOT_COMMAND = typer.main.get_command(cli.app)


def cli_command_exists(args: list[str]) -> bool:
    """`args` (after the program name) starts with a runnable plivo-tracker command (a group,
    such as `db`, has sub-`commands` and is not runnable)."""
    command: Any = ROOT_COMMAND
    for arg in args:
        if arg.startswith("-") or not hasattr(command, "commands"):
            break
        command = command.commands.get(arg)
        if command is None:
            return False
    return not hasattr(command, "commands")


def test_the_command_checker_refuses_what_does_not_exist() -> None:
    assert cli_command_exists(["serve"])
    assert cli_command_exists(["db", "upgrade"])
    assert cli_command_exists(["serve", "--port", "8000"])
    assert not cli_command_exists(["db"])  # a group, not a command
    assert not cli_command_exists(["db", "migrate"])
    assert not cli_command_exists(["server"])


def unit_entries(name: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a systemd unit file, in order (keys may repeat)."""
    entries: list[tuple[str, str, str]] = []
    section = ""
    for raw in (DEPLOY / "systemd" / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def _exec_args(value: str) -> list[str]:
    """An Exec*= command line as arguments after the plivo-tracker program."""
    program, *args = value.lstrip("-@:+!").split()
    assert Path(program).name == "plivo-tracker", value
    return args


def _uvicorn_graceful_seconds() -> int:
    seconds = cli.server_options(Settings(_env_file=None))["timeout_graceful_shutdown"]  # type: ignore[call-arg]
    assert isinstance(seconds, int), "serve sets no graceful shutdown: check TimeoutStopSec"
    return seconds


@pytest.mark.parametrize(
    ("unit", "command"),
    [("plivo-tracker.service", ["serve"]), ("plivo-tracker-worker.service", ["worker"])],
)
def test_systemd_units_run_existing_commands_safely(unit: str, command: list[str]) -> None:
    entries = unit_entries(unit)
    service = {}
    for section, key, value in entries:
        if section == "Service":
            service.setdefault(key, []).append(value)
    execs = [_exec_args(v) for k in ("ExecStartPre", "ExecStart") for v in service.get(k, [])]
    assert execs
    assert all(cli_command_exists(args) for args in execs), execs
    assert [_exec_args(v) for v in service["ExecStart"]] == [command]
    if command == ["serve"]:
        assert ["db", "upgrade"] in [_exec_args(v) for v in service["ExecStartPre"]]
    single = {key: values[-1] for key, values in service.items()}
    assert single["User"] not in ("root", "0")
    assert single["EnvironmentFile"] == "/etc/plivo-tracker/env"
    assert single["Restart"] == "on-failure"
    assert single["KillSignal"] == "SIGTERM"
    assert int(single["TimeoutStopSec"]) > _uvicorn_graceful_seconds()
    assert single["NoNewPrivileges"] == "yes"
    assert single["ProtectSystem"] == "strict"
    assert single["ProtectHome"] == "yes"
    assert single["PrivateTmp"] == "yes"
    assert single["WorkingDirectory"] in single["ReadWritePaths"].split()


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line and not line.startswith("#")
    ]


def test_container_image_runs_existing_commands_as_a_user() -> None:
    text = (DEPLOY / "container" / "Containerfile").read_text(encoding="utf-8")
    instructions = _dockerfile_instructions(text)
    final = {}  # the last stage's ENTRYPOINT, CMD, USER, HEALTHCHECK
    for name, value in instructions:
        final[name] = value
    assert json.loads(final["ENTRYPOINT"]) == ["plivo-tracker"]
    assert cli_command_exists(json.loads(final["CMD"]))
    assert final["USER"].split(":")[0] not in ("root", "0")
    assert "/health" in final["HEALTHCHECK"]
    assert "/health" in [getattr(r, "path", None) for r in ops_router.routes]
    assert "pip install --require-hashes -r requirements.lock" in text
    assert "pip install --no-deps ." in text
    assert [v for n, v in instructions if n == "FROM"][-1].startswith("python:3.11-slim")
    # What the build copies from the context is not left out by .dockerignore.
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    copied = [
        source.rstrip("*")
        for name, value in instructions
        if name == "COPY" and "--from" not in value
        for source in value.split()[:-1]
    ]
    assert copied
    assert sorted(s for s in copied if f"!{s}" not in ignore and f"!{s}/" not in ignore) == []


def test_compose_services_run_existing_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text("utf-8"))
    commands = {
        name: service["command"]
        for name, service in compose["services"].items()
        if "command" in service
    }
    assert commands == {"migrate": ["db", "upgrade"], "serve": ["serve"], "worker": ["worker"]}
    assert all(cli_command_exists(args) for args in commands.values())
    # A worker has no HTTP port: the image's /health check must not mark it unhealthy.
    assert compose["services"]["worker"]["healthcheck"] == {"disable": True}


def _app_paths() -> set[str]:
    paths = {getattr(r, "path", "") for r in [*ops_router.routes, *live_router.routes]}
    return paths | {CALLBACK_PATH, INBOUND_PATH}


def test_nginx_passes_paths_through_to_existing_routes() -> None:
    conf = (DEPLOY / "proxy" / "nginx.conf").read_text(encoding="utf-8")
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    exact = set(re.findall(r"location\s+=\s+(\S+)", code))
    assert {CALLBACK_PATH, INBOUND_PATH, "/ws", "/metrics"} <= exact
    assert exact <= _app_paths()
    # Plivo signs the URL it called: proxy_pass without a URI part, no rewrites.
    passes = re.findall(r"proxy_pass\s+([^;]+);", code)
    assert passes
    assert all(re.fullmatch(r"https?://[^/]+", p) for p in passes), passes
    assert not re.search(r"^\s*rewrite\s", code, re.MULTILINE)
    assert "client_max_body_size 128k;" in code
    assert "proxy_set_header Host $host;" in code


def test_caddy_passes_paths_through() -> None:
    conf = (DEPLOY / "proxy" / "Caddyfile").read_text(encoding="utf-8")
    code = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    assert "reverse_proxy" in code
    for directive in ("rewrite", "uri", "handle_path", "strip_prefix", "header_up Host"):
        assert not re.search(rf"^\s*{directive}\b", code, re.MULTILINE), directive
    assert re.search(r"max_size\s+128KB", code)
    assert set(re.findall(r"\bpath\s+(\S+)", code)) <= _app_paths()
