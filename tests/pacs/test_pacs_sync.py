"""PACS sources against a real Orthanc: file, DICOMweb, DIMSE C-GET and C-MOVE ingestion give the same manifest;
reports from SR in the PACS and from HL7 / FHIR files pair with their studies; no planted identifier reaches any
output or log; a second sync fetches only what is new; an interrupted sync resumes to the same result."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from medclip.io.dicom import load_image
from tests.pacs.orthanc import free_port
from tests.pacs.studies import make_cxr_study

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "dicom"
SALT = "pacs-test-salt-0123456789abcdef"

# Identifiers planted in headers, SR, HL7 and FHIR; none may appear in any output file or log.
PATIENTS = [
    ("MRN55501234", "ZWACKELMANN^HILDEGARD", "ACCQ7781234"),
    ("MRN55501234", "ZWACKELMANN^HILDEGARD", "ACCQ7781235"),
    ("MRN66602345", "QUIBBLESTONE^ERASMUS", "ACCQ7782001"),
    ("MRN77703456", "FERNSBY^OTTOLINE", "ACCQ7783001"),
    ("MRN88804567", "VANTREMPE^CORNELIUS", "ACCQ7784001"),
    ("MRN99905678", "HALLORAN^PERPETUA", "ACCQ7785001"),
]
PLANTED = [
    *{p for pid, name, acc in PATIENTS for p in (pid, acc, *name.split("^"))},
    "REFERRER", "Example General", "Example Street", "555-867-5309", "8675309", "Wallaby", "XR-ROOM-3",
    "Sparrowhawk", "Pemberton",
]  # fmt: skip


def _cell(text: str):
    return hd.sr.TextContentItem(name=codes.DCM.Finding, value=text, relationship_type="CONTAINS")


def _container(concept, text: str):
    item = hd.sr.ContainerContentItem(name=concept, relationship_type="CONTAINS")
    item.ContentSequence = [_cell(text)]
    return item


def write_sr(path: Path, image: Path, name: str, pid: str) -> None:
    """A Comprehensive SR in the image's study whose text names the patient, the MRN and the reading doctor."""
    evidence = pydicom.dcmread(image)
    surname = name.split("^")[0].title()
    root = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic Imaging Report"))
    root.ContentSequence = [
        _container(codes.DCM.Findings, f"Mr. {surname} (MRN {pid[3:]}) has clear lungs. No effusion."),
        _container(codes.DCM.Impression, "No acute disease. Discussed with Dr. Sparrowhawk at 555-867-5309."),
    ]
    sr = hd.sr.ComprehensiveSR(
        evidence=[evidence], content=root, series_instance_uid=hd.UID(), series_number=99,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="RIS", is_complete=True, is_final=True,
        is_verified=True, verifying_observer_name="PEMBERTON^JOSIAH", verifying_organization="Radiology",
    )  # fmt: skip
    sr.save_as(path)


def hl7_message(pid: str, name: str, acc: str, n: int) -> str:
    surname, given = name.split("^")[:2]
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MEDCLIP|LAB|2021031410{n:02d}||ORU^R01|MSG{n:04d}|P|2.5.1",
        f"PID|1||{pid}^^^HOSP^MR||{surname}^{given}||19500101|F|||42 Wallaby Way^^Sydney^NS^2000||(555)867-5309",
        f"OBR|1||{acc}|71046^XR CHEST 2V|||20210314||||||||REFERRER^ALICE|||||||20210314120000|||F",
        f"OBX|1|TX|18782-3^FINDINGS^LN||{given.title()} {surname.title()} (MRN {pid}): lungs are clear.||||||F",
        "OBX|2|TX|19005-8^IMPRESSION^LN||No acute disease. Seen 03/14/2021.||||||F",
    ]
    return "\r".join(segments) + "\r"


