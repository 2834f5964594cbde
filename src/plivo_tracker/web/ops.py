"""/health, /ready and /metrics for orchestrators and Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select, text

from plivo_tracker import metrics
from plivo_tracker.db.migrate import current_revision, head_revision
from plivo_tracker.messages.models import messages
from plivo_tracker.outbound.repository import lease_rows, pause_state
from plivo_tracker.web.deps import Context, ContextDep

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: database reachable and schema at head")
async def ready(ctx: ContextDep) -> JSONResponse:
    head = head_revision()
    try:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        current = await current_revision(ctx.engine)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "detail": type(exc).__name__},
            status_code=503,
        )
    ok = current == head
    dispatch = await ctx.writer.run(pause_state) if ok else None
    # Paused sending is "degraded", not "unavailable": callbacks are still taken (and must be),
    # so an orchestrator must not restart or unroute the process for it.
    status = "unavailable" if not ok else ("degraded" if dispatch and dispatch.paused else "ok")
    body: dict[str, object] = {
        "status": status,
        "database": "ok",
        "schema": {"current": current, "head": head},
        "spool_files": len(ctx.spool.pending()),
    }
    if dispatch is not None:
        body["dispatch"] = dispatch.as_dict()
        if dispatch.paused:
            body["reason"] = f"dispatching paused ({dispatch.paused_by}): {dispatch.reason}"
    if ok and ctx.leaders:
        body["leaders"] = await _leaders(ctx)
    return JSONResponse(body, status_code=200 if ok else 503)


async def _leaders(ctx: Context) -> dict[str, dict[str, object]]:
    """Per job this process may lead: whether it does, and whether any process holds the
    lease now (no leader for up to a few seconds after one died). Owner names stay out: they
    carry host names and process ids, and /ready answers without a key."""
    names = sorted(ctx.leaders)
    async with ctx.engine.connect() as conn:
        rows = {r.name: r for r in await conn.run_sync(lambda c: lease_rows(c, names))}
    now = datetime.now(UTC)
    found: dict[str, dict[str, object]] = {}
    for name in names:
        row = rows.get(name)
        held = row is not None and row.until is not None and row.until > now
        found[name] = {"here": ctx.leaders[name].leading, "held": held}
    return found


# Documented as text/plain (the exposition format), not FastAPI's default application/json:
# clients generated from /openapi.json would otherwise try to parse it as JSON.
@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def prometheus(ctx: ContextDep) -> Response:
    metrics.SPOOL_FILES.set(len(ctx.spool.pending()))
    try:
        async with ctx.engine.connect() as conn:
            unknown = (
                await conn.execute(select(func.count()).where(messages.c.status == "unknown"))
            ).scalar_one()
            paused = (await conn.run_sync(pause_state)).paused
    except Exception:  # noqa: BLE001 - database unreachable: the scrape still answers
        pass  # the last value stays; the spool and /ready tell about the outage
    else:
        metrics.MESSAGES_UNKNOWN.set(unknown)
        metrics.DISPATCH_PAUSED.set(1 if paused else 0)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
