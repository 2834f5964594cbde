"""GET / and /static/*: the dashboard, plain files shipped in the package (no build step)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index(request: Request) -> FileResponse:
    # The page holds no data: everything it shows comes from /api and /ws, which check the key.
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        host = "127.0.0.1"  # never echo a strange Host header into a policy
    headers = {
        "Cache-Control": "no-cache",
        # Only our own scripts, styles and sockets: an injected string could not run or leak.
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return FileResponse(DASHBOARD_DIR / "index.html", headers=headers)


def static_files() -> StaticFiles:
    return StaticFiles(directory=DASHBOARD_DIR / "static")
