"""The training-overlap check shared by ``medclip eval`` and ``medclip index build``.

A checkpoint records the salted keys of the patients and studies it trained on (:mod:`medclip.ingest.trained_on`).
Evaluating on a split that holds any of them would report training-set figures as held-out ones, so it is refused
(:class:`TrainingOverlapError`, exit code 2) unless the caller allows it; the counts go into the output either way.
Keys of different patient salts are not comparable: that is refused too, unless allowed (another archive), when the
check is skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medclip.errors import InputError
from medclip.ingest.tables import EvalTable
from medclip.ingest.trained_on import count_overlap, read_trained_on

logger = logging.getLogger(__name__)

__all__ = ["TrainingOverlapError", "check_training_overlap"]


class TrainingOverlapError(InputError):
    """The evaluated split holds patients or studies the checkpoint trained on."""


def _describe(counts: dict) -> str:
    patients = f"{counts['patients']} of {counts['of_patients']} patients"
    studies = f"{counts['studies']} of {counts['of_studies']} studies"
    if counts["of_patients"] and counts["of_studies"]:
        return f"{patients} ({studies})"
    return patients if counts["of_patients"] else studies


def _skipped(reason: str, checkpoint: Path, split: str) -> dict:
    logger.warning("training overlap of split '%s' with %s not checked: %s", split, checkpoint, reason)
    return {"overlap_check": f"skipped: {reason}"}


def check_training_overlap(
    checkpoint: str | Path, table: EvalTable, split: str, *, allow: bool = False, action: str = "evaluate"
) -> dict:
    """Compare ``split`` of ``table`` with what ``checkpoint`` trained on -> the output's provenance entries.

    Returns ``{"overlap_check": "passed" | "overlap allowed" | "skipped: <why>", "training_overlap": counts}``
    (counts: patients / of_patients / studies / of_studies; absent when skipped). Raises
    :class:`TrainingOverlapError` with a one-line reason when the split overlaps and ``allow`` is false.
    """
    checkpoint = Path(checkpoint)
    record = read_trained_on(checkpoint)
    if record is None:
        return _skipped("the checkpoint records no training patients (trained by an older medclip)", checkpoint, split)
    rows = table.subset(split).rows
    if not {"patient_key", "study_key"} & set(rows.columns):
        return _skipped(f"{table.source} has no patient_key / study_key column", checkpoint, split)
    ours, theirs = table.salt_fingerprint, record.get("salt_fingerprint")
    if ours and theirs and ours != theirs:
        # Not comparable, so not checkable: a rebuild with a new salt would otherwise pass training patients off as
        # held-out ones. Another hospital's archive is the case to insist on.
        if not allow:
            raise TrainingOverlapError(
                f"cannot check split '{split}' against the training set of {checkpoint}: its manifest has another "
                f"patient salt (fingerprint {ours}, the checkpoint's {theirs}); rebuild it with the training "
                "manifest's salt (--salt-file TRAIN_MANIFEST/.medclip_salt), or pass --allow-overlap for another archive"
            )
        return _skipped("different patient salt", checkpoint, split)
    counts = count_overlap(
        record,
        patient_keys=rows["patient_key"].dropna() if "patient_key" in rows.columns else (),
        study_keys=rows["study_key"].dropna() if "study_key" in rows.columns else (),
    )
    counts["salt_compared"] = bool(ours and theirs)  # False: a CSV's keys, or an older manifest: salt not known
    if not counts["salt_compared"]:
        logger.warning(
            "the keys of %s or of %s carry no salt fingerprint: keys of another salt would not match, so an overlap "
            "could go unseen",
            table.source,
            checkpoint,
        )
    if not (counts["patients"] or counts["studies"]):
        return {"overlap_check": "passed", "training_overlap": counts}
    what = _describe(counts)
    if not allow:
        verb = "evaluate" if action == "evaluate" else "index them"
        raise TrainingOverlapError(
            f"refusing to {action}: {what} of split '{split}' were in the training set of {checkpoint} "
            f"(use --allow-overlap to {verb} anyway)"
        )
    logger.warning("--allow-overlap: %s of split '%s' were in the training set of %s", what, split, checkpoint)
    return {"overlap_check": "overlap allowed", "training_overlap": counts}
