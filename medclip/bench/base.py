"""What a benchmark preset is: a published protocol applied to a dataset in its official distribution layout.

A preset (one module of :mod:`medclip.bench.presets`) declares where the dataset comes from, which paper's protocol
it follows and which tasks it runs, and turns the user's download folder into an :class:`~medclip.ingest.tables.
EvalTable` whose ``split`` column is the protocol's split (``test``, plus ``train`` / ``val`` where the protocol has
them) together with the protocol decisions it applied. Nothing is fetched: a folder that is not the official layout is
refused with the list of what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medclip.errors import InputError
from medclip.ingest.tables import EvalTable, finding_key
from medclip.io.demographics import SUBGROUP_COLUMNS
from medclip.io.tables import read_csv
from medclip.registry import Registry

PROTOCOL_VERSION = 1  # bump when a preset's selection or scoring changes, so older results stop comparing equal


@dataclass
class BenchData:
    """A preset's evaluation table and the protocol decisions that produced it (JSON-able)."""

    table: EvalTable
    decisions: dict = field(default_factory=dict)  # subset selection, split source, label policy, ...
    notes: list[str] = field(default_factory=list)  # what the user should know (rows skipped and why, ...)


@dataclass(frozen=True)
class Preset:
    """A benchmark: the dataset, the protocol it follows and how its table is read.

    ``load(data_dir) -> BenchData`` reads the official layout (after :meth:`check` passed). ``tasks`` are
    ``medclip eval`` task names (zeroshot, retrieval, probe) run on ``split`` (the table's evaluation split);
    ``headline`` names the metric the paper reports (see :func:`medclip.bench.runner.headline`).
    """

    name: str
    title: str
    dataset: str  # the dataset, with where to get it and its licence
    paper: str  # the publication whose protocol this follows
    layout: str  # the folder layout --data must point at, for the error message and the docs
    required: tuple[str, ...]  # paths under --data that must exist; "a|b" accepts either
    load: Callable[[Path], BenchData]
    tasks: tuple[str, ...] = ("zeroshot",)
    prompts: str = "chexpert"  # packaged prompt set the protocol uses
    mode: str = "multilabel"
    findings: tuple[str, ...] = ()  # finding keys scored (the prompt set is cut to these)
    headline: str = "macro_auroc"  # macro_auroc | accuracy | recall@K | probe
    label_policy: str = ""  # how uncertain / blank labels are treated, in one sentence
    modality: str = "cxr"  # cxr | ct: the kind of checkpoint it evaluates
    probe_fractions: tuple[float, ...] = (0.01, 0.1, 1.0)
    retrieval_ks: tuple[int, ...] = (1, 5, 10)
    available: str = ""  # non-empty: why the preset cannot run yet (e.g. it needs a task that has not landed)

    def check(self, data_dir: str | Path) -> Path:
        """The folder, or InputError naming every required path that is missing and how to get the data."""
        root = Path(data_dir)
        if self.available:
            raise InputError(f"bench {self.name}: {self.available}")
        if not root.is_dir():
            raise InputError(f"bench {self.name}: --data {root} is not a folder; {self.layout}")
        missing = self._missing(root)
        if missing:  # --data may be the folder an archive was unpacked into, one level above the release
            inside = [d for d in sorted(root.iterdir()) if d.is_dir() and not self._missing(d)]
            if len(inside) == 1:
                logger.info("bench %s: reading the release in %s", self.name, inside[0])
                return inside[0]
        if missing:
            listed = ", ".join(m.replace("|", " or ") for m in missing)
            raise InputError(f"bench {self.name}: {root} is missing {listed}; {self.layout}")
        return root

    def _missing(self, root: Path) -> list[str]:
        return [spec for spec in self.required if not any((root / alt).exists() for alt in spec.split("|"))]


PRESETS: Registry[Preset] = Registry("benchmark preset")
logger = logging.getLogger(__name__)


def register(preset: Preset) -> Preset:
    PRESETS.register(preset.name)(preset)
    return preset


def read_official_csv(path: Path, columns: Iterable[str], *, what: str) -> pd.DataFrame:
    """A distribution CSV (plain or .gz) that must hold ``columns``; InputError naming the missing ones."""
    if not path.is_file():
        raise InputError(f"{what}: {path} not found")
    df = read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            f"{what}: {path} lacks the columns {missing} of the official release (it has {list(df.columns)})"
        )
    return df


def first_existing(root: Path, spec: str) -> Path:
    """The first of the "a|b" alternatives that exists under root (the first one when none does)."""
    alts = [root / a for a in spec.split("|")]
    return next((p for p in alts if p.exists()), alts[0])


def missing_images(paths: Iterable[str | Path], *, what: str, limit: int = 3) -> None:
    """InputError when listed image files are absent (a partial download), naming a few of them."""
    paths = [str(p) for p in paths]
    absent = [p for p in paths if not Path(p).exists()]
    if absent:
        examples = ", ".join(absent[:limit])
        raise InputError(
            f"{what}: {len(absent)} of {len(paths)} images listed by the release are missing, e.g. {examples}; "
            "finish the download (or unpack every archive part) and run again"
        )


def make_table(
    frame: pd.DataFrame,
    *,
    findings: Iterable[str],
    source: str,
    report_col: str | None = None,
) -> EvalTable:
    """An :class:`EvalTable` from a preset frame with ``image_path``, ``study_id``, ``split``, a column per finding
    (1 / 0 / -1 / NaN; named as the finding keys), optional report text and the subgroup columns it has."""
    frame = frame.reset_index(drop=True)
    findings = [finding_key(f) for f in findings]
    rows = pd.DataFrame(
        {
            "row_id": [f"{source}:{i}" for i in range(len(frame))],
            "image_path": frame["image_path"].astype(str).to_numpy(),
            "study_id": frame["study_id"].astype(str).to_numpy(),
            "split": frame["split"].astype(str).to_numpy(),
            "report": frame[report_col].fillna("").astype(str).to_numpy() if report_col else [""] * len(frame),
        }
    )
    for col in SUBGROUP_COLUMNS:
        if col in frame.columns:
            rows[col] = frame[col].fillna("").astype(str).to_numpy()
    labels = pd.DataFrame({f: pd.to_numeric(frame[f], errors="coerce").to_numpy(dtype=float) for f in findings})
    return EvalTable(rows, labels, source, has_text=report_col is not None)


def subset_hash(table: EvalTable, root: Path) -> str:
    """SHA-256 (16 hex) of the evaluated rows: image paths relative to --data, splits and labels, in a sorted order.

    The same release and protocol give the same hash on any machine; another subset (a different sample, a missing
    image, another label policy) gives another.
    """
    rel = [
        str(Path(p).resolve().relative_to(root.resolve())) if _under(p, root) else str(p)
        for p in table.rows["image_path"]
    ]
    frame = pd.DataFrame({"image": rel, "split": table.rows["split"].to_numpy()})
    for col in sorted(table.labels.columns):
        frame[col] = np.where(np.isnan(table.labels[col].to_numpy()), "", table.labels[col].astype(str))
    payload = frame.sort_values(["split", "image"]).to_csv(index=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def _under(path: str | Path, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def prompts_hash(prompt_set: dict) -> str:
    """SHA-256 (16 hex) of an expanded prompt set (finding -> positive / negative prompts)."""
    return hashlib.sha256(json.dumps(prompt_set, sort_keys=True).encode()).hexdigest()[:16]
