"""Settings: every PRODUCT.md variable, validated once at start-up, with one-line errors."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from typing import Annotated, Literal
from urllib.parse import urlsplit

import limits
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from plivo_tracker.messages.phone import text_problem
from plivo_tracker.optouts.keywords import (
    DEFAULT_HELP,
    DEFAULT_OPT_IN,
    DEFAULT_OPT_OUT,
    MAX_KEYWORD_LENGTH,
    normalise_all,
)
from plivo_tracker.outbound.resend import ResendPolicy, parse_codes
from plivo_tracker.retention.rules import Erasure

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/plivo-tracker.db"
MIN_API_KEY_LENGTH = 32
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_HOST_NAME = re.compile(r"[a-z0-9_.\-]+|[0-9a-f:.]+")

# In simulator mode the in-process simulator and the verifier share this account. The id follows
# Plivo's format (20 chars, "MA" prefix) because the SDK and our client enforce it. The token is
# random per process: only the in-process simulator can sign with it.
SIMULATOR_AUTH_ID = "MASIMULATOR000000000"


class ConfigError(Exception):
    """A setting has a bad value; the message is one line naming the variable."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def normal_database_url(value: str) -> str:
    """A database URL as the engine takes it (`postgresql://`, `mariadb://`/`mysql://` and
    `sqlite:///` accepted); ValueError for anything else (DATABASE_URL, `db copy --from/--to`).
    MariaDB URLs get `charset=utf8mb4` (every text, emoji included, round-trips)."""
    if value.startswith(("postgresql://", "postgres://")):
        value = "postgresql+asyncpg://" + value.split("://", 1)[1]
    if value.startswith(("mariadb://", "mysql://", "mariadb+asyncmy://")):
        value = "mysql+asyncmy://" + value.split("://", 1)[1]
    if value.startswith("sqlite:///"):
        value = "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
    if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://", "mysql+asyncmy://")):
        raise ValueError(
            "must be sqlite+aiosqlite:///PATH, postgresql+asyncpg://HOST/DB "
            "or mysql+asyncmy://USER@HOST/DB (MariaDB)"
        )
    if value.startswith("mysql+asyncmy://"):
        base, _, query = value.partition("?")
        params = [p for p in query.split("&") if p and not p.startswith("charset=")]
        value = base + "?" + "&".join(["charset=utf8mb4", *params])
    return value


