"""Embedded synthetic chest X-ray demo archive: a PACS-style DICOM export with free-text reports and labels.

``synth_cxr(out_dir)`` writes::

    OUT/dicom/<PatientID>/<StudyDate>-<AccessionNumber>/<SeriesNumber>/<InstanceNumber>.dcm
    OUT/reports/<AccessionNumber>.txt   one report per study (lateral views share it)
    OUT/labels.csv                      ground truth for evaluation only
    OUT/grounding.csv                   lesion boxes on the frontal images (MS-CXR layout), for grounding
    OUT/README.txt

Images come from :mod:`medclip.synth.cxr.phantom`; everything is driven by one seed, so reruns are byte-identical.
grounding.csv has one row per connected region of each lesion's mask (where its drawing changed the image; a
bilateral finding gets a box per lung): ``x, y, w, h`` in pixels of the frontal image named by ``path`` and
``dicom_id`` (its SOPInstanceUID). Heart size and support devices are not boxed; lateral views have no rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)
from scipy import ndimage

from medclip.errors import InputError
from medclip.synth.common import patient_site, prepare_archive, serial_ids, synthetic_uid, write_csv
from medclip.synth.cxr import phantom
from medclip.synth.cxr.phantom import Finding
from medclip.synth.cxr.reports import (
    CXR_FINDINGS,
    GROUNDING_CATEGORIES,
    SIDED_FINDINGS,
    cxr_report,
    grounding_phrase,
)
from medclip.synth.cxr.study import Positive, Station, Study

logger = logging.getLogger(__name__)

__all__ = ["CXR_FINDINGS", "SIDED_FINDINGS", "synth_cxr"]

_SIZES = ((512, 512), (576, 480), (480, 576), (576, 448), (448, 512))
_P_NORMAL = 0.33
# Per-finding probability within abnormal studies; tuned so each lands at ~15-30 % of all studies.
_P_FINDING = {
    "cardiomegaly": 0.2,
    "pleural_effusion": 0.30,
    "pneumothorax": 0.23,
    "consolidation": 0.27,
    "edema": 0.16,
    "nodule": 0.18,
    "atelectasis": 0.28,
    "support_device": 0.26,
}
_LOBES = {"right": ("upper", "middle", "lower"), "left": ("upper", "lingula", "lower")}
# (u, v, w) ranges inside the lung: medial->lateral, apex->base, anterior->posterior
_LOBE_BOX = {
    "upper": ((0.3, 0.85), (0.1, 0.38), (0.3, 0.6)),
    "middle": ((0.2, 0.6), (0.5, 0.7), (0.08, 0.35)),
    "lingula": ((0.35, 0.7), (0.5, 0.7), (0.08, 0.35)),
    "lower": ((0.35, 0.9), (0.66, 0.9), (0.6, 0.92)),
}


_VENDORS = ("MEDCLIP SYNTHETIC A", "MEDCLIP SYNTHETIC B", "MEDCLIP SYNTHETIC C")
_STATIONS = (
    Station("SYNTHRAD DX-1", "DX", 12, False, None, True, 0.28, _VENDORS[0]),
    Station("SYNTHRAD DX-2", "DX", 14, False, (1.0, -1024.0), True, 0.17, _VENDORS[0]),
    Station("OLDCR READER", "CR", 12, True, None, True, 0.13, _VENDORS[1]),
    Station("CR-ARCHIVE", "CR", 16, False, (0.5, 0.0), False, 0.15, _VENDORS[1]),
    Station("PORTA-DX", "DX", 14, True, (2.0, 0.0), True, 0.12, _VENDORS[2]),
    Station("SYNTHRAD DX-3", "DX", 16, False, (1.0, 0.0), True, 0.15, _VENDORS[2]),
)


# --------------------------------------------------------------------------------------------- sampling
def _box(rng: np.random.Generator, lobe: str) -> dict[str, float]:
    (u0, u1), (v0, v1), (w0, w1) = _LOBE_BOX[lobe]
    return {"u": float(rng.uniform(u0, u1)), "v": float(rng.uniform(v0, v1)), "w": float(rng.uniform(w0, w1))}


def _devices(rng: np.random.Generator) -> tuple[Finding, ...]:
    kinds = ["ett", "cvc", "pacemaker", "enteric"]
    first = str(rng.choice(kinds, p=[0.3, 0.35, 0.22, 0.13]))
    chosen = [first]
    if first == "ett" and rng.random() < 0.6:  # intubated patients usually also have an enteric tube
        chosen.append("enteric")
    elif rng.random() < 0.2:
        chosen.append(str(rng.choice([k for k in kinds if k != first])))
    out = []
    for kind in chosen:
        side = {
            "cvc": "right" if rng.random() < 0.75 else "left",
            "pacemaker": "left" if rng.random() < 0.85 else "right",
        }
        out.append(Finding("support_device", side=side.get(kind, ""), kind=kind, v=float(rng.random())))
    return tuple(out)


def _sample_finding(name: str, rng: np.random.Generator) -> Positive:
    """Draw side, severity, location and size for one positive finding."""
    sev = float(rng.uniform(0.05, 1.0))
    side = str(rng.choice(["left", "right"]))
    if name == "support_device":
        return Positive(name, specs=_devices(rng))
    if name in ("pleural_effusion", "atelectasis"):
        side = str(rng.choice(["left", "right", "bilateral"], p=[0.36, 0.36, 0.28]))
    if name in ("cardiomegaly", "edema", "pleural_effusion", "pneumothorax"):
        side = "" if name in ("cardiomegaly", "edema") else side
        return Positive(name, side, sev, specs=(Finding(name, side, sev),))
    if name == "atelectasis":
        pos = {"u": float(rng.uniform(0.4, 0.85)), "v": float(rng.uniform(0.66, 0.85)), "w": 0.75}
        spec = Finding(name, side, sev, angle=float(rng.uniform(-0.3, 0.3)), **pos)
        return Positive(name, side, sev, "lower", specs=(spec,))
    lobes = _LOBES[side] if name == "consolidation" else ("upper", "lower") + (("middle",) if side == "right" else ())
    lobe = str(rng.choice(lobes))
    size = float(rng.uniform(10, 30) if rng.random() < 0.8 else rng.uniform(32, 60)) if name == "nodule" else 0.0
    spec = Finding(name, side, sev, size_mm=size, angle=float(rng.uniform(-0.6, 0.6)), **_box(rng, lobe))
    return Positive(name, side, sev, lobe, size, specs=(spec,))


def _sample_positives(rng: np.random.Generator, prior: dict[str, Positive]) -> dict[str, Positive]:
    """Findings for one study; chronic findings (heart size, nodules, pacemakers) tend to persist."""
    pos: dict[str, Positive] = {}
    for name, keep in (("cardiomegaly", 0.7), ("nodule", 0.6), ("support_device", 0.4)):
        if name in prior and rng.random() < keep:
            p = prior[name]
            pos[name] = Positive(p.name, p.side, p.severity, p.lobe, p.size_mm, p.specs, carried=True)
    if not pos and rng.random() < _P_NORMAL:
        return pos
    for name in CXR_FINDINGS:
        p = _P_FINDING[name]
        if name == "edema":  # heart failure: edema goes with an enlarged heart
            p = 0.42 if "cardiomegaly" in pos else p
        if name not in pos and rng.random() < p:
            pos[name] = _sample_finding(name, rng)
    if not pos:
        name = str(rng.choice(CXR_FINDINGS))
        pos[name] = _sample_finding(name, rng)
    return pos


def _plan(n_studies: int, seed: int) -> list[Study]:
    """Patients, studies and their findings from ``seed``; a smaller ``n_studies`` gives a prefix of a larger plan."""
    rng = np.random.default_rng([seed, 1])
    accessions, pids = serial_ids(seed, 40_000_009, n_studies), serial_ids(seed, 27_182_819, n_studies)
    weights = np.array([s.weight for s in _STATIONS])
    # the first studies cycle through every station so even a tiny archive shows each DICOM variant
    stations = [_STATIONS[i] for i in rng.permutation(len(_STATIONS))]
    studies: list[Study] = []
    patient_no = 0
    while len(studies) < n_studies:
        patient_no += 1
        sex = "M" if rng.random() < 0.5 else "F"
        age0 = int(rng.integers(20, 91))
        anatomy = phantom.sample_anatomy(rng, female=sex == "F")
        first = dt.date(2012, 1, 1) + dt.timedelta(days=int(rng.integers(0, 4000)))
        day, prior = 0, {}
        for k in range(int(rng.choice([1, 2, 3, 4], p=[0.25, 0.3, 0.3, 0.15]))):
            if len(studies) >= n_studies:
                break
            idx = len(studies)
            day += 0 if k == 0 else int(rng.integers(1, 400))
            pos = _sample_positives(rng, prior)
            ap = rng.random() < 0.15 + 0.45 * ("support_device" in pos) + 0.1 * ("edema" in pos)
            lateral = "" if rng.random() > (0.05 if ap else 0.41) else str(rng.choice(["LL", "LATERAL"], p=[0.7, 0.3]))
            st = stations[idx] if idx < len(stations) else _STATIONS[rng.choice(len(_STATIONS), p=weights)]
            size = _SIZES[int(rng.integers(len(_SIZES)))]
            studies.append(
                Study(
                    idx=idx,
                    patient_no=patient_no,
                    patient_id=pids[patient_no - 1],
                    sex=sex,
                    age=age0 + day // 365,
                    date=first + dt.timedelta(days=day),
                    time=f"{rng.integers(0, 24):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}",
                    accession=accessions[idx],
                    uid=_uid(seed, "study", idx),
                    view="AP" if ap else "PA",
                    lateral=lateral,
                    station=st,
                    size=size,
                    spacing=float(rng.uniform(330, 410)) / min(size),
                    anatomy=_jitter(anatomy, rng),
                    series_base=int(rng.choice([1, 1, 1, 2, 100, 1001])),
                    has_prior=k > 0,
                    pos=pos,
                    site=patient_site(seed, patient_no, stream=5),
                )
            )
            prior = pos
    return studies


def _jitter(an: phantom.Anatomy, rng: np.random.Generator) -> phantom.Anatomy:
    """Same patient, new positioning and breath-hold."""
    dome = float(rng.normal(0, 5))
    return replace(
        an,
        shift_x=float(rng.normal(0, 8)),
        shift_y=float(rng.normal(-10, 10)),
        rotation_deg=float(rng.normal(0, 2)),
        dome_right=an.dome_right + dome,
        dome_left=an.dome_left + dome,
        stomach_bubble=bool(rng.random() < 0.6),
    )


def _uid(seed: int, *parts: object) -> str:
    return synthetic_uid("medclip-synth-cxr", seed, *parts)


# ------------------------------------------------------------------------------------------------ DICOM
def _pixel_module(ds: Dataset, img: np.ndarray, st: Study, rng: np.random.Generator) -> None:
    """Encode a [0, 1] image (bright = dense) with the station's bit depth, photometry, rescale and window."""
    sta = st.station
    maxv = (1 << sta.bits) - 1
    lo, hi = rng.uniform(0.02, 0.12) * maxv, rng.uniform(0.78, 0.98) * maxv
    stored = np.rint(lo + img * (hi - lo)).astype("<u2")
    if sta.mono1:  # MONOCHROME1 displays low values bright, so dense tissue must be stored low
        stored = (maxv - stored).astype("<u2")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if sta.mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{st.spacing:.4f}"] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, sta.bits, sta.bits - 1, 0
    slope, intercept = sta.rescale or (1.0, 0.0)
    if sta.rescale:
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{intercept:g}", f"{slope:g}", "US"
    if sta.window:
        p_lo, p_hi = np.percentile(stored[::4, ::4], [1, 99]) * slope + intercept
        ds.WindowCenter = f"{(p_lo + p_hi) / 2:.1f}"
        ds.WindowWidth = f"{max(p_hi - p_lo, 1.0) * rng.uniform(1.0, 1.15):.1f}"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"


