"""Where a server's time goes: a py-spy raw profile summed into areas of the callback path.

    python bench/profile_areas.py /tmp/x.txt        # py-spy record ... --format raw -o /tmp/x.txt

Each sampled stack (every thread) goes to the area of its innermost frame that belongs to one,
so a SQLAlchemy statement counts for the code that ran it (the journal append, the projector,
the hub) and a signature check for the callback endpoint. Stacks with no such frame (asyncio
scheduling, the start-up) are "other"; a main-thread stack that ends in the runner is uvloop's
own C code (socket I/O, epoll). py-spy's --nonblocking sampling does not recognise pool threads
blocked on their queue as idle: stacks that end in such a wait are counted apart and left out
of the shares. `bench/callbacks.py --profile` prints this after its serve run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# (area, substrings of a frame "function (file:line)"), innermost match wins; the order only
# matters for a frame that matches two areas.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("COMMIT in the writer thread (fsync; appends and passes)", ("do_commit ",)),
    ("projector pass", ("plivo_tracker/messages/projector.py",)),
    (
        "group commit: journal append (nonces, journal rows)",
        (
            "plivo_tracker/inbound/journal.py",
            "plivo_tracker/inbound/committer.py",
            "plivo_tracker/inbound/repository.py",
        ),
    ),
    ("live hub", ("plivo_tracker/live/",)),
    ("signature (V2/V3)", ("plivo_tracker/plivo/signature.py",)),
    ("form and callback parsing", ("plivo_tracker/plivo/callback.py", "formparsers")),
    (
        "CallbackEndpoint, request id, access layer, item",
        (
            "plivo_tracker/inbound/routes.py",
            "plivo_tracker/inbound/items.py",
            "plivo_tracker/web/",
        ),
    ),
    (
        "API and /metrics (FastAPI, aiosqlite reads)",
        (
            "fastapi/",
            "starlette/",
            "aiosqlite/",
            "prometheus_client/",
            "plivo_tracker/messages/service.py",
            "plivo_tracker/messages/routes.py",
        ),
    ),
    ("uvicorn protocol", ("uvicorn/", "httptools/")),
)
OTHER = "other (asyncio scheduling, logging, ...)"
LOOP_C = "event loop in C (uvloop: sockets, epoll)"
IDLE = "idle"
# Innermost frames of a thread waiting for work.
IDLE_LEAVES = (
    "_connection_worker_thread (aiosqlite/core.py:59)",  # tx.get()
    "_worker (concurrent/futures/thread.py:81)",  # work_queue.get()
    "Condition.wait (threading.py",
)


def area_of(stack: str) -> str:
    frames = stack.split(";")
    if any(frames[-1].startswith(leaf) for leaf in IDLE_LEAVES):
        return IDLE
    if frames[-1].startswith("Runner.run (asyncio/runners.py"):
        return LOOP_C
    for frame in reversed(frames):
        for area, needles in AREAS:
            if any(n in frame for n in needles):
                return area
    return OTHER


def summarise(path: Path) -> tuple[dict[str, int], int]:
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        area = area_of(stack)
        counts[area] = counts.get(area, 0) + int(n)
        total += int(n)
    return counts, total


def report(path: Path) -> list[str]:
    counts, total = summarise(path)
    idle = counts.pop(IDLE, 0)
    busy = total - idle
    if not busy:
        return [f"{path}: no samples"]
    lines = [
        f"py-spy: {busy:,} samples of busy threads (every thread; {idle:,} more of pool threads "
        "waiting for work left out); share per area:"
    ]
    for area, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {n / busy:6.1%}  {area}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    args = parser.parse_args()
    print("\n".join(report(args.raw)))


if __name__ == "__main__":
    main()
