"""Live stream and list: each event records the message's status after it; list indexes;
statistics rollups kept by triggers on messages (GET /api/stats).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import plivo_tracker.db.base  # noqa: F401  (custom column types)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("status_events", sa.Column("message_status", sa.String(16), nullable=True))
    # Events stored before: a change moved the message to the event's status; anything else
    # left it where it was.
    op.execute(
        "UPDATE status_events SET message_status = CASE WHEN effect IN ('applied', "
        "'conflict_won') THEN status ELSE previous_status END"
    )
    op.drop_index("ix_messages_status", table_name="messages")
    op.create_index("ix_messages_status_id", "messages", ["status", "id"])
    op.create_index("ix_messages_to_number_id", "messages", ["to_number", "id"])
    op.create_index("ix_messages_from_number_id", "messages", ["from_number", "id"])
    _create_rollups()


def downgrade() -> None:
    _drop_rollups()
    op.drop_index("ix_messages_from_number_id", table_name="messages")
    op.drop_index("ix_messages_to_number_id", table_name="messages")
    op.drop_index("ix_messages_status_id", table_name="messages")
    op.create_index("ix_messages_status", "messages", ["status"])
    with op.batch_alter_table("status_events", schema=None) as batch_op:
        batch_op.drop_column("message_status")


# ---- statistics rollups (GET /api/stats) ---------------------------------------------------
#
# Counts per minute, hour and day kept by triggers on `messages`, so GET /api/stats reads a few
# thousand small rows instead of every message of the window. The tables are also declared in
# messages/models.py (metadata, autogenerate); the triggers and PostgreSQL's trigger functions
# exist only here.
#
# Rules (tests/integration/test_stats_rollup.py checks them against a GROUP BY over messages):
# - A rollup row counts the messages created in one block of `grain` minutes (1, 60 or 1440)
#   starting at `minute` (minutes since 1970-01-01 UTC, a multiple of `grain`).
# - `origin = 'claim'` rows (a UUID reserved inside a transaction) never count.
# - stats_errors counts only messages with an error code; stats_carriers only those with an MCC
#   (a missing MNC is stored as ''), with total / delivered / failed (failed, undelivered or
#   rejected) counters; stats_latency only our own sends (origin 'api') with sent_at /
#   delivered_at set: bucket_ms = whole milliseconds from created_at (negative: 0) rounded down
#   to 3 significant digits (exact below 1000 ms), so a percentile read from it is < 1 % low.
#   Both databases compute the same integers from the stored microseconds.
# - A change moves a message's contribution: -1 at the old key, +1 at the new one (carriers:
#   a status change within one key adds the difference of the counters). Rows that fall to 0
#   are kept; reads ignore them.
# - SQLite: row triggers per rollup, on INSERT, on DELETE and per UPDATE step (old key out, new
#   key in, carriers' counters), each one INSERT … ON CONFLICT DO UPDATE of the three grains.
#   PostgreSQL: statement triggers with transition tables for INSERT and DELETE (one statement
#   upserts a whole batch, aggregated), one row trigger for UPDATE (the callback batch updates
#   row by row) whose WHEN skips updates that change nothing counted and whose function runs
#   only the upserts due; TRUNCATE empties the rollups. Measured slower for UPDATE: one
#   aggregating statement for all rollups, and one trigger per step.
# - Writers of status changes are serialised on PostgreSQL (docs/adr/0006), so the hot rollup
#   rows (this minute, hour, day) add no lock waits or deadlocks between them.

GRAINS = (1, 60, 1440)
ROLLUPS = ("stats_status", "stats_errors", "stats_carriers", "stats_latency")
FAILED = ("failed", "rejected", "undelivered")  # messages/status.FAILURES at this revision
_POW10 = "'1" + "0" * 18 + "'"


def _rollup_tables() -> None:
    def block() -> list[sa.Column[int]]:
        return [
            sa.Column("grain", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("minute", sa.BigInteger(), autoincrement=False, nullable=False),
        ]

    def counter(name: str = "n") -> sa.Column[int]:
        return sa.Column(name, sa.BigInteger(), nullable=False)

    op.create_table(
        "stats_status",
        *block(),
        sa.Column("status", sa.String(length=16), nullable=False),
        counter(),
        sa.PrimaryKeyConstraint("grain", "minute", "status", name=op.f("pk_stats_status")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stats_errors",
        *block(),
        sa.Column("error_code", sa.String(length=16), nullable=False),
        counter(),
        sa.PrimaryKeyConstraint("grain", "minute", "error_code", name=op.f("pk_stats_errors")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stats_carriers",
        *block(),
        sa.Column("mcc", sa.String(length=8), nullable=False),
        sa.Column("mnc", sa.String(length=8), nullable=False),
        counter("total"),
        counter("delivered"),
        counter("failed"),
        sa.PrimaryKeyConstraint("grain", "minute", "mcc", "mnc", name=op.f("pk_stats_carriers")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "stats_latency",
        *block(),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        counter(),
        sa.PrimaryKeyConstraint(
            "grain", "minute", "kind", "bucket_ms", name=op.f("pk_stats_latency")
        ),
        sqlite_with_rowid=False,
    )


class _Rollup:
    """How one rollup table follows `messages`. SQL snippets use {r} for the row (NEW, OLD or
    an alias); the key "{bucket}" stands for the latency bucket of `latency_of`."""

    def __init__(
        self,
        table: str,
        include: str,  # does the row count here
        keys: tuple[tuple[str, str], ...],  # key columns after (grain, minute)
        values: tuple[tuple[str, str], ...] = (("n", "1"),),  # what one row adds
        moves: tuple[str, ...] = (),  # columns (besides created_at) whose change moves the key
        changes: tuple[str, ...] = (),  # columns whose change only changes the values
        latency_of: str | None = None,  # stats_latency: the timestamp measured
    ) -> None:
        self.table, self.include, self.keys, self.values = table, include, keys, values
        self.moves, self.changes, self.latency_of = ("created_at", *moves), changes, latency_of

    @property
    def key_columns(self) -> list[str]:
        return ["grain", "minute", *(c for c, _ in self.keys)]

    def columns(self) -> list[str]:
        return [*self.key_columns, *(c for c, _ in self.values)]

    def upsert(self, alias: str) -> tuple[str, str]:
        """("INSERT INTO table [AS alias] (…)", "ON CONFLICT … DO UPDATE SET n = n + …").
        SQLite triggers cannot alias the target table (and need not)."""
        into = f"INSERT INTO {self.table}{f' AS {alias}' if alias else ''}"
        sets = ", ".join(
            f"{c} = {f'{alias}.' if alias else ''}{c} + excluded.{c}" for c, _ in self.values
        )
        return (
            f"{into} ({', '.join(self.columns())})",
            f"ON CONFLICT ({', '.join(self.key_columns)}) DO UPDATE SET {sets}",
        )

    def moved(self, is_not: str) -> str:
        """SQL: the row's key may differ between OLD and NEW."""
        return "(" + " OR ".join(f"OLD.{c} {is_not} NEW.{c}" for c in self.moves) + ")"


