"""Writers for tiny datasets in the official layouts, and a runner for ``medclip bench``.

Each preset's test writes a few generated images under the real release's folder layout, with the real CSV / JSON
headers, and runs the preset end to end with the session's tiny checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medclip.cli import main


def _pixels(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth random grey image in [0, 1] (different per seed, so embeddings differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    img = 0.3 + 0.2 * np.sin(6 * xx * rng.uniform(0.5, 2)) * np.cos(4 * yy * rng.uniform(0.5, 2))
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
        img += 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return np.clip(img, 0, 1)


def write_image(path: Path, seed: int, *, size: tuple[int, int] = (80, 72)) -> Path:
    """An 8-bit grey PNG or JPEG (by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (_pixels(seed, size) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    return path


def write_dicom(path: Path, seed: int, *, size: tuple[int, int] = (80, 72), **attrs) -> Path:
    """A 12-bit MONOCHROME2 radiograph with the given header attributes (PatientSex="F", ViewPosition="AP", ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CR", generate_uid(), generate_uid()
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (_pixels(seed, size) * 4000).astype(np.uint16).tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def run_bench(name: str, data: Path, checkpoint: Path, out: Path, *args: str) -> tuple[int, dict | None]:
    """``medclip -q bench NAME --data DATA --checkpoint CKPT --out OUT --bootstrap 50 ARGS`` -> (exit code, results)."""
    code = main(
        ["-q", "bench", name, "--data", str(data), "--checkpoint", str(checkpoint), "--out", str(out)]
        + ["--bootstrap", "50", *args]
    )
    results = out / "results.json"
    return code, json.loads(results.read_text()) if code == 0 and results.is_file() else None


@pytest.fixture
def bench_out(tmp_path) -> Path:
    return tmp_path / "out"
