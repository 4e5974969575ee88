"""Compare report labels with a gold standard: per-label precision / recall / F1 and mention agreement, as JSON.

Both files are CSVs with an id column and one column per label holding 1 / 0 / -1 / empty (``1.0`` style floats as
written by the CheXpert labeler are accepted). Only labels present in both files and ids present in both are scored.

Positive-class scores: a label counts as positive when it is 1, or -1 with ``--uncertain positive`` (the default);
0, empty (not mentioned) and, with ``--uncertain negative``, -1 count as negative. Mention scores ask only whether the
label is mentioned at all (non-empty), and value agreement is the share of reports mentioning a label in both files
where the two values are equal.

    python scripts/eval_labeler.py labels.csv gold.csv --uncertain negative

``--regression FILE --label-set SET`` labels the texts of a regression JSONL (one object per line: ``id``, ``text`` and
one gold mapping per label set, label -> 1 / 0 / -1, a label left out = not mentioned; e.g. the project's
tests/data/label_regression.jsonl, described in docs/labels.md) with medclip's labeler and scores the labels that the
gold names, the same way, listing every report / label whose value differs:

    python scripts/eval_labeler.py --regression tests/data/label_regression.jsonl --label-set chestxray14
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

VALUES = ("1", "0", "-1", "blank")


def _value(cell: str) -> str:
    """A CSV cell -> one of VALUES (anything unreadable is blank)."""
    cell = str(cell).strip()
    if not cell:
        return "blank"
    try:
        number = int(float(cell))
    except ValueError:
        return "blank"
    return str(number) if str(number) in VALUES else "blank"


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """Precision / recall / F1; None where undefined (no predicted or no gold positives)."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {
        k: None if v is None else round(v, 4) for k, v in (("precision", precision), ("recall", recall), ("f1", f1))
    }


def _score(pred: pd.Series, gold: pd.Series, uncertain_positive: bool) -> dict:
    positive = {"1", "-1"} if uncertain_positive else {"1"}
    p_pos, g_pos = pred.isin(positive), gold.isin(positive)
    tp, fp, fn = int((p_pos & g_pos).sum()), int((p_pos & ~g_pos).sum()), int((~p_pos & g_pos).sum())
    p_m, g_m = pred != "blank", gold != "blank"
    both = p_m & g_m
    confusion = {f"gold={g}": {f"pred={p}": int(((gold == g) & (pred == p)).sum()) for p in VALUES} for g in VALUES}
    mention = _prf(int(both.sum()), int((p_m & ~g_m).sum()), int((~p_m & g_m).sum()))
    return {
        "support": int(g_pos.sum()),
        "predicted": int(p_pos.sum()),
        **_prf(tp, fp, fn),
        "mention": {
            **mention,
            "value_agreement": round(float((pred[both] == gold[both]).mean()), 4) if both.any() else None,
        },
        "confusion": confusion,
    }


def _macro(per_label: dict[str, dict], key: str = "f1", skip: tuple[str, ...] = ()) -> float | None:
    values = [v[key] for k, v in per_label.items() if k not in skip and v[key] is not None]
    return round(sum(values) / len(values), 4) if values else None


def evaluate(pred_path: Path, gold_path: Path, *, uncertain: str = "positive", id_column: str | None = None) -> dict:
    """The JSON report for ``pred_path`` against ``gold_path``."""
    pred = pd.read_csv(pred_path, dtype=str, keep_default_na=False)
    gold = pd.read_csv(gold_path, dtype=str, keep_default_na=False)
    if id_column is None:
        id_column = next((c for c in pred.columns if c in gold.columns), None)
    if id_column is None or id_column not in pred.columns or id_column not in gold.columns:
        raise SystemExit(
            f"no shared id column: {pred_path} has {list(pred.columns)}, {gold_path} has "
            f"{list(gold.columns)}; pass --id-column"
        )
    labels = [c for c in pred.columns if c in gold.columns and c != id_column]
    if not labels:
        raise SystemExit(f"no label columns shared by {pred_path} and {gold_path}")
    merged = pred.merge(gold, on=id_column, how="inner", suffixes=("_pred", "_gold"))
    per_label = {
        label: _score(merged[f"{label}_pred"].map(_value), merged[f"{label}_gold"].map(_value), uncertain == "positive")
        for label in labels
    }
    return {
        "pred": str(pred_path),
        "gold": str(gold_path),
        "id_column": id_column,
        "reports": {
            "pred": len(pred),
            "gold": len(gold),
            "scored": len(merged),
            "missing_in_pred": int((~gold[id_column].isin(pred[id_column])).sum()),
            "missing_in_gold": int((~pred[id_column].isin(gold[id_column])).sum()),
        },
        "uncertain_as": uncertain,
        "notes": [
            f"positive class = 1{' or -1' if uncertain == 'positive' else ''}; blank (not mentioned), 0"
            f"{' and -1' if uncertain == 'negative' else ''} count as negative",
            "f1 is null for a label with no gold and no predicted positives; macro averages skip it",
            "mention scores: is the label mentioned at all (non-blank) in both files",
        ],
        "macro_f1": _macro(per_label),
        "macro_f1_without_no_finding": _macro(per_label, skip=("No Finding",)),
        "macro_mention_f1": _macro({k: v["mention"] for k, v in per_label.items()}),
        "labels": per_label,
    }