def _is(status: str, values: Sequence[str]) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    return f"CASE WHEN {status} IN ({listed}) THEN 1 ELSE 0 END"


_ROLLUPS = [
    _Rollup(
        "stats_status", "{r}.origin <> 'claim'", (("status", "{r}.status"),), moves=("status",)
    ),
    _Rollup(
        "stats_errors",
        "{r}.origin <> 'claim' AND {r}.error_code IS NOT NULL",
        (("error_code", "{r}.error_code"),),
        moves=("error_code",),
    ),
    _Rollup(
        "stats_carriers",
        "{r}.origin <> 'claim' AND {r}.mcc IS NOT NULL",
        (("mcc", "{r}.mcc"), ("mnc", "coalesce({r}.mnc, '')")),
        (
            ("total", "1"),
            ("delivered", _is("{r}.status", ["delivered"])),
            ("failed", _is("{r}.status", FAILED)),
        ),
        moves=("mcc", "mnc"),
        changes=("status",),
    ),
    *(
        _Rollup(
            "stats_latency",
            f"{{r}}.origin = 'api' AND {{r}}.{col} IS NOT NULL",
            (("kind", f"'{kind}'"), ("bucket_ms", "{bucket}")),
            moves=(col,),
            latency_of=col,
        )
        for kind, col in (("sent", "sent_at"), ("delivered", "delivered_at"))
    ),
]


