"""pyproject.toml and the hashed lock files agree: every direct dependency is pinned, with
hashes, at a version its lower bound allows; the runtime lock pins what the test lock pins.

When this fails after a change to pyproject.toml: run scripts/lock and commit the lock files.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
# What the lock files are resolved for (scripts/lock: --python-version 3.11) and run on.
ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "os_name": "posix",
}
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+?)(?:\s*;\s*(?P<marker>.+?))?\s*\\?$"
)


class Pin:
    def __init__(self, name: str, version: str, marker: str | None) -> None:
        self.name = canonicalize_name(name)
        self.version = Version(version)
        self.marker = Marker(marker) if marker else None
        self.hashes: list[str] = []

    def applies(self) -> bool:
        return self.marker is None or self.marker.evaluate(ENVIRONMENT)


def parse_lock(text: str) -> list[Pin]:
    """Every `name==version [; marker]` entry with the `--hash` options that follow it."""
    pins: list[Pin] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            if not pins:
                raise ValueError(f"a hash before any pin: {raw!r}")
            pins[-1].hashes.append(line.removeprefix("--hash=").rstrip(" \\"))
            continue
        m = _PIN.match(line)
        if m is None:
            raise ValueError(f"not a pinned requirement: {raw!r}")
        pins.append(Pin(m["name"], m["version"], m["marker"]))
    return pins


def pinned(pins: list[Pin]) -> dict[str, Version]:
    """The version installed here for each name (the entry whose marker applies)."""
    out: dict[str, Version] = {}
    for pin in pins:
        if pin.applies():
            assert pin.name not in out, f"{pin.name} pinned twice for this environment"
            out[pin.name] = pin.version
    return out


def problems(requirements: list[str], pins: list[Pin]) -> list[str]:
    """What is wrong between these pyproject requirements and a lock file's pins."""
    found: list[str] = []
    versions = pinned(pins)
    for pin in pins:
        if not pin.hashes or not all(h.startswith("sha256:") for h in pin.hashes):
            found.append(f"{pin.name}: pinned without sha256 hashes")
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(ENVIRONMENT):
            continue
        name = canonicalize_name(req.name)
        version = versions.get(name)
        if version is None:
            found.append(f"{req.name}: not pinned")
        elif not req.specifier.contains(version, prereleases=True):
            found.append(f"{req.name}: pinned {version}, pyproject wants {req.specifier}")
    return found


def _requirements() -> tuple[list[str], list[str], list[str]]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = list(data["project"]["dependencies"])
    test = list(data["project"]["optional-dependencies"]["test"])
    # The scripts install the project without build isolation: the backend comes from the lock.
    tooling = [*data["build-system"]["requires"], "editables", "pip"]
    return runtime, test, tooling


def test_runtime_lock_pins_every_runtime_dependency_and_the_build_backend() -> None:
    runtime, _, tooling = _requirements()
    assert problems(runtime + tooling, parse_lock(RUNTIME_LOCK.read_text())) == []


def test_test_lock_pins_runtime_test_and_build_dependencies() -> None:
    runtime, test, tooling = _requirements()
    assert problems(runtime + test + tooling, parse_lock(TEST_LOCK.read_text())) == []


def test_what_runs_is_what_ci_tested() -> None:
    """Every package of the runtime lock has the same version in the test lock."""
    runtime = pinned(parse_lock(RUNTIME_LOCK.read_text()))
    test = pinned(parse_lock(TEST_LOCK.read_text()))
    assert {n: (v, test.get(n)) for n, v in runtime.items() if test.get(n) != v} == {}


def test_extras_bring_their_packages() -> None:
    """The extras we ask for are resolved too (limits' async Redis client, uvloop, greenlet)."""
    test = pinned(parse_lock(TEST_LOCK.read_text()))
    assert {"coredis", "uvloop", "httptools", "greenlet"} <= test.keys()


# The checker itself: each of these lock/pyproject pairs must be caught.
_GOOD = """\
starlette==1.10.0 \\
    --hash=sha256:aa \\
    --hash=sha256:bb
    # via fastapi
uvloop==0.23.0 ; sys_platform != 'win32' \\
    --hash=sha256:cc
"""


def test_checker_accepts_a_matching_lock() -> None:
    assert problems(["starlette>=1.5.1", "uvloop>=0.20"], parse_lock(_GOOD)) == []


@pytest.mark.parametrize(
    ("requirement", "lock", "expected"),
    [
        ("starlette>=1.11", _GOOD, "starlette: pinned 1.10.0, pyproject wants >=1.11"),
        ("limits>=5.8", _GOOD, "limits: not pinned"),
        ("starlette>=1.5", "starlette==1.10.0\n", "starlette: pinned without sha256 hashes"),
        # A pin whose marker does not apply here does not count.
        (
            "uvloop>=0.20",
            "uvloop==0.23.0 ; sys_platform == 'win32' \\\n    --hash=sha256:cc\n",
            "uvloop: not pinned",
        ),
    ],
)
def test_checker_catches(requirement: str, lock: str, expected: str) -> None:
    assert expected in problems([requirement], parse_lock(lock))


def test_checker_refuses_an_unpinned_line() -> None:
    with pytest.raises(ValueError, match="not a pinned requirement"):
        parse_lock("starlette>=1.5\n")
