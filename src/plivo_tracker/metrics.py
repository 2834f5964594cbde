"""Every Prometheus metric, declared once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLBACKS = Counter(
    "plivo_tracker_callbacks_total",
    "Status callbacks by outcome (stored, duplicate, replay, quarantined, spooled, failed).",
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
COMMIT_QUEUE = Gauge(
    "plivo_tracker_commit_queue_depth", "Callbacks waiting for their group commit."
)
SPOOL_FILES = Gauge("plivo_tracker_spool_files", "Spool files waiting to be replayed.")

LIVE_SUBSCRIBERS = Gauge("plivo_tracker_live_subscribers", "WebSocket clients subscribed now.")
LIVE_FRAMES = Counter("plivo_tracker_live_changes", "Status changes published to the live hub.")
LIVE_DROPPED = Counter(
    "plivo_tracker_live_dropped", "WebSocket clients dropped because they read too slowly."
)

DISPATCH_PAUSED = Gauge(
    "plivo_tracker_dispatch_paused",
    "1 while dispatching is paused (Plivo refused the account or address, or an operator).",
)
LEADER = Gauge(
    "plivo_tracker_leader",
    "1 while this process leads the job (one leader per job across processes: the lease).",
    ["job"],
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