def _bucket(ms: str, greatest: str) -> str:
    """Milliseconds rounded down to 3 significant digits: ms / 10^k * 10^k, k = digits - 3."""
    p10 = f"CAST(substr({_POW10}, 1, {greatest}(1, length(CAST({ms} AS TEXT)) - 2)) AS BIGINT)"
    return f"{ms} / {p10} * {p10}"


class _Dialect:
    greatest: str

    def minute(self, r: str) -> str:
        raise NotImplementedError

    def ms(self, r: str, col: str) -> str:
        raise NotImplementedError


class _SQLite(_Dialect):
    """Timestamps are 'YYYY-MM-DD HH:MM:SS.ffffff' UTC text. Whole seconds from strftime over
    the first 16 / 19 characters and the microseconds from the text keep it exact (julianday()
    rounds to milliseconds and is a float)."""

    greatest = "max"

    def minute(self, r: str) -> str:
        return f"(CAST(strftime('%s', substr({r}.created_at, 1, 16)) AS INTEGER) / 60)"

    def _us(self, value: str) -> str:
        return (
            f"(CAST(strftime('%s', substr({value}, 1, 19)) AS INTEGER) * 1000000"
            f" + CAST(substr({value} || '000000', 21, 6) AS INTEGER))"
        )

    def ms(self, r: str, col: str) -> str:
        return f"max(0, ({self._us(f'{r}.{col}')} - {self._us(f'{r}.created_at')}) / 1000)"


class _PostgreSQL(_Dialect):
    """extract(epoch …) is an exact numeric (PostgreSQL 14+)."""

    greatest = "greatest"

    def minute(self, r: str) -> str:
        return f"CAST(floor(extract(epoch FROM {r}.created_at) / 60) AS BIGINT)"

    def ms(self, r: str, col: str) -> str:
        return (
            f"greatest(0, CAST(floor((extract(epoch FROM {r}.{col}) - "
            f"extract(epoch FROM {r}.created_at)) * 1000) AS BIGINT))"
        )


def _row_source(d: _Dialect, rollup: _Rollup, r: str, sign: str, old: str | None = None) -> str:
    """SELECT of one row's contribution (minute m, ms, keys, values × sign); with `old`, the
    values are NEW's minus OLD's (a change that does not move the key)."""
    cols = [f"{d.minute(r)} AS m"]
    if rollup.latency_of:
        cols.append(f"{d.ms(r, rollup.latency_of)} AS ms")
    cols += [f"{sql.format(r=r)} AS {c}" for c, sql in rollup.keys if sql != "{bucket}"]
    for c, sql in rollup.values:
        value = sql.format(r=r) if old is None else f"{sql.format(r=r)} - {sql.format(r=old)}"
        cols.append(f"{sign}({value}) AS {c}")
    return "SELECT " + ", ".join(cols)


def _outer(d: _Dialect, rollup: _Rollup, grain: str) -> list[str]:
    """The rollup's columns over x (a _row_source) and a grain column."""
    keys = [
        _bucket("x.ms", d.greatest) if sql == "{bucket}" else f"x.{c}" for c, sql in rollup.keys
    ]
    return [grain, f"x.m / {grain} * {grain}", *keys]


