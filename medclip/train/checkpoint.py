"""Resumable training checkpoints: ``OUT/checkpoints/step-NNNNNNN/``, written atomically, the last N kept.

A checkpoint holds the weights (``model.safetensors``), ``optimizer.pt``, ``trainer_state.pt`` (step, epoch, data
position, scheduler, grad scaler) and one ``rng-rankR.pt`` per process (Python, NumPy, torch CPU/CUDA, the data
loader's generator, the augmentation transforms' NumPy states). Files are written into a temporary directory that
is renamed into place, so a run killed at any moment leaves either the complete checkpoint or none: the newest
``step-*`` directory is always whole. Everything is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medclip.errors import InputError

logger = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d{7,})$")
TMP_PREFIX = ".tmp-"


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def clean_partial(root: str | Path) -> None:
    """Remove temporary directories left by a run killed while writing a checkpoint."""
    root = Path(root)
    for p in root.glob(f"{TMP_PREFIX}*") if root.is_dir() else []:
        logger.info("removing the partial checkpoint %s (a run stopped while writing it)", p)
        shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def begin(root: Path, step: int) -> Path:
    """Create (empty) the temporary directory for the checkpoint of ``step``."""
    tmp = root / f"{TMP_PREFIX}step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, *, keep: int) -> Path:
    """Rename a filled temporary directory into place, then drop all but the newest ``keep`` checkpoints."""
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    final = tmp.parent / tmp.name.removeprefix(TMP_PREFIX)
    if final.exists():  # the same step written again after a resume: replace it
        old = tmp.parent / f"{TMP_PREFIX}old-{final.name}"
        final.rename(old)
        shutil.rmtree(old)
    tmp.rename(final)
    _fsync_dir(final.parent)
    for stale in list_checkpoints(final.parent)[: -max(1, keep)]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def write_main(tmp: Path, *, model, optimizer, trainer_state: dict[str, Any]) -> None:
    """Rank 0's part: weights, optimizer and trainer state (identical on every rank under DDP)."""
    from safetensors.torch import save_model

    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(trainer_state, tmp / "trainer_state.pt")
    summary = {k: v for k, v in trainer_state.items() if isinstance(v, int | float | str)}
    (tmp / "state.json").write_text(json.dumps(summary, indent=2))


def load_main(path: Path, *, model, optimizer, device: torch.device) -> dict[str, Any]:
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=device, weights_only=True))
    return torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)


# -- random number generator states ------------------------------------------------------------------------------
def randomizables(obj: Any) -> list:
    """MONAI ``Randomizable`` objects reachable from ``obj`` (a transform pipeline), in a stable order."""
    from monai.transforms import Randomizable

    found, seen, stack = [], set(), [obj]
    while stack:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, Randomizable):
            found.append(cur)
        if isinstance(cur, list | tuple) and len(cur) < 1000:  # pipelines, not data tables
            stack.extend(reversed(cur))
        elif hasattr(cur, "__dict__") and type(cur).__module__.startswith(("monai.transforms", "medclip.data")):
            stack.extend(reversed(list(vars(cur).values())))
    return found


def _np_state(rs: np.random.RandomState) -> list:
    name, keys, pos, has_gauss, gauss = rs.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]


def _set_np_state(rs: np.random.RandomState, state: list) -> None:
    name, keys, pos, has_gauss, gauss = state
    rs.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def rng_state(*, transforms: Any, device: torch.device) -> dict[str, Any]:
    """This process's random streams (the data order's generator is saved with the data position instead)."""
    py = random.getstate()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": _np_state(np.random.mtrand._rand),
        "torch": torch.get_rng_state(),
        "transforms": [_np_state(t.R) for t in randomizables(transforms)],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], *, transforms: Any, device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    _set_np_state(np.random.mtrand._rand, state["numpy"])
    torch.set_rng_state(state["torch"])
    targets = randomizables(transforms)
    if len(targets) != len(state["transforms"]):
        raise InputError("the augmentation pipeline changed since the checkpoint; cannot resume its random state")
    for t, s in zip(targets, state["transforms"], strict=True):
        _set_np_state(t.R, s)
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
