"""One reject row: ``{"path", "kind", "reason", "detail"}``; every input a scan cannot keep becomes one."""

from __future__ import annotations

from pathlib import Path


def reject(path: Path | str, reason: str, detail: str, kind: str = "image") -> dict:
    return {"path": str(path), "kind": kind, "reason": reason, "detail": detail}