def _sqlite_upsert(rollup: _Rollup, r: str, sign: str, old: str | None = None) -> str:
    """The row's contribution at the three grains. Computed once in a LIMIT 1 subquery (not
    flattened into the join), the latency costs about a third of repeating it per grain."""
    d = _SQLite()
    cols = [*_outer(d, rollup, "g.column1"), *(f"x.{c}" for c, _ in rollup.values)]
    grains = ", ".join(f"({g})" for g in GRAINS)
    into, conflict = rollup.upsert("")
    return (
        f"{into} SELECT {', '.join(cols)} "
        f"FROM ({_row_source(d, rollup, r, sign, old)} LIMIT 1) AS x, "
        f"(VALUES {grains}) AS g WHERE true {conflict};"
    )


def _steps(rollup: _Rollup, is_not: str) -> list[tuple[str, str, str, str | None]]:
    """UPDATE of messages: (condition, row, sign, old row for a difference) per statement."""
    old_in, new_in = rollup.include.format(r="OLD"), rollup.include.format(r="NEW")
    moved = rollup.moved(is_not)
    steps: list[tuple[str, str, str, str | None]] = [
        (f"({old_in}) AND (NOT ({new_in}) OR {moved})", "OLD", "-", None),
        (f"({new_in}) AND (NOT ({old_in}) OR {moved})", "NEW", "", None),
    ]
    if rollup.changes:
        changed = " OR ".join(
            f"{sql.format(r='OLD')} <> {sql.format(r='NEW')}"
            for _, sql in rollup.values
            if "{r}" in sql
        )
        steps.append(
            (f"({old_in}) AND ({new_in}) AND NOT {moved} AND ({changed})", "NEW", "", "OLD")
        )
    return steps


def _sqlite_triggers() -> list[tuple[str, str]]:
    """(name, CREATE TRIGGER …) per rollup: on insert, on delete, and per UPDATE step."""
    out = []
    for i, rollup in enumerate(_ROLLUPS):
        name = f"trg_{rollup.table}_{i}"
        watched = ", ".join(dict.fromkeys(("origin", *rollup.moves, *rollup.changes)))
        out.append(
            (
                f"{name}_ins",
                f"CREATE TRIGGER {name}_ins AFTER INSERT ON messages "
                f"WHEN {rollup.include.format(r='NEW')} "
                f"BEGIN {_sqlite_upsert(rollup, 'NEW', '')} END",
            )
        )
        out.append(
            (
                f"{name}_del",
                f"CREATE TRIGGER {name}_del AFTER DELETE ON messages "
                f"WHEN {rollup.include.format(r='OLD')} "
                f"BEGIN {_sqlite_upsert(rollup, 'OLD', '-')} END",
            )
        )
        for j, (cond, r, sign, old) in enumerate(_steps(rollup, "IS NOT")):
            out.append(
                (
                    f"{name}_upd{j}",
                    f"CREATE TRIGGER {name}_upd{j} AFTER UPDATE OF {watched} ON messages "
                    f"WHEN {cond} BEGIN {_sqlite_upsert(rollup, r, sign, old)} END",
                )
            )
    return out


def _aggregate(d: _Dialect, rollup: _Rollup, source: str, sign: str = "") -> str:
    """INSERT … SELECT of the summed contributions of the rows of `source` (each times `sign`,
    e.g. "r.sign * "), as an upsert; keys whose contributions cancel out are left alone. In key
    order, so a bulk load (backfill, COPY) lays PostgreSQL's rows out in the order reads want."""
    values = [f"sum(x.{c})" for c, _ in rollup.values]
    grains = " UNION ALL ".join(
        f"SELECT {g}" + (" AS g" if i == 0 else "") for i, g in enumerate(GRAINS)
    )
    outer = _outer(d, rollup, "g.g")
    into, conflict = rollup.upsert("t" if isinstance(d, _PostgreSQL) else "")
    return (
        f"{into} SELECT {', '.join(outer + values)} "
        f"FROM ({_row_source(d, rollup, 'r', sign)} FROM {source} AS r "
        f"WHERE {rollup.include.format(r='r')}) AS x CROSS JOIN ({grains}) AS g "
        f"GROUP BY {', '.join(outer)} HAVING {' OR '.join(f'{v} <> 0' for v in values)} "
        f"ORDER BY {', '.join(outer)} {conflict}"
    )


