"""The sync store of a PACS source inside ``--out``: de-identified instances plus an append-only state file.

Layout::

    OUT/pacs/state.jsonl                         a header line, then one line per finished study (later lines win)
    OUT/pacs/images/<study>/<series>/<sop>.dcm   de-identified instances (every name a salted key)
    OUT/pacs/.partial/<study>/                   a study being fetched; moved into images/ when complete

A study is finished only once its folder is in ``images/`` *and* its line is in the state file; a run killed at any
point leaves either a partial folder (discarded by the next run) or a folder without a line (discarded too), so a
rerun ends with exactly the studies of an uninterrupted run and never duplicates one. Nothing raw is stored:
studies, series and instances are named by salted keys, and a study's header identifiers (for exact-match
scrubbing of its report) only as salted hashes (:meth:`medclip.deid.identifiers.KnownIdentifiers.hashed`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from medclip.errors import InputError
from medclip.ingest.archive import ArchiveScan, InlineReport, register_report

logger = logging.getLogger(__name__)

STORE_DIR, STATE_NAME, IMAGES_DIR, PARTIAL_DIR = "pacs", "state.jsonl", "images", ".partial"
STATE_VERSION = 1


class SyncStore:
    """Finished studies of one output folder; ``commit`` is the only way a study becomes finished."""

    def __init__(self, out_dir: str | Path, *, salt_fingerprint: str, source: str):
        self.root = Path(out_dir) / STORE_DIR
        self.state_path = self.root / STATE_NAME
        self.studies: dict[str, dict] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        self._load(salt_fingerprint, source)

    def _load(self, fingerprint: str, source: str) -> None:
        if not self.state_path.is_file() or self.state_path.stat().st_size == 0:
            header = {"state_version": STATE_VERSION, "salt_fingerprint": fingerprint, "source": source}
            self._append(header)
            return
        lines = self.state_path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0])
        if header.get("salt_fingerprint") != fingerprint:
            raise InputError(
                f"{self.state_path}: this sync store was keyed with another patient salt; rerun with the salt of "
                "its first run (OUT/.medclip_salt, --salt-file) or sync into a new --out"
            )
        if header.get("source") != source:
            logger.warning(
                "%s was synced from %s; now syncing from %s into it", self.root, header.get("source"), source
            )
        for n, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a kill mid-write: that study is simply not finished
                logger.warning(
                    "%s line %d is incomplete (an interrupted run); that study is fetched again", self.state_path, n
                )
                continue
            self.studies[entry["study"]] = entry
        if lines and not self.state_path.read_bytes().endswith(b"\n"):
            with open(self.state_path, "a", encoding="utf-8") as f:
                f.write("\n")

    def _append(self, entry: dict) -> None:
        with open(self.state_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def clean(self) -> int:
        """Drop what an interrupted run left: partial folders and study folders without a state line."""
        dropped = 0
        partial = self.root / PARTIAL_DIR
        if partial.is_dir():
            dropped += sum(1 for _ in partial.iterdir())
            shutil.rmtree(partial)
        images = self.root / IMAGES_DIR
        if images.is_dir():
            for folder in images.iterdir():
                if folder.name not in self.studies:
                    shutil.rmtree(folder)
                    dropped += 1
        if dropped:
            logger.info("discarded %d unfinished studies of an interrupted sync; they are fetched again", dropped)
        return dropped

    def finish(self) -> None:
        """After a run: remove the (now empty) partial folder."""
        partial = self.root / PARTIAL_DIR
        if partial.is_dir() and not any(partial.iterdir()):
            partial.rmdir()

    def begin(self, study: str) -> Path:
        """An empty partial folder for ``study`` (a previous try's files removed)."""
        folder = self.root / PARTIAL_DIR / study
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def commit(self, entry: dict, partial: Path | None) -> None:
        """Make a study finished: its partial folder (if any files) moves into images/, then its state line."""
        study = entry["study"]
        final = self.root / IMAGES_DIR / study
        if partial is not None and partial.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # new instances of a study synced before: merge them in
                for f in sorted(partial.rglob("*.dcm")):
                    target = final / f.relative_to(partial)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(f, target)
                shutil.rmtree(partial)
            else:
                os.replace(partial, final)
        entry = {**entry, "synced": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._append(entry)
        self.studies[study] = entry

    def image_path(self, study: str, relative: str) -> Path:
        return self.root / IMAGES_DIR / study / relative

    def scan(self, label: str) -> ArchiveScan:
        """The finished studies as an :class:`ArchiveScan` of keyed records (``scan.keyed``)."""
        scan = ArchiveScan(inputs=0, keyed=True)
        for study in sorted(self.studies):
            entry = self.studies[study]
            for record in entry["instances"]:
                scan.images.append(
                    {
                        **record,
                        "image_path": str(self.image_path(study, record["file"])),
                        "id_hashes": entry["id_hashes"],
                    }
                )
            scan.rejects += entry["rejects"] + entry.get("report_rejects", [])
            scan.inputs += len(entry["instances"]) + len(entry["rejects"])
            for r in entry.get("reports", []):
                report = InlineReport(r["id"], r["text"], r["encoding"], r["sections"], frozenset(), r["replacements"])
                register_report(scan, (r["accession"], r["study_uid"]), report)
        logger.debug("%s: %d finished studies from %s", self.root, len(self.studies), label)
        return scan
