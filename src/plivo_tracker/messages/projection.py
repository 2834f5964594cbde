"""What a projector pass produces, and the shape of the code that applies journal rows.

Shared by the projector (messages/projector.py) and the appliers of each kind of journal row
(status reports there, our own changes in messages/local_changes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from plivo_tracker.messages.rollups import Deltas
from plivo_tracker.retention.rules import Erasure

# A message of ours that failed with a code the resend policy resends: (message id, code) pairs
# → the ids of the new attempts (outbound/repository.resend, bound to the policy by the
# composition root, so this module needs nothing of the send flow).
Resender = Callable[[Connection, Sequence[tuple[int, str]], datetime], list[int]]


@dataclass(frozen=True, slots=True)
class Change:
    """A status a message took in this pass (what re-sends and erasure look at)."""

    message_id: int
    status: str
    error_code: str | None


@dataclass(slots=True)
class Projection:
    applied: int = 0  # journal rows consumed (skipped unparseable ones included)
    changes: list[Change] = field(default_factory=list)
    resent: list[int] = field(default_factory=list)  # new message ids queued for another attempt
    position: int = 0  # the cursor after the pass
    partial: bool = False  # a pass narrowed to one row: more may follow
    received: list[datetime] = field(default_factory=list)  # when each applied row was acked


# New messages sent to our numbers, in journal order: (message id, from, to, text) → what else
# they cause in the pass's transaction (opt-out keywords, optouts/repository.keyword_hook).
InboundHook = Callable[[Connection, Sequence[tuple[int, str, str, str | None]], datetime], None]


@dataclass(frozen=True, slots=True)
class PassOptions:
    """What the composition root configures about a pass (the appliers' settings)."""

    resend: Resender | None = None
    erasure: Erasure | None = None  # STORE_MESSAGE_TEXT=false
    on_inbound: InboundHook | None = None
    # The pass's statistics: every applier notes the messages it creates, changes, deletes.
    deltas: Deltas = field(default_factory=Deltas)


# What applies a run of journal rows of one kind (in the pass's transaction).
Applier = Callable[[Connection, Sequence[dict[str, Any]], datetime, PassOptions], Projection]