class Settings(BaseSettings):
    """Configuration from the environment or a `.env` file in the working directory."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,  # VAR= means unset (e.g. PLIVO_AUTH_TOKEN= for simulator mode)
    )

    database_url: str = DEFAULT_DATABASE_URL
    # PgBouncer (docs/deploy.md, "Behind PgBouncer"):
    # "pgbouncer": DATABASE_URL is a PgBouncer in transaction mode (no prepared statements kept
    # across transactions, no session settings). DATABASE_DIRECT_URL: the server itself, for
    # what needs a session of its own (LISTEN, `db upgrade`); default: DATABASE_URL.
    database_pooler: Literal["none", "pgbouncer"] = "none"
    database_direct_url: str | None = Field(default=None, validate_default=True)
    public_base_url: str = "http://127.0.0.1:8000"
    plivo_auth_id: str | None = None
    plivo_auth_token: str | None = None
    plivo_auth_tokens_previous: Annotated[list[str], NoDecode] = Field(default_factory=list)
    plivo_main_auth_token: str | None = None
    # Retired main-account tokens still accepted for the Ma- headers during a rotation.
    plivo_main_auth_tokens_previous: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Which callback signatures count: "any" (V3 or V2, plain or Ma-) or "v3" (V3 only).
    plivo_signature: Literal["any", "v3"] = "any"
    plivo_src: str | None = None
    plivo_api_url: str = "https://api.plivo.com"
    plivo_mps: float = Field(default=5.0, gt=0)
    # How long one call to Plivo may take; a send that times out is ambiguous (reconciled).
    plivo_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Sends in flight at once per dispatching process, and so its kept-alive connections to
    # Plivo (plus 2 for lookups). Plivo mentions 100 concurrent API requests per account.
    plivo_concurrency: int = Field(default=16, ge=1, le=100)
    # What Plivo keeps of each message unless a send says (Plivo's `log`: numbers 90 days,
    # content 7 days with "true").
    plivo_log: Literal["true", "false", "number_only", "content_only"] = "true"
    # Plivo's request limits (plivo-protocol.md §1.4), kept by every worker together.
    plivo_api_per_5s: int = Field(default=300, ge=0, le=100_000)
    plivo_list_per_minute: int = Field(default=20, ge=0, le=10_000)
    # An ambiguous send is looked up this long after it (docs/adr/0008) ...
    reconcile_after_seconds: float = Field(default=120.0, ge=0, le=86_400)
    # ... and after this many undecided lookups it waits for an operator as `unknown`.
    reconcile_max_lookups: int = Field(default=6, ge=1, le=100)
    # The sweeper: a message with no callback this long is looked up with Get Message (Plivo
    # retries a callback for about 7 minutes) ...
    stuck_after_seconds: float = Field(default=1800.0, ge=1, le=30 * 86_400)
    # ... one Plivo still calls `sent` this long after it was sent settles as "sent, no
    # receipt" (carriers without delivery receipts; 6 h) ...
    no_receipt_after_seconds: float = Field(default=21_600.0, ge=1, le=90 * 86_400)
    # ... and it runs this often (one sweeper at a time across processes).
    sweep_interval_seconds: float = Field(default=60.0, gt=0, le=86_400)
    _public_url_given: bool = PrivateAttr(default=False)
    # With credentials, a loopback or private PUBLIC_BASE_URL is refused (Plivo could never
    # call it) unless this says it is on purpose (a lab without a tunnel).
    allow_private_callback_url: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # `serve`: processes serving the port (`serve_workers`); 1 is plenty for a small install.
    # One of them at a time runs the dispatcher (a leader lease).
    workers: int | None = Field(default=None, ge=1, le=512)
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Host names this server answers (HTTP Host header, any port); empty = the host of
    # PUBLIC_BASE_URL plus loopback names. "*" answers any (DNS rebinding is then possible).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Operations endpoints left open even when API keys are set: "docs" (/docs, /openapi.json)
    # and/or "metrics" (/metrics). /health and /ready are always open.
    public_endpoints: Annotated[list[Literal["docs", "metrics"]], NoDecode] = Field(
        default_factory=list
    )
    # Proxies whose X-Forwarded-For / -Proto are believed (the client address that per-address
    # rate limits count); comma-separated addresses or networks, "*" for any.
    forwarded_allow_ips: str = "127.0.0.1"
    # Server limits: connections (HTTP and WebSocket) at once before new ones get 503, and how
    # long an idle keep-alive connection is kept.
    max_connections: int = Field(default=1000, ge=10, le=100_000)
    keepalive_seconds: int = Field(default=5, ge=1, le=300)
    # Request rates (the `limits` library): storage shared by every process that serves
    # (memory:// for one process, redis://HOST:PORT/DB for several), and the limits as
    # "N/second|minute|hour" ("off" turns one off).
    rate_limit_storage: str = "memory://"
    rate_limit_api: str = "1200/minute"
    rate_limit_ws_connect: str = "60/minute"
    rate_limit_auth_failures: str = "30/minute"
    rate_limit_callback_failures: str = "120/minute"
    log_format: Literal["console", "json"] | None = None
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # uvicorn's access line for every request (JSON with the request id, through structlog).
    access_log: bool = True
    # Where the spool keeps callbacks while the database is unreachable (PRODUCT invariant 2).
    spool_dir: str = "./data/spool"
    # Group commit: the most callbacks one transaction takes.
    commit_batch_max: int = Field(default=256, ge=1, le=10_000)
    # Final Plivo error codes after which a message is sent again (outbound/resend.py): empty
    # means the defaults (20, 80: carrier and network "retry later"), "none" turns it off.
    resend_error_codes: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Messages in one resend chain, the original included, and the first backoff (doubling).
    resend_max_attempts: int = Field(default=3, ge=1, le=10)
    resend_backoff_seconds: float = Field(default=60.0, ge=0, le=86_400)
    # Simulator mode only: queue a demo message about every N seconds (0: off; `serve --demo`).
    demo_interval_seconds: float = Field(default=0.0, ge=0, le=3600)
    # Simulator mode only: inbound messages per minute from simulated senders to our number
    # (0: none; they also come on demand: POST /_simulator/inbound, and as demo replies).
    simulator_inbound_per_minute: float = Field(default=0.0, ge=0, le=6000)
    # Live stream: idle heartbeat, frames a slow client may lag before it is dropped, and how
    # often the feed looks for changes other processes committed (besides LISTEN/NOTIFY):
    # unset, `poll_seconds` (1 s, or 0.25 s on MariaDB, which cannot notify).
    live_heartbeat_seconds: float = Field(default=15.0, gt=0, le=3600)
    live_queue_size: int = Field(default=10_000, ge=10, le=1_000_000)
    live_poll_seconds: float | None = Field(default=None, gt=0, le=60)
    # Random per process unless set: the simulator signs with it, the verifier accepts it.
    simulator_auth_token: str = Field(default_factory=lambda: secrets.token_urlsafe(24))
    # Retention (docs/operations.md "Retention"): settled messages with their history, the
    # quarantine, idempotency keys and nonces are deleted after this many days ...
    retention_days: int = Field(default=90, ge=1, le=36_500)
    # ... the statistics rollups after this many (their own, longer retention) ...
    stats_retention_days: int = Field(default=400, ge=1, le=36_500)
    # ... by a purge every PURGE_INTERVAL_SECONDS (one process at a time), this many rows per
    # short transaction so that callbacks never wait long behind it.
    purge_interval_seconds: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    purge_batch_size: int = Field(default=500, ge=1, le=10_000)
    # False: a message's text and media URLs are erased once sending no longer needs them.
    store_message_text: bool = True
    # Opt-outs (docs/operations.md "Opt-outs"): an inbound message that is exactly one of these
    # words (any case; spaces and the punctuation around it ignored) opts its sender out, back
    # in, or asks for help (optouts/keywords.py). No word may be in two lists.
    opt_out_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_OPT_OUT)
    )
    opt_in_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_OPT_IN)
    )
    help_keywords: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_HELP)
    )
    # The answer to a HELP keyword, sent from the number it was sent to; empty: no answer.
    help_text: str = Field(default="", max_length=1600)
    # True: a send that says `"transactional": true` may reach opted-out numbers. Off by
    # default: whether a message is exempt is the operator's decision, not a client's.
    opt_out_transactional_exemption: bool = False

    @field_validator(
        "plivo_auth_tokens_previous",
        "plivo_main_auth_tokens_previous",
        "api_keys",
        "allowed_hosts",
        "public_endpoints",
        "resend_error_codes",
        "opt_out_keywords",
        "opt_in_keywords",
        "help_keywords",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        # A key can send SMS on the account: it must be too long to guess (secrets.token_urlsafe).
        if any(len(key) < MIN_API_KEY_LENGTH for key in value):
            raise ValueError(
                f"every key must be at least {MIN_API_KEY_LENGTH} characters (e.g. "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("opt_out_keywords", "opt_in_keywords", "help_keywords")
    @classmethod
    def _keywords(cls, value: list[str], info: ValidationInfo) -> list[str]:
        words = normalise_all(value)
        long = [w for w in words if len(w) > MAX_KEYWORD_LENGTH]
        if long:
            raise ValueError(f"{long[0]!r} is longer than {MAX_KEYWORD_LENGTH} characters")
        if info.field_name == "opt_out_keywords" and not words:
            raise ValueError("name at least one keyword (STOP must always opt a sender out)")
        # Validated in this order: each list is checked against the ones before it.
        for earlier in ("opt_out_keywords", "opt_in_keywords"):
            if earlier == info.field_name:
                break
            both = [w for w in words if w in info.data.get(earlier, [])]
            if both:
                raise ValueError(f"{both[0]} is in {earlier.upper()} too (one list per word)")
        return words

    @field_validator("help_text")
    @classmethod
    def _help_text(cls, value: str) -> str:
        value = value.strip()
        problem = text_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        hosts = [h.lower().rstrip(".").strip("[]") for h in value]
        bad = [h for h in hosts if h != "*" and not _HOST_NAME.fullmatch(h)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a host name or address (no scheme, no port)")
        return hosts

    @field_validator(
        "rate_limit_api",
        "rate_limit_ws_connect",
        "rate_limit_auth_failures",
        "rate_limit_callback_failures",
    )
    @classmethod
    def _rate(cls, value: str) -> str:
        value = value.strip().lower()
        if value == "off":
            return value
        try:
            limits.parse(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a rate such as 100/minute, 10/second or 1000/hour (or off)"
            ) from None
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_storage(cls, value: str) -> str:
        scheme = value.removeprefix("async+").split("://", 1)[0]
        if scheme not in ("memory", "redis", "rediss") or "://" not in value:
            raise ValueError("must be memory:// or redis://HOST:PORT/DB (rediss:// for TLS)")
        return value

    @field_validator("resend_error_codes")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        codes = [v.strip() for v in value if v.strip()]
        if [c.lower() for c in codes] == ["none"]:
            return ["none"]
        bad = [c for c in codes if not c.isdigit()]
        if bad:
            raise ValueError(f"Plivo error codes are numbers (or 'none'), not {bad[0]!r}")
        return codes

    @field_validator("stats_retention_days")
    @classmethod
    def _stats_outlive_messages(cls, value: int, info: ValidationInfo) -> int:
        # The rollups outlive the messages they count: an older window still has statistics.
        retention = info.data.get("retention_days")
        if retention is not None and value < retention:
            raise ValueError(
                f"must be at least RETENTION_DAYS ({retention}), not {value}: the statistics "
                "outlive the messages they count"
            )
        return value

    @property
    def erasure(self) -> Erasure | None:
        """STORE_MESSAGE_TEXT=false: when a message's text goes (None: texts are kept). With
        resends on, a final failure may still need it, so it stays until the status is final."""
        if self.store_message_text:
            return None
        return Erasure(resends=bool(self.resend_policy.codes))

    @property
    def resend_policy(self) -> ResendPolicy:
        return ResendPolicy(
            codes=parse_codes(self.resend_error_codes),
            max_attempts=self.resend_max_attempts,
            base_delay=self.resend_backoff_seconds,
            cap=max(1800.0, self.resend_backoff_seconds),
        )

    @field_validator("log_format", "log_level", "plivo_log", "plivo_signature", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_public_url(self) -> Settings:
        # Unset: this server's own address, so the simulator's callbacks find it on any PORT.
        self._public_url_given = "public_base_url" in self.model_fields_set
        if not self._public_url_given:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            host = f"[{host}]" if ":" in host else host
            self.public_base_url = f"http://{host}:{self.port}"
        return self

    @field_validator("public_base_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://hooks.example.com")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        # Plivo signs the exact string it called; keep it as written, minus a trailing slash.
        return value.rstrip("/")

    @field_validator("plivo_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        return normal_database_url(value)

    @field_validator("database_direct_url")
    @classmethod
    def _direct_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Validated after DATABASE_URL and DATABASE_POOLER (declared before it), and always
        # (validate_default): DATABASE_POOLER=pgbouncer without it is an error.
        url, pooler = info.data.get("database_url", ""), info.data.get("database_pooler")
        if pooler == "pgbouncer" and not url.startswith("postgresql"):
            raise ValueError("DATABASE_POOLER=pgbouncer needs a PostgreSQL DATABASE_URL")
        if value is None:
            if pooler == "pgbouncer":
                raise ValueError(
                    "required with DATABASE_POOLER=pgbouncer: the PostgreSQL server itself "
                    "(LISTEN hears nothing through PgBouncer in transaction mode)"
                )
            return None
        value = normal_database_url(value)
        if not value.startswith("postgresql") or not url.startswith("postgresql"):
            raise ValueError(
                "only for PostgreSQL (postgresql+asyncpg://HOST/DB, with such a DATABASE_URL)"
            )
        return value

    @property
    def direct_database_url(self) -> str:
        """Where a session of our own is needed (LISTEN, migrations): never through a pooler."""
        return self.database_direct_url or self.database_url

    @field_validator("plivo_auth_id")
    @classmethod
    def _auth_id(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 20 or not value.startswith(("MA", "SA"))):
            raise ValueError("must be 20 characters starting with MA or SA")
        return value

    def callback_url_error(self) -> str | None:
        """With credentials, why Plivo could not call PUBLIC_BASE_URL (one line), or None."""
        if self.simulator_mode:
            return None
        if not self._public_url_given:
            return (
                "PUBLIC_BASE_URL: required with Plivo credentials: the public https URL of this "
                "server (behind your proxy or tunnel) that Plivo will call"
            )
        problem = callback_url_problem(self.public_base_url)
        if problem and not self.allow_private_callback_url:
            return (
                f"PUBLIC_BASE_URL: {self.public_base_url} {problem}: Plivo cannot call it "
                "(use your public URL, or ALLOW_PRIVATE_CALLBACK_URL=true for a lab)"
            )
        return None

    @property
    def hosts(self) -> frozenset[str] | None:
        """Host names answered (lower case, no port), or None for any (ALLOWED_HOSTS=*)."""
        if "*" in self.allowed_hosts:
            return None
        if self.allowed_hosts:
            return frozenset(self.allowed_hosts)
        public = (urlsplit(self.public_base_url).hostname or "").lower()
        return frozenset({public, *LOOPBACK_NAMES} - {""})

    @property
    def simulator_mode(self) -> bool:
        """No Plivo credentials: the in-process simulator stands where api.plivo.com would."""
        return not self.plivo_auth_token

    @property
    def auth_id(self) -> str:
        return self.plivo_auth_id or SIMULATOR_AUTH_ID

    @property
    def account_tokens(self) -> list[str]:
        """Tokens accepted for the plain V2/V3 headers: current first, then retired ones."""
        current = self.plivo_auth_token or self.simulator_auth_token
        return [current, *[t for t in self.plivo_auth_tokens_previous if t != current]]

    @property
    def main_tokens(self) -> list[str]:
        """Tokens accepted for the Ma- headers (plivo-protocol.md §3.1): current first, then
        retired ones."""
        current = self.plivo_main_auth_token
        if current:
            return [current, *[t for t in self.plivo_main_auth_tokens_previous if t != current]]
        return self.account_tokens

    @property
    def serve_workers(self) -> int:
        """WORKERS, or unset: one per CPU core on PostgreSQL and 1 on SQLite, whose writes take
        turns on one file, so that more processes only split the group commits into smaller
        ones (docs/benchmarks.md, "serve --workers")."""
        if self.workers is not None:
            return self.workers
        return 1 if self.is_sqlite else (os.cpu_count() or 1)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_mariadb(self) -> bool:
        return self.database_url.startswith("mysql")

    @property
    def poll_seconds(self) -> float:
        """How often a process looks for work other processes committed (new outbox rows,
        live events) besides being woken: PostgreSQL wakes it with NOTIFY and SQLite has one
        writing process, so once a second is a fallback there; MariaDB has no NOTIFY, so
        polling is how other processes learn of new work at all."""
        return 0.25 if self.is_mariadb else 1.0

    @property
    def live_poll_interval(self) -> float:
        return self.live_poll_seconds or self.poll_seconds

    @property
    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa", ".test")


def api_keys_problem(settings: Settings) -> str | None:
    """Why this app may not run without API keys, or None (pure): keys are required whenever
    real credentials are set (the API can send SMS on the account) or the server listens
    beyond loopback. Simulator mode on loopback stays keyless, so the first command just works."""
    if settings.api_keys:
        return None
    if not settings.simulator_mode:
        return "API_KEYS: required with Plivo credentials (the API sends SMS on the account)"
    if not settings.binds_loopback:
        return f"API_KEYS: required to listen on {settings.host} (only loopback may go keyless)"
    return None


def callback_url_problem(url: str) -> str | None:
    """Why Plivo could not reach `url` from the internet, or None (pure; no DNS lookups)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return "has no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost" or host.endswith(_PRIVATE_SUFFIXES):
            return f"names a local host ({host})"
        if "." not in host:
            return f"names a host without a domain ({host})"
        return None
    if address.is_loopback:
        return f"is a loopback address ({host})"
    if address.is_private or address.is_link_local or address.is_reserved:
        return f"is a private address ({host})"
    if address.is_unspecified or address.is_multicast:
        return f"is not a reachable address ({host})"
    return None


def load_settings(*, serving: bool = False, **overrides: object) -> Settings:
    """Build Settings, turning any validation problem into a one-line ConfigError.

    `serving`: for a process that gives Plivo our callback URL (serve, worker): with
    credentials, that URL must be one Plivo can call."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ())]
        name = loc[0].upper() if loc else "configuration"
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        if not loc:
            raise ConfigError(f"configuration: {msg}") from None
        raise ConfigError(f"{name}: {msg}") from None
    if bool(settings.plivo_auth_id) != bool(settings.plivo_auth_token):
        missing = "PLIVO_AUTH_TOKEN" if settings.plivo_auth_id else "PLIVO_AUTH_ID"
        raise ConfigError(
            f"{missing}: must be set together with "
            f"{'PLIVO_AUTH_ID' if missing == 'PLIVO_AUTH_TOKEN' else 'PLIVO_AUTH_TOKEN'} "
            "(or leave both unset for simulator mode)"
        )
    if serving:
        problem = settings.callback_url_error()
        if problem:
            raise ConfigError(problem)
    return settings
