"""Reading and writing a manifest folder: ``manifest.parquet/`` (a partitioned parquet dataset), ``rejects.parquet``,
``manifest.meta.json`` and ``split_history.parquet``, in a local folder or at an object-storage URL.

Readers take only what they need (``columns``, ``splits``, pyarrow ``filters``), so training, ``prepare`` and
``index build`` never hold more of a large manifest than their split or their two columns.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medclip.ingest.splits import HISTORY_NAME, merge_history
from medclip.io import storage
from medclip.io.demographics import SUBGROUP_COLUMNS
from medclip.io.tables import read_json, read_parquet

MANIFEST_NAME, META_NAME, REJECTS_NAME = "manifest.parquet", "manifest.meta.json", "rejects.parquet"
# manifest.parquet is a folder of parts (a pyarrow dataset); an older single file reads the same way
PART_NAME, ROWS_PER_PART = "part-{:05d}.parquet", 250_000
# Subgroup columns besides ``view`` (which keeps None when unknown, as before): strings, "" when unknown.
TEXT_SUBGROUPS = tuple(c for c in SUBGROUP_COLUMNS if c != "view")


@dataclass
class ManifestResult:
    manifest: pd.DataFrame
    rejects: pd.DataFrame
    meta: dict
    split_history: pd.DataFrame | None = None  # patient_key -> split, every patient ever split (split_history.parquet)


def write_manifest(result: ManifestResult, out_dir: str | Path, *, rows_per_part: int = ROWS_PER_PART) -> Path:
    """Write the manifest folder: ``manifest.parquet/`` (a partitioned dataset: ``part-NNNNN.parquet`` files of at
    most ``rows_per_part`` rows each, in row_id order, one schema), rejects, meta and split history.

    The parts are written into a temporary folder that replaces the old dataset in one rename, so a reader never sees
    a half-written manifest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_dataset(result.manifest, out / MANIFEST_NAME, rows_per_part)
    result.rejects.to_parquet(out / REJECTS_NAME, index=False)
    (out / META_NAME).write_text(json.dumps(result.meta, indent=2))
    history = result.split_history if result.split_history is not None else merge_history({}, result.manifest)
    history.to_parquet(out / HISTORY_NAME, index=False)
    return out


def _write_dataset(df: pd.DataFrame, target: Path, rows_per_part: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)  # one schema for every part
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        step = max(1, rows_per_part)
        for k, start in enumerate(range(0, max(len(df), 1), step)):
            pq.write_table(table.slice(start, step), tmp / PART_NAME.format(k))
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()  # a single-file manifest.parquet of an older medclip
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextmanager
def staged_output(out_dir: str | Path) -> Iterator[Path]:
    """A local folder to build a manifest in: ``out_dir`` itself, or for a URL (``s3://bucket/manifest``) a
    temporary folder holding the URL's current contents (its salt file, splits history and manifest, so a rebuild
    keeps salt and splits as a local one does), uploaded to the URL when the block ends without an error."""
    if not storage.is_url(out_dir):
        yield storage.local_path(out_dir)
        return
    with tempfile.TemporaryDirectory(prefix="medclip-manifest-") as tmp:
        local = Path(tmp) / "out"
        if storage.exists(storage.join(out_dir, MANIFEST_NAME)) or storage.exists(storage.join(out_dir, META_NAME)):
            shutil.copytree(storage.fetch(out_dir), local)
        local.mkdir(exist_ok=True)
        yield local
        storage.remove(storage.join(out_dir, MANIFEST_NAME))  # the old parts: a smaller manifest has fewer
        storage.upload(local, out_dir)


def manifest_folder(path: str | Path) -> str:
    """The manifest folder of a folder, its ``manifest.parquet`` (file or dataset) or a URL of either."""
    text = str(path).rstrip("/")
    if text.endswith("/" + MANIFEST_NAME) or text == MANIFEST_NAME:
        return text[: -len(MANIFEST_NAME)].rstrip("/") or "."
    if storage.is_url(text) or storage.local_path(text).is_dir():
        return text
    return str(storage.local_path(text).parent)


def read_manifest(
    path: str | Path,
    *,
    columns: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    filters: list | None = None,
) -> tuple[pd.DataFrame, dict]:
    """A manifest folder (or its ``manifest.parquet``; a local path or a URL such as ``s3://bucket/manifest``) ->
    (rows, meta).

    Reads only what is asked for: ``columns`` (None: all), the rows of ``splits`` and any pyarrow ``filters``, part
    by part, so a reader never holds the whole manifest when it needs one split or two columns.
    """
    folder = manifest_folder(path)
    dataset = storage.join(folder, MANIFEST_NAME)
    if not storage.exists(dataset):
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {storage.display(folder)}; build one with `medclip manifest ARCHIVE --out DIR`"
        )
    where = list(filters or [])
    if splits is not None:
        where.append(("split", "in", list(splits)))
    fs, inner = storage.filesystem(dataset) if storage.is_url(dataset) else (None, dataset)
    wanted = None
    if columns is not None:
        names = set(_dataset_columns(inner, fs))
        wanted = [c for c in dict.fromkeys(columns) if c in names]
    df = read_parquet(inner, columns=wanted, filters=where or None, filesystem=fs)
    for col in TEXT_SUBGROUPS:  # a manifest of schema 1 has none of them: every value unknown
        if col not in df.columns and (columns is None or col in columns):
            df[col] = ""
    return df, manifest_meta(folder)


def manifest_meta(path: str | Path) -> dict:
    """The meta (``manifest.meta.json``) of a manifest folder or URL; {} when it has none."""
    meta_path = storage.join(manifest_folder(path), META_NAME)
    return read_json(meta_path) if storage.isfile(meta_path) else {}


def _dataset_columns(path: str, fs) -> list[str]:
    import pyarrow.dataset as pads

    return list(pads.dataset(path, format="parquet", filesystem=fs).schema.names)
