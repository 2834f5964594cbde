"""`plivo-tracker doctor`: one line per check of a deployment, with what to do when it fails.

Configuration, database and schema, Plivo credentials (one authenticated read), the sender,
the callback URL Plivo will be given, API keys, the spool, the quarantine, and sending
(paused? messages whose outcome is unknown?). Read-only: it changes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import func, select

from plivo_tracker.composition import open_engine
from plivo_tracker.config import (
    MIN_API_KEY_LENGTH,
    Settings,
    api_keys_problem,
    callback_url_problem,
)
from plivo_tracker.db.dialect import server_problem
from plivo_tracker.db.migrate import current_revision, head_revision
from plivo_tracker.inbound.routes import CALLBACK_PATH
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.messages.models import dispatch_state, messages, quarantine
from plivo_tracker.plivo.client import PlivoClient, SendError

_ALNUM_SENDER = re.compile(r"^[A-Za-z0-9 ]{1,11}$")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # what to do when not ok
    warning: bool = False  # ok, but worth a look


def sender_problem(src: str) -> str | None:
    """Why PLIVO_SRC cannot be a Plivo sender, or None (pure)."""
    if src.startswith("powerpack:"):
        return None if len(src) > len("powerpack:") else "powerpack: needs the Powerpack UUID"
    digits = src.lstrip("+")
    if digits.isdigit():
        return None if 3 <= len(digits) <= 15 else "a number has 3 to 15 digits"
    if _ALNUM_SENDER.match(src) and any(c.isalpha() for c in src):
        return None
    return "neither a number, a short code, an alphanumeric id (≤ 11) nor powerpack:<uuid>"


def callback_checks(settings: Settings) -> list[Check]:
    """The callback URL Plivo will be given, judged as Plivo will use it (pure)."""
    url = settings.public_base_url + CALLBACK_PATH
    checks: list[Check] = []
    parts = urlsplit(settings.public_base_url)
    problem = callback_url_problem(settings.public_base_url)
    if settings.simulator_mode:
        checks.append(Check("callback URL", True, f"{url} (simulator mode: called locally)"))
        return checks
    error = settings.callback_url_error()
    if error:
        checks.append(
            Check(
                "callback URL",
                False,
                error.removeprefix("PUBLIC_BASE_URL: "),
                "set PUBLIC_BASE_URL to the public URL of your proxy or tunnel",
            )
        )
        return checks
    checks.append(Check("callback URL", True, url, warning=bool(problem)))
    if parts.scheme != "https":
        checks.append(
            Check("callback URL uses https", True, "http: callbacks travel in clear", warning=True)
        )
    if parts.port in (80, 443) or (parts.hostname or "") != (parts.netloc.split(":")[0]).lower():
        checks.append(
            Check(
                "callback URL form",
                True,
                "a default port or upper-case host: Plivo signs the URL it calls exactly",
                "write PUBLIC_BASE_URL without :443/:80, host in lower case",
                warning=True,
            )
        )
    return checks


def key_checks(settings: Settings) -> list[Check]:
    """Keys shorter than MIN_API_KEY_LENGTH never get here: the configuration refuses them."""
    problem = api_keys_problem(settings)
    if problem:
        return [
            Check(
                "API keys",
                False,
                problem.removeprefix("API_KEYS: ") + ": the server will not start",
                f"set API_KEYS to one or more random keys of {MIN_API_KEY_LENGTH}+ characters "
                "(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')",
            )
        ]
    if not settings.api_keys:
        return [Check("API keys", True, "none (simulator mode on loopback)", warning=True)]
    return [Check("API keys", True, f"{len(settings.api_keys)} key(s)")]


async def _database_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    async with open_engine(settings) as engine:
        try:
            current = await current_revision(engine)
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return [
                Check(
                    "database",
                    False,
                    f"cannot connect: {type(exc).__name__}: {str(exc)[:160]}",
                    "check DATABASE_URL and that the server runs",
                )
            ]
        checks.append(Check("database", True, settings.database_url.split("://")[0]))
        async with engine.connect() as conn:
            problem = await conn.run_sync(server_problem)
        if problem is not None:
            checks.append(Check("database server", False, problem, "see docs/deploy.md, MariaDB"))
            return checks
        head = head_revision()
        if current is None and settings.is_sqlite:
            checks.append(
                Check("schema", True, "no tables yet: `serve` creates them", warning=True)
            )
            return checks
        if current != head:
            checks.append(
                Check(
                    "schema",
                    False,
                    f"at {current}, head is {head}",
                    "run `plivo-tracker db upgrade` (SQLite: `serve` does it by itself)",
                )
            )
            return checks
        checks.append(Check("schema", True, f"at head ({head})"))
        async with engine.connect() as conn:
            held = (await conn.execute(select(func.count()).select_from(quarantine))).scalar_one()
            paused = (
                await conn.execute(
                    select(dispatch_state.c.paused_by, dispatch_state.c.reason).where(
                        dispatch_state.c.paused.is_(True)
                    )
                )
            ).first()
            unknown = (
                await conn.execute(select(func.count()).where(messages.c.status == "unknown"))
            ).scalar_one()
        checks.append(
            Check(
                "quarantine",
                True,
                f"{held} signed callback(s) kept raw (table `quarantine`)",
                warning=held > 0,
            )
        )
        if paused is not None:
            checks.append(
                Check(
                    "sending",
                    False,
                    f"paused ({paused.paused_by}): {paused.reason}",
                    "fix the cause; an automatic pause resumes by itself, an operator's with "
                    "`plivo-tracker dispatch resume`",
                )
            )
        else:
            checks.append(Check("sending", True, "not paused"))
        if unknown:
            checks.append(
                Check(
                    "unknown outcomes",
                    False,
                    f"{unknown} message(s) whose send could not be confirmed",
                    "`plivo-tracker resolve ID --adopt UUID` or `--resend` (docs/adr/0008)",
                )
            )
    return checks


async def _plivo_checks(settings: Settings) -> list[Check]:
    if settings.simulator_mode:
        return [Check("Plivo credentials", True, "none: simulator mode", warning=True)]
    assert settings.plivo_auth_id
    assert settings.plivo_auth_token
    client = PlivoClient(settings.plivo_api_url, settings.plivo_auth_id, settings.plivo_auth_token)
    try:
        account = await client.get_account()
    except SendError as exc:
        fix = {
            401: "check PLIVO_AUTH_ID and PLIVO_AUTH_TOKEN (Plivo console → API keys)",
            404: "check PLIVO_AUTH_ID and PLIVO_API_URL",
        }.get(exc.status or 0, "check PLIVO_API_URL and the network path to Plivo")
        return [Check("Plivo credentials", False, str(exc)[:200], fix)]
    finally:
        await client.aclose()
    name = account.get("name") or account.get("account_type") or "account"
    return [Check("Plivo credentials", True, f"{settings.plivo_auth_id} ({name})")]


def _sender_checks(settings: Settings) -> list[Check]:
    if not settings.plivo_src:
        if settings.simulator_mode:
            return [Check("sender", True, "simulator's default number", warning=True)]
        return [
            Check(
                "sender",
                True,
                "PLIVO_SRC is not set: every send must give `from`",
                "set PLIVO_SRC to your Plivo number, short code, sender id or powerpack:<uuid>",
                warning=True,
            )
        ]
    problem = sender_problem(settings.plivo_src)
    if problem:
        return [Check("sender", False, f"PLIVO_SRC {problem}", "fix PLIVO_SRC")]
    return [Check("sender", True, f"{settings.plivo_src} (the API does not say more)")]


def _spool_checks(settings: Settings) -> list[Check]:
    path = Path(settings.spool_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        writable = os.access(path, os.W_OK)
    except OSError as exc:
        return [Check("spool", False, f"{path}: {exc}", "make SPOOL_DIR a writable directory")]
    if not writable:
        return [Check("spool", False, f"{path} is not writable", "fix the permissions")]
    pending = len(Spool(str(path)).pending())
    return [
        Check(
            "spool",
            pending == 0,
            f"{path}: {pending} file(s) waiting",
            "the server replays them once the database answers (`plivo-tracker spool replay`)",
        )
    ]


async def run_checks(settings: Settings) -> list[Check]:
    checks = [
        Check(
            "configuration",
            True,
            "simulator mode"
            if settings.simulator_mode
            else f"account {settings.plivo_auth_id}, Plivo at {settings.plivo_api_url}",
        )
    ]
    steps: list[Callable[[Settings], Awaitable[list[Check]]]] = [_database_checks, _plivo_checks]
    for step in steps:
        checks.extend(await step(settings))
    checks.extend(_sender_checks(settings))
    checks.extend(callback_checks(settings))
    checks.extend(key_checks(settings))
    checks.extend(_spool_checks(settings))
    return checks
