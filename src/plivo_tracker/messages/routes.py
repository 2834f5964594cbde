"""GET /api/messages/{id}: one message with its status, error meaning, parts and timeline."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from plivo_tracker.messages.service import get_message
from plivo_tracker.web.auth import require_api_key
from plivo_tracker.web.deps import ContextDep
from plivo_tracker.web.errors import NotFound

router = APIRouter(prefix="/api", tags=["messages"], dependencies=[Depends(require_api_key)])


@router.get("/messages/{ref}", summary="A message by local id or Plivo MessageUUID")
async def read_message(
    ctx: ContextDep,
    ref: str = Path(description="local id (digits) or Plivo MessageUUID", max_length=64),
) -> dict[str, Any]:
    message = await get_message(ctx.engine, ref)
    if message is None:
        raise NotFound(f"no message with id or MessageUUID {ref!r}")
    return message.model_dump_public()