def _dataset(st: Study, view: str, series: int, img: np.ndarray, seed: int, rng: np.random.Generator) -> Dataset:
    """One CR/DX image as a complete Part-10 dataset."""
    sop_class = (
        ComputedRadiographyImageStorage if st.station.modality == "CR" else DigitalXRayImageStorageForPresentation
    )
    sop_uid = _uid(seed, "sop", st.idx, series, 1)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = f"{st.date:%Y%m%d}"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = st.time
    ds.AccessionNumber = st.accession
    ds.Modality = st.station.modality
    ds.Manufacturer, ds.StationName = st.station.manufacturer, st.station.name
    ds.InstitutionName = st.site
    lat = " AND LAT" if st.lateral else ""
    ds.StudyDescription = f"CHEST ({'PORTABLE AP' if st.view == 'AP' else 'PA'}{lat})"
    ds.SeriesDescription = "LATERAL" if view in phantom.LATERAL_VIEWS else f"CHEST {view}"
    ds.PatientName = f"SYNTH^P{st.patient_no:04d}"
    ds.PatientID, ds.PatientSex, ds.PatientAge = st.patient_id, st.sex, f"{st.age:03d}Y"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", view
    # frontal: columns run to the patient's left; lateral: anterior at image left, so columns run posterior
    ds.PatientOrientation = ["P", "F"] if view in phantom.LATERAL_VIEWS else ["L", "F"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = st.uid, _uid(seed, "series", st.idx, series)
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = st.accession[-6:], series, 1
    if st.station.modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    _pixel_module(ds, img, st, rng)
    return ds


# ---------------------------------------------------------------------------------------------- archive
_README_MARK = "SYNTHETIC chest X-ray demo archive written by medclip.synth.cxr.archive"


GROUNDING_HEADER = (
    "dicom_id",
    "category_name",
    "label_text",
    "path",
    "x",
    "y",
    "w",
    "h",
    "image_width",
    "image_height",
    "study_id",
    "accession",
)
_MIN_REGION = 0.002  # a mask region under this fraction of the image is a speck, unless it is the lesion's largest


def _regions(mask: np.ndarray) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """Connected regions of one lesion mask as (bounding slices, region pixels within them).

    Specks are dropped, but never a lesion's largest region: a 10 mm nodule covers only ~0.1 % of a film.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return []
    r0, c0 = int(rows[0]), int(cols[0])
    lab, n = ndimage.label(mask[r0 : rows[-1] + 1, c0 : cols[-1] + 1])  # labelling only the lesion's extent
    areas = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    floor = min(_MIN_REGION * mask.size, int(areas.max()))
    return [
        ((slice(r0 + rs.start, r0 + rs.stop), slice(c0 + cs.start, c0 + cs.stop)), lab[rs, cs] == i + 1)
        for i, (rs, cs) in enumerate(ndimage.find_objects(lab))
        if areas[i] >= floor
    ]


def _grounding_rows(
    st: Study, owners: list[Positive], masks: list[np.ndarray | None], *, path: str, sop_uid: str
) -> list[list[object]]:
    """grounding.csv rows for the frontal image at ``path``: one per region of each finding's mask.

    Diffuse findings (edema) get one box per lung instead: their haze breaks into pieces around the heart, and a
    reader boxes the involved lung, not each piece.
    """
    rows, cols = st.size
    x_mm = None  # patient-frame x, only needed to tell the side of a bilateral (or unsided) finding's regions
    out: list[list[object]] = []
    for p, mask in zip(owners, masks, strict=True):
        if mask is None:
            continue
        boxes: list[tuple[str, list[int]]] = []  # (side, [row0, col0, row1, col1])
        for (rs, cs), pixels in _regions(mask):
            side = p.side
            if side not in ("left", "right"):
                if x_mm is None:
                    x_mm = phantom.patient_x(rows, cols, st.spacing, anatomy=st.anatomy)
                side = "left" if float(x_mm[rs, cs][pixels].mean()) >= 0 else "right"
            boxes.append((side, [rs.start, cs.start, rs.stop, cs.stop]))
        if p.name in _DIFFUSE:
            boxes = [(side, _union([b for s, b in boxes if s == side])) for side in ("right", "left")]
            boxes = [(side, b) for side, b in boxes if b]
        for side, (r0, c0, r1, c1) in boxes:
            text = grounding_phrase(p, side)
            box = (c0, r0, c1 - c0, r1 - r0)  # x = left column, y = top row
            out.append([sop_uid, GROUNDING_CATEGORIES[p.name], text, path, *box, cols, rows, st.uid, st.accession])
    return out


_DIFFUSE = ("edema",)


def _union(boxes: list[list[int]]) -> list[int]:
    """Bounding box [row0, col0, row1, col1] of ``boxes``; empty when there are none."""
    if not boxes:
        return []
    r0, c0, r1, c1 = zip(*boxes, strict=True)
    return [min(r0), min(c0), max(r1), max(c1)]


def _write_study(out: Path, st: Study, seed: int) -> tuple[int, list[list[object]]]:
    """Render and write every image of one study; returns the number of images and its grounding.csv rows."""
    rng = np.random.default_rng([seed, 3, st.idx])
    owners = [p for p in st.pos.values() for _ in p.specs]
    specs = [spec for p in st.pos.values() for spec in p.specs]
    folder = out / "dicom" / st.patient_id / f"{st.date:%Y%m%d}-{st.accession}"
    views = [st.view, st.lateral] if st.lateral else [st.view]
    grounding: list[list[object]] = []
    for k, view in enumerate(views):
        acq = phantom.sample_acquisition(rng)
        rows, cols = st.size
        kw = {"view": view, "anatomy": st.anatomy, "findings": specs, "acquisition": acq}
        seed_k = int(rng.integers(2**31))
        series = st.series_base + k
        path = folder / str(series) / "1.dcm"
        if k == 0:  # the frontal view; lesion masks do not change its pixels or any random draw
            img, masks = phantom.render(rows, cols, st.spacing, seed=seed_k, masks=True, **kw)
            sop_uid = _uid(seed, "sop", st.idx, series, 1)
            rel = path.relative_to(out).as_posix()
            grounding = _grounding_rows(st, owners, masks, path=rel, sop_uid=sop_uid)
        else:
            img = phantom.render(rows, cols, st.spacing, seed=seed_k, **kw)
        path.parent.mkdir(parents=True, exist_ok=True)
        _dataset(st, view, series, img, seed, rng).save_as(path, enforce_file_format=True)
    return len(views), grounding


def _label_rows(plan: list[Study]) -> tuple[list[str], list[list[object]]]:
    header = [
        "study_id",
        "accession",
        "patient_id",
        *CXR_FINDINGS,
        "no_finding",
        *(f"{n}_side" for n in SIDED_FINDINGS),
    ]
    rows = []
    for st in plan:
        flags = [int(n in st.pos) for n in CXR_FINDINGS]
        sides = [st.pos[n].side if n in st.pos else "" for n in SIDED_FINDINGS]
        rows.append([st.uid, st.accession, st.patient_id, *flags, int(not any(flags)), *sides])
    return header, rows


def _init_worker(visibility: float, device_width: float) -> None:
    # The phantom's module-level knobs as the parent set them (a spawned worker would otherwise see the defaults).
    phantom.VISIBILITY, phantom.DEVICE_WIDTH = visibility, device_width


def _write_studies(out: Path, chunk: list[Study], seed: int) -> tuple[int, list[list[object]]]:
    n_images, grounding = 0, []
    for st in chunk:
        n, rows = _write_study(out, st, seed)
        n_images += n
        grounding += rows
    return n_images, grounding


def _write_all(out: Path, plan: list[Study], seed: int, workers: int) -> tuple[int, list[list[object]]]:
    """Render every study, in ``workers`` processes; each study draws from its own seeded generator, so the files
    are byte-identical whatever the number of workers. Returns the image count and grounding rows in study order."""
    if workers <= 1 or len(plan) < 32:
        return _write_studies(out, plan, seed)
    chunks = [plan[i : i + 16] for i in range(0, len(plan), 16)]
    init = (phantom.VISIBILITY, phantom.DEVICE_WIDTH)
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=init) as pool:
        done = list(pool.map(_write_studies, [out] * len(chunks), chunks, [seed] * len(chunks)))  # in chunk order
    return sum(n for n, _ in done), [row for _, rows in done for row in rows]


def synth_cxr(out_dir: str | Path, *, studies: int = 400, seed: int = 0, workers: int | None = None) -> dict:
    """Write the synthetic chest X-ray archive (DICOM + reports + labels) to ``out_dir``.

    Args:
        out_dir: Target directory; created if missing. A previous synthetic archive there is replaced.
        studies: Number of studies (each has a frontal view, ~30 % also a lateral).
        seed: Controls everything; the same seed gives byte-identical pixels, the same UIDs and reports.
        workers: rendering processes (default: the CPUs this process may use); the output does not depend on it.

    Returns:
        {"patients", "studies", "images", "prevalence": {finding: fraction of studies}, "no_finding",
        "grounding_boxes" (rows of grounding.csv), "out_dir", "seconds"}.
    """
    if studies < 1:
        raise InputError(f"studies must be >= 1, got {studies}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    prepare_archive(out, _README_MARK, ("dicom", "reports"))
    plan = _plan(studies, seed)
    n_images, grounding = _write_all(out, plan, seed, workers if workers is not None else len(os.sched_getaffinity(0)))
    for st in plan:
        (out / "reports" / f"{st.accession}.txt").write_text(cxr_report(st, seed), encoding="utf-8", newline="\n")
    header, rows = _label_rows(plan)
    write_csv(out / "labels.csv", header, rows)
    write_csv(out / "grounding.csv", GROUNDING_HEADER, grounding)
    (out / "README.txt").write_text(_README_MARK + _README.format(n=studies, seed=seed), encoding="utf-8")
    summary = {
        "patients": len({st.patient_id for st in plan}),
        "studies": len(plan),
        "images": n_images,
        "prevalence": {n: sum(n in st.pos for st in plan) / len(plan) for n in CXR_FINDINGS},
        "no_finding": sum(not st.pos for st in plan) / len(plan),
        "grounding_boxes": len(grounding),
        "out_dir": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    logger.info(
        "synthetic CXR archive: %d patients, %d studies, %d images in %.1fs -> %s",
        summary["patients"],
        summary["studies"],
        n_images,
        summary["seconds"],
        out,
    )
    return summary


_README = """ ({n} studies, seed {seed}).

Nothing here comes from a real patient. Images are procedural numpy phantoms (medclip.synth.cxr.phantom: body,
lungs, heart, diaphragm, ribs, findings, exposure and noise) encoded as CR/DX DICOM with varied bit depth,
MONOCHROME1/2, rescale and window settings. Reports are generated from the same ground truth with varied
wording, hedging, negations and de-identification placeholders (XXXX, ___).

dicom/<PatientID>/<StudyDate>-<AccessionNumber>/<SeriesNumber>/<InstanceNumber>.dcm
reports/<AccessionNumber>.txt   one report per study; lateral views share it
labels.csv                      ground truth for evaluation only (never train on it)
grounding.csv                   lesion boxes on the frontal images, MS-CXR columns (dicom_id, category_name,
                                label_text, path, x, y, w, h, image_width, image_height) plus study_id and
                                accession; x, y = left column and top row in pixels; evaluation only
"""
