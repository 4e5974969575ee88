"""Training metrics: ``metrics.jsonl`` (one JSON object per logged step) + TensorBoard scalars, rank 0 only."""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def memory_stats(device: torch.device) -> dict[str, float]:
    """Peak memory so far: the CUDA allocator's on GPU, the process's peak resident set on CPU (GiB)."""
    if device.type == "cuda":
        return {"mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"rss_gb": peak / (2**30 if sys.platform == "darwin" else 2**20)}


def truncate_jsonl(path: Path, *, max_step: int) -> None:
    """Drop records after ``max_step`` (a resumed run rewrites the steps its killed predecessor had logged)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError):
            continue  # a line cut short by the kill
    path.write_text("".join(f"{line}\n" for line in kept))


class MetricsLogger:
    """Appends records to ``OUT/metrics.jsonl`` and mirrors numeric fields to TensorBoard (``OUT/tensorboard``).

    ``enabled=False`` (ranks other than 0) makes every call a no-op. ``resume_step`` drops records logged after the
    checkpoint a resumed run starts from, in both the JSONL file and TensorBoard (``purge_step``).
    """

    def __init__(self, out: Path, *, enabled: bool = True, tensorboard: bool = True, resume_step: int = 0) -> None:
        self.enabled, self.writer, self._file = enabled, None, None
        if not enabled:
            return
        path = out / "metrics.jsonl"
        if resume_step:
            truncate_jsonl(path, max_step=resume_step)
        self._file = path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(
                    str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step else None
                )
            except ImportError:  # tensorboard is a dependency, but a stripped install should still train
                logger.warning("tensorboard is not installed; logging to metrics.jsonl only")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