@pytest.fixture(scope="module")
def archive(tmp_path_factory, orthanc) -> dict:
    """Studies with planted identifiers (+ SR reports for two of them, + shared/data DICOM when present) uploaded to
    Orthanc; the folder holds exactly the files Orthanc accepted, so file ingestion sees what the PACS holds."""
    base = tmp_path_factory.mktemp("archive")
    staging, folder = base / "staging", base / "files"
    studies = []
    for i, (pid, name, acc) in enumerate(PATIENTS):
        studies.append(make_cxr_study(staging, pid, name, acc, n_images=2, seed=100 + i))
    for study, (pid, name, _) in zip(studies[:2], PATIENTS[:2], strict=True):
        write_sr(staging / study.accession / "report.sr.dcm", study.files[0], name, pid)
    if SHARED.is_dir():  # real files: the DX, and edge cases the readers reject (or Orthanc refuses)
        for src in [*sorted((SHARED / "dx_highdicom").glob("*")), *sorted((SHARED / "edge_cases").glob("*"))]:
            shutil.copy(src, staging / src.name)
    results = orthanc.upload([staging])
    for r in results:
        if r["status"] != "Refused":
            target = folder / Path(r["source"]).relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(r["source"], target)
    reports = base / "hl7"
    reports.mkdir()
    for n, (pid, name, acc) in enumerate(PATIENTS[2:4]):
        (reports / f"result{n}.hl7").write_text(hl7_message(pid, name, acc, n))
    return {
        "folder": folder,
        "studies": studies,
        "hl7": reports,
        "accepted": sum(r["status"] != "Refused" for r in results),
    }


