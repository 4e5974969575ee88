"""Open-i preset: zero-shot multi-label AUROC on the Indiana University chest X-ray collection, labels from MeSH terms.

The collection (Demner-Fushman et al., JAMIA 2016) is distributed by the National Library of Medicine as
``NLMCXR_reports.tgz`` (``ecgen-radiology/<n>.xml``: one report per XML, its ``AbstractText`` sections, the MeSH
terms the NLM indexers assigned as ``<MeSH><major>Term/modifier/...</major>``, and a ``<parentImage id=...>`` per
image) and ``NLMCXR_png.tgz`` (``CXR<n>_<k>_IM-<...>.png``, named by the parentImage id). The whole collection is a
test set: no split is released and none is made here.

Labels follow the finding vocabulary of torchxrayvision's ``Openi_Dataset`` (Cohen et al., MIDL 2022: 18 findings,
matched case-insensitively as substrings, with its synonyms "atelectases", "infiltrate", "pleural thickening"), but
against the manually assigned ``<major>`` terms rather than the automatic (MTI) ones torchxrayvision reads. A report indexed "normal" is negative for all 18; a
report without major terms (or only "No Indexing") has no labels and its images are left out. The XML carries no view
and the PNG release no header, so frontal and lateral images are both evaluated.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from medclip.bench.base import BenchData, Preset, make_table, missing_images, register
from medclip.errors import InputError
from medclip.ingest.layouts.public import parse_openi_xml
from medclip.ingest.tables import finding_key

NAME = "openi"
XML_DIR = "ecgen-radiology"
# finding -> the lower-case substrings of a MeSH term that make it positive (torchxrayvision's table and synonyms)
LABEL_TABLE: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "atelectases"),
    "Calcified Granuloma": ("calcified granuloma",),
    "Cardiomegaly": ("cardiomegaly",),
    "Edema": ("edema",),
    "Effusion": ("effusion",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("fibrosis",),
    "Fracture": ("fracture",),
    "Granuloma": ("granuloma",),  # also "Calcified Granuloma" and "Granulomatous Disease", as in torchxrayvision
    "Hernia": ("hernia",),
    "Infiltration": ("infiltration", "infiltrate"),
    "Lung Lesion": ("lesion",),
    "Lung Opacity": ("opacity",),
    "Mass": ("mass",),
    "Nodule": ("nodule",),
    # the indexers code it "Thickening/pleura[/side]": the finding's own name alone matches no report of the release
    "Pleural Thickening": ("pleural thickening", "thickening/pleura"),
    "Pneumonia": ("pneumonia",),
    "Pneumothorax": ("pneumothorax",),
}
FINDINGS = tuple(LABEL_TABLE)
NOT_INDEXED = "no indexing"  # the indexers' mark for a report they did not code
LAYOUT = (
    "point --data at the folder where NLMCXR_reports.tgz (ecgen-radiology/*.xml) and NLMCXR_png.tgz (the PNGs, at "
    "the top or in any subfolder) are unpacked (https://openi.nlm.nih.gov/faq#collection, CC BY-NC-ND 4.0)"
)


def mesh_major_terms(xml: str | bytes) -> list[str]:
    """The ``<MeSH><major>`` terms of an ecgen-radiology XML document, lower-cased and with their whitespace
    collapsed (``[]`` when it has none). Raises ET.ParseError on text that is not XML."""
    root = ET.fromstring(xml)
    return [" ".join(el.text.split()).lower() for el in root.iterfind(".//MeSH/major") if el.text and el.text.strip()]


def labels_from_terms(terms: list[str]) -> dict[str, float]:
    """Finding key -> 1.0 when any term contains one of its substrings, else 0.0; NaN for every finding when the
    report was not indexed (no major term, or only "No Indexing")."""
    indexed = [t for t in terms if t != NOT_INDEXED]
    if not indexed:
        return {finding_key(f): np.nan for f in FINDINGS}
    return {finding_key(f): float(any(s in t for t in indexed for s in subs)) for f, subs in LABEL_TABLE.items()}


def _png_index(root: Path) -> dict[str, Path]:
    """PNG stem -> file, anywhere under root; InputError when one image id has two files."""
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*.png")):
        if path.stem in index:
            raise InputError(f"{NAME}: image {path.stem} is both {index[path.stem]} and {path}; keep one copy")
        index[path.stem] = path
    return index


def _reports(root: Path) -> tuple[list[dict], dict]:
    """One row per listed image: uid, image id, labels; plus counts of reports without images and not indexed."""
    xmls = sorted((root / XML_DIR).glob("*.xml"))
    if not xmls:
        raise InputError(f"{NAME}: {root / XML_DIR} holds no .xml reports; unpack NLMCXR_reports.tgz there")
    rows, counts = [], {"reports": len(xmls), "reports_without_images": 0, "not_indexed_reports": 0}
    for xml in xmls:
        try:
            uid, _, image_ids = parse_openi_xml(xml)
            terms = mesh_major_terms(xml.read_bytes())  # bytes: the parser honours the declared encoding
        except ET.ParseError as exc:
            raise InputError(f"{NAME}: {xml} is not valid XML ({exc}); unpack NLMCXR_reports.tgz again") from None
        labels = labels_from_terms(terms)
        indexed = not np.isnan(next(iter(labels.values())))
        counts["reports_without_images"] += int(not image_ids)
        counts["not_indexed_reports"] += int(bool(image_ids) and not indexed)
        rows += [{"uid": uid, "image_id": image_id, **labels} for image_id in image_ids]
    return rows, counts


def _load(root: Path) -> BenchData:
    rows, counts = _reports(root)
    frame = pd.DataFrame(rows, columns=["uid", "image_id", *(finding_key(f) for f in FINDINGS)])
    indexed = frame[finding_key(FINDINGS[0])].notna()
    counts["not_indexed_images"] = int((~indexed).sum())
    frame = frame[indexed]
    counts["duplicate_image_ids"] = int(frame["image_id"].duplicated().sum())  # listed by two reports: the first kept
    frame = frame.drop_duplicates("image_id").reset_index(drop=True)
    pngs = _png_index(root)
    counts["pngs_not_listed"] = len(set(pngs) - {r["image_id"] for r in rows})  # no report lists them: not evaluated
    frame["image_path"] = [str(pngs.get(i, root / f"{i}.png")) for i in frame["image_id"]]
    missing_images(frame["image_path"], what=NAME)
    frame = frame.assign(study_id=frame["uid"], split="test")
    notes = []
    if counts["not_indexed_images"]:
        notes.append(
            f"{counts['not_indexed_images']} images of {counts['not_indexed_reports']} reports without MeSH major "
            "terms (or marked No Indexing) have no labels and were left out"
        )
    decisions = {
        "subset": "every image an ecgen-radiology XML lists (parentImage), all as test: the release has no split",
        "views": "frontal and lateral both kept: neither the XML nor the PNG release records the view",
        "labels": "MeSH <major> terms of the report, lower-cased; a finding is positive when a term contains one of "
        "its substrings (torchxrayvision Openi_Dataset vocabulary), else negative",
        "label_table": {finding_key(f): list(subs) for f, subs in LABEL_TABLE.items()},
        "counts": counts,
        "test_positives": {k: int(frame[k].sum()) for k in (finding_key(f) for f in FINDINGS)},
        "metric": "AUROC per finding, positive vs negative prompt softmax; macro mean over the 18",
    }
    return BenchData(make_table(frame, findings=FINDINGS, source=NAME), decisions, notes)


register(
    Preset(
        name=NAME,
        title="Open-i: zero-shot AUROC on 18 findings from the reports' MeSH terms",
        dataset="Open-i / Indiana University chest X-ray collection (Demner-Fushman et al. 2016), National Library of "
        "Medicine, CC BY-NC-ND 4.0",
        paper="torchxrayvision's Openi_Dataset labels (Cohen et al., MIDL 2022), matched on the <major> MeSH terms; "
        "zero-shot multi-label AUROC as CARZero (Lai et al., CVPR 2024) reports it on Open-I",
        layout=LAYOUT,
        required=(XML_DIR,),
        load=_load,
        tasks=("zeroshot",),
        prompts="openi",
        mode="multilabel",
        findings=tuple(finding_key(f) for f in FINDINGS),
        headline="macro_auroc",
        label_policy="a MeSH major term naming the finding -> 1, else 0 (no uncertain labels); reports without major "
        "terms are unlabelled and left out",
    )
)