def _pg_apply(rows: str) -> str:
    """One statement adding `rows` (a SELECT with a `sign` column) to every rollup, with a
    data-modifying CTE per rollup: a statement trigger runs one statement, not one per table."""
    d = _PostgreSQL()
    inserts = [_aggregate(d, rollup, "r", "r.sign * ") for rollup in _ROLLUPS]
    ctes = [f"r AS ({rows})"] + [f"s{i} AS ({sql})" for i, sql in enumerate(inserts[:-1])]
    return "WITH " + ",\n    ".join(ctes) + "\n    " + inserts[-1]


def _pg_upsert(rollup: _Rollup, r: str, sign: str, old: str | None) -> str:
    d = _PostgreSQL()
    cols = [*_outer(d, rollup, "g"), *(f"x.{c}" for c, _ in rollup.values)]
    into, conflict = rollup.upsert("t")
    return (
        f"{into}\n        SELECT {', '.join(cols)}\n"
        f"        FROM ({_row_source(d, rollup, r, sign, old)}) AS x, "
        f"unnest(ARRAY{list(GRAINS)}) AS g\n        {conflict};"
    )


def _pg_functions() -> list[str]:
    def function(name: str, body: str) -> str:
        return (
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n    {body}\n    RETURN NULL;\nEND\n$$"
        )

    steps = [  # UPDATE: only the upserts that apply
        f"IF {cond} THEN\n        {_pg_upsert(rollup, r, sign, old)}\n    END IF;"
        for rollup in _ROLLUPS
        for cond, r, sign, old in _steps(rollup, "IS DISTINCT FROM")
    ]
    return [
        function("stats_rollup_insert", _pg_apply("SELECT 1 AS sign, * FROM new_rows") + ";"),
        function("stats_rollup_delete", _pg_apply("SELECT -1 AS sign, * FROM old_rows") + ";"),
        function("stats_rollup_update", "\n    ".join(steps)),
        function("stats_rollup_truncate", f"TRUNCATE {', '.join(ROLLUPS)};"),
    ]


def _pg_triggers() -> list[str]:
    watched = dict.fromkeys(c for r in _ROLLUPS for c in ("origin", *r.moves, *r.changes))
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in watched)
    return [
        "CREATE TRIGGER trg_stats_rollup_insert AFTER INSERT ON messages "
        "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_rollup_insert()",
        "CREATE TRIGGER trg_stats_rollup_delete AFTER DELETE ON messages "
        "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION stats_rollup_delete()",
        f"CREATE TRIGGER trg_stats_rollup_update AFTER UPDATE OF {', '.join(watched)} ON messages "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION stats_rollup_update()",
        "CREATE TRIGGER trg_stats_rollup_truncate AFTER TRUNCATE ON messages "
        "FOR EACH STATEMENT EXECUTE FUNCTION stats_rollup_truncate()",
    ]


def _create_rollups() -> None:
    _rollup_tables()
    if op.get_context().dialect.name == "postgresql":
        for rollup in _ROLLUPS:  # backfill: what the INSERT trigger would have added
            op.execute(_aggregate(_PostgreSQL(), rollup, "messages", ""))
        for sql in [*_pg_functions(), *_pg_triggers()]:
            op.execute(sql)
    elif op.get_context().dialect.name == "sqlite":
        for rollup in _ROLLUPS:
            op.execute(_aggregate(_SQLite(), rollup, "messages", ""))
        for _, sql in _sqlite_triggers():
            op.execute(sql)
    # MariaDB: none; no database of it predates 0010, which moved the rollups to the projector.


def _drop_rollups() -> None:
    if op.get_context().dialect.name == "postgresql":
        for event in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS trg_stats_rollup_{event} ON messages")
            op.execute(f"DROP FUNCTION IF EXISTS stats_rollup_{event}()")
    elif op.get_context().dialect.name == "sqlite":
        for name, _ in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    for table in reversed(ROLLUPS):
        op.drop_table(table)
