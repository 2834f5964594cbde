"""All SQL of the conversations: the newest message of each remote number, one thread, and
which numbers are opted out.

A message's *remote number* is its `from_number` when it came in (`direction = 'inbound'`) and
its `to_number` when we sent it. Threads hold the messages this service received and the ones
it sent (`origin = 'api'`); a message known only from callbacks (a placeholder until a send
adopts it, or one sent from outside this service) is in the message list but in no thread.
Both spellings are E.164 there (a send stores its normalised recipients, inbound messages their
sender), so a thread is one equality on each side, served by the (number, id) indexes of
migration 0004 — no index of its own (EXPLAIN on both databases: tests/api/test_conversations.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    exists,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from plivo_tracker.messages.models import messages
from plivo_tracker.optouts.models import opt_outs

_INBOUND = "inbound"


def _inbound(m: Any) -> ColumnElement[bool]:
    inbound: ColumnElement[bool] = m.c.direction == _INBOUND
    return inbound


def _ours(m: Any) -> ColumnElement[bool]:
    return and_(m.c.direction != _INBOUND, m.c.origin == "api")


def remote_number(m: Any) -> ColumnElement[Any]:
    """The other party of a message: its sender when it came in, its recipient when we sent it."""
    return case((_inbound(m), m.c.from_number), else_=m.c.to_number)


def latest_statement(*, before_id: int | None, limit: int) -> Select[Any]:
    """The newest message of each remote number, newest first (by id), at most `limit`; with
    `before_id`, only numbers whose newest message is older than that id (the cursor).

    Walks messages from the newest down (the primary key) and keeps those with no newer
    message of the same number: two index probes per row walked, and the walk stops after
    `limit` hits, so a page costs about `limit` plus the newer messages of the numbers on it,
    whatever the table holds (deeper pages walk more: ~40 ms at the middle of 200,000 rows).
    """
    m = messages.alias("m")
    newer = messages.alias("newer")
    remote = remote_number(m)
    newer_inbound = exists().where(
        newer.c.from_number == remote, _inbound(newer), newer.c.id > m.c.id
    )
    newer_ours = exists().where(newer.c.to_number == remote, _ours(newer), newer.c.id > m.c.id)
    stmt = (
        select(m)
        .where(or_(_inbound(m), _ours(m)), remote.is_not(None), ~newer_inbound, ~newer_ours)
        .order_by(m.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        stmt = stmt.where(m.c.id < before_id)
    return stmt


def thread_statement(number: str, *, before_id: int | None, limit: int) -> Select[Any]:
    """The newest `limit` messages of `number`'s thread older than `before_id` (all when None),
    newest first (the caller turns the page around).

    Each side (what came from the number, what we sent to it) is read on its own (number, id)
    index, newest first and at most `limit` rows, and the two are merged: one OR over both
    sides made PostgreSQL walk the primary key backwards through every newer message of every
    number (the whole table for a quiet number), and SQLite sort the whole thread."""
    m = messages
    sides = []
    for number_col, side in ((m.c.from_number, _inbound(m)), (m.c.to_number, _ours(m))):
        stmt = select(m).where(number_col == number, side)
        if before_id is not None:
            stmt = stmt.where(m.c.id < before_id)
        sides.append(select(stmt.order_by(m.c.id.desc()).limit(limit).subquery()))
    both = union_all(*sides).subquery()
    return select(both).order_by(both.c.id.desc()).limit(limit)


async def latest_per_number(
    conn: AsyncConnection, *, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    stmt = latest_statement(before_id=before_id, limit=limit)
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def thread(
    conn: AsyncConnection, number: str, *, before_id: int | None, limit: int
) -> list[dict[str, Any]]:
    stmt = thread_statement(number, before_id=before_id, limit=limit)
    return [dict(r) for r in (await conn.execute(stmt)).mappings()]


async def explain(conn: AsyncConnection, number: str) -> dict[str, str]:
    """The database's plan of each query, as text (the tests check they walk indexes)."""
    statements = {
        "latest": latest_statement(before_id=None, limit=51),
        "thread": thread_statement(number, before_id=None, limit=51),
    }
    sqlite = conn.dialect.name == "sqlite"
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "mysql": "EXPLAIN FORMAT=JSON "}.get(
        conn.dialect.name, "EXPLAIN "
    )
    plans: dict[str, str] = {}
    for name, stmt in statements.items():
        compiled = stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        rows = (await conn.exec_driver_sql(prefix + str(compiled))).all()
        plans[name] = "\n".join(str(r[-1] if sqlite else r[0]) for r in rows)
    return plans


# ---- opt-outs ------------------------------------------------------------------------------


async def opted_out(conn: AsyncConnection, numbers: list[str]) -> dict[str, bool]:
    """{number: opted out?} for these numbers (a row in `opt_outs` means opted out)."""
    wanted = sorted(set(numbers))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        stmt = select(opt_outs.c.number).where(opt_outs.c.number.in_(chunk))
        found.update((await conn.execute(stmt)).scalars().all())
    return {n: n in found for n in wanted}
