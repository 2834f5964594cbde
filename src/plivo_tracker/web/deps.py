"""What routes get from the application: settings, engine, committer (typed, via app.state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from plivo_tracker.config import Settings
from plivo_tracker.db.engine import Reader, Writer
from plivo_tracker.inbound.committer import GroupCommitter
from plivo_tracker.inbound.spool import Spool
from plivo_tracker.live.hub import LiveHub
from plivo_tracker.loops import Leadership
from plivo_tracker.messages.projector import Projector
from plivo_tracker.messages.service import StatsCache
from plivo_tracker.outbound.dispatcher import Dispatcher
from plivo_tracker.web.throttle import Throttle


@dataclass(slots=True)
class Context:
    settings: Settings
    engine: AsyncEngine
    writer: Writer
    committer: GroupCommitter
    spool: Spool
    throttle: Throttle
    dispatcher: Dispatcher | None = None
    default_src: str | None = None  # the simulator's number in simulator mode
    hub: LiveHub | None = None
    reader: Reader | None = None  # the live feed's fast reads
    projector: Projector | None = None
    stats_cache: StatsCache = field(default_factory=StatsCache)
    # The jobs this process may lead, by lease name (/ready shows who leads each).
    leaders: dict[str, Leadership] = field(default_factory=dict)


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


ContextDep = Annotated[Context, Depends(get_context)]