def _cell(value: object) -> str:
    return "blank" if value is None else str(int(value))


def evaluate_regression(path: Path, label_set: str, *, uncertain: str = "positive") -> dict:
    """Label a regression JSONL's texts with ``label_set`` and score them against its gold for that set."""
    from medclip.reports.labeler import label_report, load_rules  # only this mode needs medclip

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if label_set in r]
    if not rows:
        raise SystemExit(f"{path}: no report has gold for label set '{label_set}'")
    rules = load_rules(label_set)
    labels = [lab for lab in rules.labels if any(lab in r[label_set] for r in rows)]
    pred = [label_report(r["text"], rules=rules) for r in rows]
    gold_cells = {lab: pd.Series([_cell(r[label_set].get(lab)) for r in rows]) for lab in labels}
    pred_cells = {lab: pd.Series([_cell(p[lab]) for p in pred]) for lab in labels}
    per_label = {lab: _score(pred_cells[lab], gold_cells[lab], uncertain == "positive") for lab in labels}
    differences = [
        {"id": r["id"], "label": lab, "gold": gold_cells[lab][i], "pred": pred_cells[lab][i], "text": r["text"]}
        for i, r in enumerate(rows)
        for lab in labels
        if gold_cells[lab][i] != pred_cells[lab][i]
    ]
    return {
        "regression": str(path),
        "label_set": label_set,
        "reports": len(rows),
        "uncertain_as": uncertain,
        "macro_f1": _macro(per_label),
        "macro_f1_without_no_finding": _macro(per_label, skip=("No Finding",)),
        "f1": {lab: v["f1"] for lab, v in per_label.items()},
        "value_agreement": round(1 - len(differences) / (len(rows) * len(labels)), 4),
        "labels": per_label,
        "differences": differences,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pred", type=Path, nargs="?", help="labels CSV from medclip label")
    ap.add_argument("gold", type=Path, nargs="?", help="gold-standard labels CSV, same columns")
    ap.add_argument("--regression", type=Path, default=None, help="regression JSONL to label and score instead")
    ap.add_argument("--label-set", default="chexpert", help="label set for --regression (chexpert, chestxray14)")
    ap.add_argument(
        "--uncertain",
        choices=("positive", "negative"),
        default="positive",
        help="count uncertain (-1) as positive or negative for precision / recall / F1",
    )
    ap.add_argument("--id-column", default=None, help="id column shared by both files (default: first shared)")
    args = ap.parse_args(argv)
    if args.regression is not None:
        if args.pred or args.gold:
            ap.error("give either PRED GOLD or --regression FILE, not both")
        if not args.regression.is_file():
            raise SystemExit(f"{args.regression} does not exist; pass a regression JSONL file")
        json.dump(evaluate_regression(args.regression, args.label_set, uncertain=args.uncertain), sys.stdout, indent=2)
        print()
        return 0
    if args.pred is None or args.gold is None:
        ap.error("give PRED and GOLD label CSVs, or --regression FILE")
    for path in (args.pred, args.gold):
        if not path.is_file():
            raise SystemExit(f"{path} does not exist; pass two labels CSV files")
    json.dump(evaluate(args.pred, args.gold, uncertain=args.uncertain, id_column=args.id_column), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
