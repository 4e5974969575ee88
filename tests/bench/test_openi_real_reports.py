"""The openi preset's label mapping on the real Open-i report release (shipped by torchxrayvision).

The images are not shipped, so each listed PNG is an empty placeholder: ``load`` only checks that a file exists; the
point is the real XML (MeSH coding, parentImage lists, "normal" and "No Indexing" reports) through the protocol.
"""

from __future__ import annotations

import tarfile

import pytest

from medclip.bench import PRESETS
from medclip.bench.presets.openi import FINDINGS, XML_DIR, mesh_major_terms
from medclip.ingest.layouts.public import parse_openi_xml
from medclip.ingest.tables import finding_key
from medclip.reports.label_io import openi_archive


@pytest.mark.skipif(openi_archive() is None, reason="torchxrayvision (the Open-i report archive) is not installed")
def test_openi_protocol_on_the_real_report_release(tmp_path):
    with tarfile.open(openi_archive()) as tar:
        tar.extractall(tmp_path, filter="data")
    xmls = sorted((tmp_path / XML_DIR).glob("*.xml"))
    listed, normal_images = set(), set()
    for xml in xmls:
        _, _, image_ids = parse_openi_xml(xml)
        listed.update(image_ids)
        if mesh_major_terms(xml.read_bytes()) == ["normal"]:
            normal_images.update(image_ids)
    png_dir = tmp_path / "NLMCXR_png"
    png_dir.mkdir()
    for image_id in listed:
        (png_dir / f"{image_id}.png").touch()

    data = PRESETS.get("openi").load(PRESETS.get("openi").check(tmp_path))
    counts = data.decisions["counts"]
    table = data.table
    assert counts["reports"] == len(xmls) == 3955
    kept = len(table.rows)
    # every listed image is evaluated, or counted as unlabelled or as listed twice
    assert kept + counts["not_indexed_images"] + counts["duplicate_image_ids"] == sum(
        len(parse_openi_xml(x)[2]) for x in xmls
    )
    assert kept > 6000 and (table.rows["split"] == "test").all()
    labels = table.labels
    assert list(labels.columns) == [finding_key(f) for f in FINDINGS] and labels.isin([0.0, 1.0]).all().all()
    positives = labels.sum()
    assert (positives > 0).all(), positives[positives == 0]  # every finding of the vocabulary occurs in the release
    assert positives["cardiomegaly"] > 100 and positives["granuloma"] >= positives["calcified_granuloma"]
    normal = table.rows["image_path"].map(lambda p: p.rsplit("/", 1)[-1][:-4]).isin(normal_images).to_numpy()
    assert normal.sum() > 1000 and (labels[normal] == 0).all().all()  # a report coded "normal" is negative for all