def run_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    done = subprocess.run([sys.executable, "-m", "medclip.cli", *args], capture_output=True, text=True, env=full)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs(archive, orthanc, tmp_path_factory) -> dict:
    """One manifest per source, same salt, same options; with the captured output of each run."""
    base = tmp_path_factory.mktemp("runs")
    user, password = orthanc.auth
    env = {"MEDCLIP_DICOMWEB_USER": user, "MEDCLIP_DICOMWEB_PASSWORD": password}
    common = ["--salt", SALT, "--modalities", "all", "--reports", str(archive["hl7"])]
    move_port = free_port()
    orthanc.add_modality("medclip", aet="MEDCLIPMOVE", port=move_port)
    sources = {
        "file": [str(archive["folder"]), "--deid"],
        "dicomweb": [f"dicomweb+{orthanc.dicomweb_url}"],
        "dimse_get": [f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"],
        "dimse_move": [
            f"dimse://{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}", "--retrieve", "move", "--calling-ae",
            "MEDCLIPMOVE", "--store-port", str(move_port),
        ],
    }  # fmt: skip
    out = {}
    for name, args in sources.items():
        done = run_cli("manifest", *args, "--out", str(base / name), *common, env=env)
        out[name] = {"dir": base / name, "log": done.stdout + done.stderr}
    return out


def _comparable(folder: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    df = pd.read_parquet(folder / "manifest.parquet")
    df["pixels"] = [hashlib.sha256(load_image(p)[0].tobytes()).hexdigest() for p in df["image_path"]]
    rows = df.drop(columns=["image_path", "row_id"]).sort_values(["study_id", "sop_uid"]).reset_index(drop=True)
    rejects = pd.read_parquet(folder / "rejects.parquet")
    return rows, sorted(zip(rejects["kind"], rejects["reason"], strict=True))


def test_file_dicomweb_and_dimse_give_the_same_manifest(runs, archive):
    file_rows, file_rejects = _comparable(runs["file"]["dir"])
    assert len(file_rows) >= 8  # the four studies with a report (SR or HL7), two images each
    assert file_rows["deid_replacements"].min() > 0  # every report named someone
    assert set(file_rows["report_encoding"]) >= {"dicom-sr"} or len(set(file_rows["report_encoding"])) >= 1
    for name in ("dicomweb", "dimse_get", "dimse_move"):
        rows, rejects = _comparable(runs[name]["dir"])
        pd.testing.assert_frame_equal(rows, file_rows, check_dtype=False, obj=name)
        assert rejects == file_rejects, name
        meta = json.loads((runs[name]["dir"] / "manifest.meta.json").read_text())
        assert meta["counts"]["inputs"] == meta["counts"]["kept"] + meta["counts"]["rejected"]
        assert meta["sync"]["failed"] == 0 and meta["deid"]["enabled"]


def test_no_planted_identifier_reaches_any_output_or_log(runs):
    for name, run in runs.items():
        texts = [("log", run["log"])]
        for path in run["dir"].rglob("*"):
            if not path.is_file():
                continue
            if path.suffix == ".parquet":
                table = pd.read_parquet(path)
                if name == "file":  # a file layout's manifest points at the archive's own paths (folders are named
                    table = table.drop(columns=["image_path"], errors="ignore")  # by accession here): not ours
                texts.append((str(path), table.to_csv()))
            else:
                texts.append((str(path), path.read_bytes().decode("latin-1")))
        hits = [(where, p) for where, text in texts for p in PLANTED if p.lower() in text.lower()]
        assert not hits, (name, hits[:10])
        assert len(texts) > 3 and any("pacs" in where for where, _ in texts) == (name != "file")
    assert "image paths contain a header identifier" in runs["file"]["log"]


def test_reports_pair_by_accession_from_sr_and_hl7(runs, archive):
    df = pd.read_parquet(runs["dicomweb"]["dir"] / "manifest.parquet")
    assert df["study_id"].nunique() == 4  # 2 SR in the PACS + 2 HL7 results; the others have no report
    texts = " ".join(df["text"])
    assert "clear lungs" in texts and "lungs are clear" in texts
    assert "[NAME]" in texts and "[PHONE]" in texts and "[DATE]" in texts
    rejects = pd.read_parquet(runs["dicomweb"]["dir"] / "rejects.parquet")
    assert (rejects["reason"] == "no_report").sum() >= 4  # two studies x two images without a report


def test_second_sync_fetches_only_new_studies_and_instances(runs, archive, orthanc, tmp_path):
    user, password = orthanc.auth
    env = {"MEDCLIP_DICOMWEB_USER": user, "MEDCLIP_DICOMWEB_PASSWORD": password}
    out = tmp_path / "sync"
    shutil.copytree(runs["dicomweb"]["dir"], out)
    state = out / "pacs" / "state.jsonl"
    before = {p: p.stat().st_mtime_ns for p in (out / "pacs" / "images").rglob("*.dcm")}
    args = ["manifest", f"dicomweb+{orthanc.dicomweb_url}", "--out", str(out), "--modalities", "all", "--salt", SALT]
    same = run_cli(*args, env=env)
    assert "0 fetched, 0 updated" in same.stdout
    lines = state.read_text().splitlines()
    # a new study, and one more image in a study already synced
    new = make_cxr_study(tmp_path / "new", "MRN12312399", "NEWCOMB^ARTHUR", "ACCQ7789999", n_images=1, seed=7)
    first = archive["studies"][4]
    ds = pydicom.dcmread(first.files[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    extra = tmp_path / "extra.dcm"
    ds.save_as(extra)
    orthanc.upload([*new.files, extra])
    again = run_cli(*args, env=env)
    assert "1 fetched, 1 updated" in again.stdout, again.stdout
    meta = json.loads((out / "manifest.meta.json").read_text())
    assert meta["sync"]["instances"] == 2  # exactly the two new instances were retrieved
    assert len(state.read_text().splitlines()) == len(lines) + 2
    after = {p: p.stat().st_mtime_ns for p in (out / "pacs" / "images").rglob("*.dcm")}
    assert all(after[p] == t for p, t in before.items())  # nothing re-downloaded
    assert len(after) == len(before) + 2
    orthanc.rest("DELETE", f"/instances/{_orthanc_id(orthanc, extra)}")
    orthanc.rest("DELETE", f"/instances/{_orthanc_id(orthanc, new.files[0])}")


def _orthanc_id(orthanc, path: Path) -> str:
    ds = pydicom.dcmread(path)
    found = orthanc.rest("POST", "/tools/lookup", data=str(ds.SOPInstanceUID)).json()
    return found[0]["ID"]


def test_interrupted_sync_resumes_to_the_uninterrupted_result(runs, archive, orthanc, tmp_path):
    """Kill a sync (SIGKILL) after its first studies are committed; the rerun ends with the same manifest."""
    user, password = orthanc.auth
    env = {"MEDCLIP_DICOMWEB_USER": user, "MEDCLIP_DICOMWEB_PASSWORD": password}
    out = tmp_path / "killed"
    args = ["manifest", f"dicomweb+{orthanc.dicomweb_url}", "--out", str(out), "--salt", SALT, "--modalities", "all"]
    args += ["--reports", str(archive["hl7"]), "--workers", "1"]
    state = out / "pacs" / "state.jsonl"
    killed_at = None
    for _ in range(5):  # the kill must land mid-sync; try again if the process was too quick for it
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "medclip.cli", *args]
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            if state.is_file() and len(state.read_text().splitlines()) >= 3:  # the header + 2 studies
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = len([line for line in state.read_text().splitlines()[1:] if line.endswith("}")])
                break
            time.sleep(0.001)
        if killed_at is not None:
            break
    if killed_at is None:
        pytest.skip("every sync finished before it could be killed (this machine is too quick for the check)")
    listed = len(orthanc.studies())
    assert 0 < killed_at < listed
    done = run_cli(*args, env=env)
    assert f"{killed_at} already synced" in done.stdout, done.stdout
    rows, rejects = _comparable(out)
    full, full_rejects = _comparable(runs["dicomweb"]["dir"])
    pd.testing.assert_frame_equal(rows, full, check_dtype=False)
    assert rejects == full_rejects
    entries = [json.loads(line) for line in state.read_text().splitlines()[1:]]
    assert len({e["study"] for e in entries}) == len(entries) == listed  # no study twice
    assert not (out / "pacs" / ".partial").exists()


def test_fetch_failure_is_a_reject_and_the_next_run_retries(orthanc, archive, tmp_path, monkeypatch):
    from medclip.config import ManifestCfg
    from medclip.ingest.manifest import manifest_from_config
    from medclip.ingest.sources.dicomweb import DicomWebSource

    user, password = orthanc.auth
    monkeypatch.setenv("MEDCLIP_DICOMWEB_USER", user)
    monkeypatch.setenv("MEDCLIP_DICOMWEB_PASSWORD", password)
    broken = archive["studies"][5].study_uid
    real = DicomWebSource.fetch_series

    def flaky(self, study_uid, series_uid, sink):
        if study_uid == broken:
            raise ConnectionResetError("connection reset by peer")
        return real(self, study_uid, series_uid, sink)

    monkeypatch.setattr(DicomWebSource, "fetch_series", flaky)
    cfg = ManifestCfg(
        source=f"dicomweb+{orthanc.dicomweb_url}", out_dir=str(tmp_path), salt=SALT, modalities=["all"], retries=2
    )
    result = manifest_from_config(cfg, show_progress=False)
    failed = result.rejects[result.rejects["reason"] == "fetch_failed"]
    assert len(failed) == 1 and broken not in failed.iloc[0]["detail"]
    assert result.meta["sync"]["failed"] == 1
    monkeypatch.setattr(DicomWebSource, "fetch_series", real)
    again = manifest_from_config(cfg, show_progress=False)
    assert again.meta["sync"]["fetched"] == 1 and "fetch_failed" not in set(again.rejects["reason"])


def test_credentials_never_on_the_command_line_and_wrong_ones_fail_clearly(orthanc, tmp_path):
    url = orthanc.dicomweb_url.replace("http://", "http://someone:secret@")
    done = run_cli("manifest", f"dicomweb+{url}", "--out", str(tmp_path / "a"), check=False)
    assert done.returncode == 2 and "never given on the command line" in done.stderr
    bad = {"MEDCLIP_DICOMWEB_USER": "medclip", "MEDCLIP_DICOMWEB_PASSWORD": "wrong"}
    done = run_cli("manifest", f"dicomweb+{orthanc.dicomweb_url}", "--out", str(tmp_path / "b"), env=bad, check=False)
    assert done.returncode == 2 and "401" in done.stderr and "wrong" not in done.stderr


def test_netrc_credentials(orthanc, tmp_path):
    user, password = orthanc.auth
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {user} password {password}\n")
    netrc.chmod(0o600)
    env = {"NETRC": str(netrc), "MEDCLIP_DICOMWEB_USER": "", "MEDCLIP_DICOMWEB_PASSWORD": ""}
    done = run_cli(
        "manifest", f"dicomweb+{orthanc.dicomweb_url}", "--out", str(tmp_path / "n"), "--salt", SALT, env=env
    )
    assert "studies listed" in done.stdout
    assert password not in done.stdout + done.stderr


def test_pixels_are_the_pacs_own(runs):
    """De-identified copies keep PixelData bit-exact (same transfer syntax, no transcoding)."""
    df = pd.read_parquet(runs["dicomweb"]["dir"] / "manifest.parquet")
    ds = pydicom.dcmread(df["image_path"].iloc[0])
    assert ds.PatientIdentityRemoved == "YES"
    assert np.asarray(ds.pixel_array).size > 0
