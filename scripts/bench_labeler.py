"""Benchmark the rule-based report labeler: reports per second on one CPU core, printed as JSON.

Corpora: (a) the Open-i reports shipped by torchxrayvision when that package is installed, (b) every report table /
folder given as an argument (CSV / JSONL / parquet with a text column, or a folder of .txt), (c) the synthetic demo
archive's reports when neither is available. The timed loop is ``label_report(text)``: section parsing, sentence
splitting and labelling together; parsing alone is timed too so the labeller's own share is visible.

    python scripts/bench_labeler.py                        # Open-i (or synthetic) reports
    python scripts/bench_labeler.py reports.csv txt_dir/   # your own reports as well
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from medclip.reports.label_io import iter_openi_reports, read_report_texts
from medclip.reports.labeler import DEFAULT_SECTIONS, POSITIVE, UNCERTAIN, label_report, load_rules
from medclip.reports.sections import parse_sections

TARGET = 2000.0  # reports/s on one core


def _pin_one_core() -> str | None:
    """Run on one CPU so the figure is per core (Linux only); returns the core or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return str(core)


def _synthetic(studies: int) -> list[str]:
    try:
        from medclip.synth.cxr.archive import synth_cxr
    except ImportError as exc:  # the demo archive generator may not be installed / finished
        print(json.dumps({"synthetic": f"skipped: {exc}"}), file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        synth_cxr(tmp, studies=studies, seed=0)
        return list(read_report_texts(Path(tmp) / "reports").values())


def _best_time(fn, texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for text in texts:
            fn(text)
        best = min(best, time.perf_counter() - start)
    return best


def _bench(name: str, texts: list[str], rules, sections: tuple[str, ...], repeat: int) -> dict:
    label = lambda text: label_report(text, rules=rules, sections=sections)  # noqa: E731
    seconds = _best_time(label, texts, repeat)
    parse_seconds = _best_time(parse_sections, texts, repeat)
    counts: Counter = Counter()
    for text in texts:
        for key, value in label(text).items():
            counts[(key, value)] += 1
    n = len(texts)
    return {
        "corpus": name,
        "reports": n,
        "seconds": round(seconds, 4),
        "reports_per_s": round(n / seconds, 1),
        "parse_only_reports_per_s": round(n / parse_seconds, 1),
        "labelling_share": round(1 - parse_seconds / seconds, 3),
        "meets_target": n / seconds >= TARGET,
        "positive_rate": {lab: round(counts[(lab, POSITIVE)] / n, 4) for lab in rules.labels},
        "uncertain_rate": {lab: round(counts[(lab, UNCERTAIN)] / n, 4) for lab in rules.labels},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="*", help="report tables (CSV/JSONL/parquet with a text column) or .txt folders")
    ap.add_argument("--label-set", default="chexpert")
    ap.add_argument("--sections", default=",".join(DEFAULT_SECTIONS))
    ap.add_argument("--rules", default=None, help="user rules YAML merged on top of the built-in rules")
    ap.add_argument("--text-column", default=None)
    ap.add_argument("--no-openi", action="store_true", help="skip the Open-i reports even when available")
    ap.add_argument("--synthetic", type=int, default=400, help="studies in the synthetic fallback corpus")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per corpus; the best one is reported")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many reports per corpus")
    args = ap.parse_args(argv)

    core = _pin_one_core()
    start = time.perf_counter()
    rules = load_rules(args.label_set, user_rules=args.rules)
    compile_s = time.perf_counter() - start
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())

    corpora: list[tuple[str, list[str]]] = []
    openi = [] if args.no_openi else [r["text"] for r in iter_openi_reports()]
    if openi:
        corpora.append(("openi", openi))
    for path in args.reports:
        corpora.append((path, list(read_report_texts(path, text_column=args.text_column).values())))
    if not corpora:
        corpora.append(("synthetic", _synthetic(args.synthetic)))
    results = [
        _bench(name, texts[: args.limit] if args.limit else texts, rules, sections, max(1, args.repeat))
        for name, texts in corpora
        if texts
    ]
    print(
        json.dumps(
            {
                "label_set": rules.name,
                "sections": list(sections),
                "rules_compile_s": round(compile_s, 4),
                "pinned_core": core,
                "python": platform.python_version(),
                "target_reports_per_s": TARGET,
                "openi": "used" if openi else ("skipped" if args.no_openi else "torchxrayvision not installed"),
                "results": results,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
