"""The spool: verified callbacks appended and fsynced to local files while the database is down.

One file per failed batch (`<time>-<random>.jsonl`), written to a temporary name, fsynced, renamed
and the directory fsynced, so a file is either complete or absent. The replayer feeds files back
through the same ingestion; nonces make a replay of an already committed item a no-op, so a file
is only deleted after its whole content is committed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from plivo_tracker.inbound.items import CallbackItem, make_item


def _encode(item: CallbackItem) -> dict[str, Any]:
    return {
        "received_at": item.received_at.isoformat(),
        "method": item.method,
        "path": item.path,
        "query": item.query,
        "headers": item.headers,
        "body": base64.b64encode(item.body).decode("ascii"),
        "fields": item.fields if item.event is not None or item.reason is None else None,
        "nonce": item.nonce,
        "nonces": list(item.nonces),
        "scheme": item.scheme,
        "reason": item.reason if item.event is None else None,
        "source": item.source,
    }


def _decode(record: dict[str, Any]) -> CallbackItem:
    # Files written before "nonces" existed carry only "nonce" (make_item adds it to nonces);
    # files written before inbound messages carry no "source": they hold status callbacks.
    return make_item(
        received_at=datetime.fromisoformat(record["received_at"]),
        method=record["method"],
        path=record["path"],
        query=record["query"],
        headers=record["headers"],
        body=base64.b64decode(record["body"]),
        fields=record["fields"],
        nonce=record["nonce"],
        scheme=record["scheme"],
        reason=record["reason"],
        nonces=record.get("nonces") or (),
        source=record.get("source") or "callback",
    )


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _write(self, items: list[CallbackItem]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.jsonl"
        tmp = self.directory / (name + ".tmp")
        data = "".join(json.dumps(_encode(it), ensure_ascii=False) + "\n" for it in items)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.directory / name
        os.replace(tmp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    async def write(self, items: list[CallbackItem]) -> Path:
        """Durably append `items`; returns after the data and the directory entry are fsynced."""
        return await asyncio.to_thread(self._write, items)

    def pending(self) -> list[Path]:
        if not self.directory.exists():
            return []
        return sorted(self.directory.glob("*.jsonl"))

    @staticmethod
    def read(path: Path) -> list[CallbackItem]:
        with open(path, encoding="utf-8") as fh:
            return [_decode(json.loads(line)) for line in fh if line.strip()]

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)
