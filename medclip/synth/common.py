"""What the synthetic archive writers (chest X-ray, CT, sketches) share: folder preparation, IDs, UIDs, CSV files."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from medclip.errors import InputError


def prepare_archive(out: Path, mark: str, subdirs: Sequence[str]) -> None:
    """Create ``out/<subdir>`` for each subdir, emptied if a previous archive of the same kind left files there;
    refuse (InputError) to write into non-empty folders of anything else.

    The kind is ``mark`` up to " written by ": archives written by earlier versions (other module names) count too.
    """
    readme = out / "README.txt"
    kind = mark.split(" written by ")[0]
    ours = readme.is_file() and readme.read_text(encoding="utf-8").startswith(kind)
    for sub in subdirs:
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            if not ours:
                raise InputError(f"{out / sub} is not empty and is not a synthetic archive; use a fresh directory")
            shutil.rmtree(out / sub)
    for sub in subdirs:
        (out / sub).mkdir(parents=True, exist_ok=True)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def serial_ids(seed: int, mult: int, n: int, *, stream: Sequence[int] = ()) -> list[str]:
    """Unique random-looking 8-digit numbers; an affine map mod 9e7 (``mult`` coprime to it) cannot collide and,
    unlike sampling without replacement, keeps the first k IDs independent of ``n``."""
    offset = int(np.random.default_rng([seed, mult, *stream]).integers(9 * 10**7))
    return [str(10**7 + (mult * i + offset) % (9 * 10**7)) for i in range(n)]


def synthetic_uid(namespace: str, seed: int, *parts: object) -> str:
    """Deterministic DICOM UID: the same namespace, seed and parts give the same UID on every run."""
    return generate_uid(entropy_srcs=[namespace, str(seed), *map(str, parts)])


# InstitutionName of each synthetic hospital (plainly not real ones) and the share of patients imaged there.
SYNTHETIC_SITES = ("MEDCLIP SYNTHETIC SITE 1", "MEDCLIP SYNTHETIC SITE 2", "MEDCLIP SYNTHETIC SITE 3")
_SITE_WEIGHTS = (0.5, 0.3, 0.2)


def patient_site(seed: int, patient_no: int, *, stream: int) -> str:
    """The synthetic hospital of a patient, drawn from its own generator (``stream`` tells archives apart), so an
    archive's other draws (images, reports, labels) are those it made before it had sites."""
    rng = np.random.default_rng([seed, stream, patient_no])
    return SYNTHETIC_SITES[int(rng.choice(len(SYNTHETIC_SITES), p=_SITE_WEIGHTS))]
