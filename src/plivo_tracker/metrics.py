"""Every Prometheus metric, declared once, and their exposition.

With `serve --workers N` every worker records into files in PROMETHEUS_MULTIPROC_DIR (`serve`
makes one unless it is set) and /metrics, whichever worker answers, reports all of them
together: counters and histograms summed over every worker that ever ran, gauges as their
`multiprocess_mode` says (over live workers only). Without that variable (one process) each
process reports its own, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

CALLBACKS = Counter(
    "plivo_tracker_callbacks_total",
    "Status callbacks by outcome (stored, duplicate, replay, quarantined, spooled, failed, "
    "set_aside: a journal row the projector could not apply, a report or one of our own "
    "changes); "
    "inbound messages are counted apart (plivo_tracker_inbound_messages_total).",
    ["outcome"],
)
INBOUND = Counter(
    "plivo_tracker_inbound_messages_total",
    "Inbound messages (POST|GET /plivo/inbound) by outcome (stored, duplicate, replay, "
    "quarantined, spooled, failed, set_aside).",
    ["outcome"],
)
SIGNATURE_FAILURES = Counter(
    "plivo_tracker_signature_failures_total",
    "Requests rejected with 403 because no Plivo signature verified.",
    ["reason"],
)
ACK_SECONDS = Histogram(
    "plivo_tracker_callback_ack_seconds",
    "Time from receiving a callback to acknowledging it (includes the durable commit).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
COMMIT_BATCH = Histogram(
    "plivo_tracker_commit_batch_size",
    "Callbacks per group-commit transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
COMMIT_SECONDS = Histogram(
    "plivo_tracker_commit_seconds",
    "Duration of one group-commit transaction.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1),
)
PROJECTED = Counter(
    "plivo_tracker_projected_total",
    "Journal rows applied to messages by the projector.",
)
PROJECTION_SECONDS = Histogram(
    "plivo_tracker_projection_seconds",
    "Duration of one projector pass that applied rows (one transaction).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5),
)
PROJECTION_LAG = Histogram(
    "plivo_tracker_projection_lag_seconds",
    "From a report's acknowledgement to the commit that applied it (visible to readers).",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 30),
)
COMMIT_QUEUE = Gauge(
    "plivo_tracker_commit_queue_depth",
    "Callbacks waiting for their group commit.",
    multiprocess_mode="livesum",
)
# Counted at each scrape (the spool directory is shared by the workers of one host).
SPOOL_FILES = Gauge(
    "plivo_tracker_spool_files",
    "Spool files waiting to be replayed.",
    multiprocess_mode="livemostrecent",
)

LIVE_SUBSCRIBERS = Gauge(
    "plivo_tracker_live_subscribers",
    "WebSocket clients subscribed now.",
    multiprocess_mode="livesum",
)
LIVE_FRAMES = Counter("plivo_tracker_live_changes", "Status changes published to the live hub.")
LIVE_DROPPED = Counter(
    "plivo_tracker_live_dropped", "WebSocket clients dropped because they read too slowly."
)

# Set by the dispatcher, and from the database at each scrape (only the leader's dispatcher
# runs: the other processes' values would be stale otherwise).
DISPATCH_PAUSED = Gauge(
    "plivo_tracker_dispatch_paused",
    "1 while dispatching is paused (Plivo refused the account or address, or an operator).",
    multiprocess_mode="livemostrecent",
)
# Per lease of a leader job (loops.Leadership: "dispatcher", "demo"). Not `job`: Prometheus
# sets that label on every target and would rename ours to `exported_job`. With workers: the
# leaders among them (1, or 0 for the seconds after a leader died).
LEADER = Gauge(
    "plivo_tracker_leader",
    "1 while this process leads the job of this lease (one leader across processes).",
    ["lease"],
    multiprocess_mode="livesum",
)
OPTED_OUT_AT_SEND = Counter(
    "plivo_tracker_sends_opted_out_total",
    "Queued messages failed instead of sent: the recipient opted out while they waited.",
)
RECONCILED = Counter(
    "plivo_tracker_reconciled_total",
    "Lookups of ambiguous sends by result (found, not_found, unknown).",
    ["outcome"],
)
# Counted from the database at each scrape (an indexed count of a handful of rows): the number
# is shared by every process, survives restarts and drops when an operator resolves a message,
# whichever process made it unknown or resolved it.
MESSAGES_UNKNOWN = Gauge(
    "plivo_tracker_messages_unknown",
    "Messages whose send outcome is unknown, waiting for an operator (resolve --adopt/--resend).",
    multiprocess_mode="livemostrecent",
)
SWEPT = Counter(
    "plivo_tracker_swept_total",
    "Stuck messages looked up by the sweeper, by what Plivo said (or no_receipt).",
    ["outcome"],
)
RATE_LIMITED = Counter(
    "plivo_tracker_rate_limited_total",
    "Requests refused with 429 (or WebSocket close 4429) by a rate limit, by limit.",
    ["kind"],
)
RATE_LIMIT_ERRORS = Counter(
    "plivo_tracker_rate_limit_errors_total",
    "Rate-limit storage failures (the request was let through).",
)
REFUSED = Counter(
    "plivo_tracker_refused_total",
    "Requests refused by the access rules, by reason (host, unauthorized, origin, media_type).",
    ["reason"],
)
PURGED = Counter(
    "plivo_tracker_purged_total",
    "Rows deleted by the retention purge, by table.",
    ["table"],
)


def exposition() -> bytes:
    """What /metrics answers: this process's metrics, or every worker's (see above)."""
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return generate_latest()
    forget_dead_workers(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that are gone (a worker killed with SIGKILL cannot do it
    itself): a dead leader must not count as one."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def prepare_worker_metrics(directory: str) -> None:
    """Before the workers start: an empty PROMETHEUS_MULTIPROC_DIR (files of an earlier run
    would add to this one's counters)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
