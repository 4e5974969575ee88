"""The ``medclip`` command line. The only module that configures logging handlers.

Exit codes: 0 success, 2 bad usage or bad input (one line naming the file/key and the fix).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("medclip")

EXAMPLES = {
    "demo": "medclip demo --out runs/demo",
    "synth": "medclip synth cxr data/demo_archive --studies 200 --seed 0",
    "manifest": "medclip manifest data/demo_archive --layout dicom --out data/demo_manifest --salt MY_SITE_SECRET",
    "train": "medclip train demo_cxr data.manifest=data/demo_manifest train.out_dir=runs/cxr train.epochs=5",
    "eval": "medclip eval zeroshot --checkpoint runs/cxr/final --manifest data/demo_manifest "
    "--labels data/demo_archive/labels.csv --out runs/cxr/eval",
    "sections": "medclip sections report.txt",
}
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError)


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _parser_kwargs(name: str, help_text: str) -> dict:
    return {"help": help_text, "description": help_text, "epilog": f"example:\n  {EXAMPLES[name]}",
            "formatter_class": argparse.RawDescriptionHelpFormatter}  # fmt: skip


def cmd_synth(args) -> int:
    from medclip.data.synthetic import synth_cxr

    if args.modality != "cxr":
        raise UsageError(f"synth {args.modality}: not available yet; only 'cxr' is implemented")
    summary = synth_cxr(args.out_dir, studies=args.studies, seed=args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_manifest(args) -> int:
    from medclip.data.manifest import build_manifest, write_manifest

    result = build_manifest(args.archive, layout=args.layout, salt=args.salt, text_policy=args.text_policy,
                            verify_pixels=not args.no_verify, show_progress=not args.quiet)  # fmt: skip
    write_manifest(result, args.out)
    c = result.meta["counts"]
    print(f"inputs = kept + rejected: {c['inputs']} = {c['kept']} + {c['rejected']}")
    print(f"reports: {c['reports_found']} found, {c['reports_rejected']} rejected; sidecar files skipped: "
          f"{c['sidecar_files_skipped']}")  # fmt: skip
    for reason, n in sorted(c["reject_reasons"].items()):
        print(f"  rejected {reason}: {n}")
    print(f"studies {c['studies']}, patients {c['patients']}, splits {c['splits']} -> {args.out}")
    return 0


def cmd_train(args) -> int:
    from medclip.config import load_config
    from medclip.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    final = train(cfg, show_progress=not args.quiet)
    print(f"checkpoint: {final}")
    return 0


def cmd_eval(args) -> int:
    from medclip.eval.pipeline import evaluate
    from medclip.eval.report import markdown_table, write_results

    if not args.manifest:
        raise UsageError("eval needs --manifest DIR (a `medclip manifest` output folder)")
    tasks = {"zeroshot": ("zeroshot",), "retrieval": ("retrieval",), "all": ("zeroshot", "retrieval")}[args.task]
    results = evaluate(args.checkpoint, args.manifest, tasks=tasks, split=args.split, labels_csv=args.labels,
                       prompts=args.prompts, device=args.device, show_progress=not args.quiet)  # fmt: skip
    out = args.out or str(Path(args.checkpoint).parent / f"eval_{args.task}")
    write_results(results, out)
    print(markdown_table(results))
    print(f"results: {out}/results.json, {out}/results.md")
    return 0


def cmd_demo(args) -> int:
    from medclip.demo import run_demo

    if args.modality != "cxr":
        raise UsageError(f"demo --modality {args.modality}: not available yet; only 'cxr' is implemented")
    from medclip.eval.report import markdown_table

    results = run_demo(args.out, studies=args.studies, seed=args.seed, overrides=args.overrides,
                       show_progress=not args.quiet)  # fmt: skip
    print(markdown_table(results))
    print(f"timings (s): {json.dumps(results['timings'])}")
    print(f"results: {args.out}/results.json, {args.out}/results.md; checkpoint: {results['checkpoint']}")
    return 0


def cmd_sections(args) -> int:
    from medclip.data.reports import sections_json

    path = Path(args.report)
    if not path.is_file():
        raise UsageError(f"report file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; convert it (e.g. iconv -f latin1 -t utf-8)") from None
    print(sections_json(text))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medclip",
        description="Medical image-report contrastive learning: archive -> manifest -> CLIP model -> evaluation.",
        epilog="example:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", **_parser_kwargs("demo", "synthesise an archive, build a manifest, train, evaluate"))
    p.add_argument("--modality", default="cxr", choices=("cxr", "ct", "sketch"))
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.add_argument("--studies", type=int, default=600, help="studies in the synthetic archive (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.epochs=3)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synth", **_parser_kwargs("synth", "write a synthetic hospital archive (DICOM + reports)"))
    p.add_argument("modality", choices=("cxr", "ct", "sketch"))
    p.add_argument("out_dir")
    p.add_argument("--studies", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("manifest", **_parser_kwargs("manifest", "scan an archive into manifest.parquet + rejects"))
    p.add_argument("archive")
    p.add_argument("--layout", default="dicom", choices=("dicom",))
    p.add_argument("--out", required=True)
    p.add_argument("--salt", default=None, help="secret salt for patient-key hashes (or env MEDCLIP_PATIENT_SALT)")
    p.add_argument("--text-policy", default="findings_impression")
    p.add_argument("--no-verify", action="store_true", help="skip decoding every image once while scanning")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("train", **_parser_kwargs("train", "train a model from a YAML config (+ key=value overrides)"))
    p.add_argument("config", help="a YAML file or a packaged config name (demo_cxr, tiny, ...)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", **_parser_kwargs("eval", "evaluate a checkpoint: zero-shot and/or retrieval"))
    p.add_argument("task", choices=("zeroshot", "retrieval", "all"))
    p.add_argument("--checkpoint", required=True, help="a run's final/ directory")
    p.add_argument("--manifest", help="manifest directory")
    p.add_argument("--labels", help="ground-truth CSV keyed by study_id (for zero-shot)")
    p.add_argument("--prompts", default="cxr_demo", help="packaged prompt set or a YAML file")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="output directory (default: next to the checkpoint)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sections", **_parser_kwargs("sections", "print a report's parsed sections as JSON"))
    p.add_argument("report")
    p.set_defaults(func=cmd_sections)
    return parser


def configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Third-party libraries are chatty at INFO; keep their warnings only.
    for name in ("transformers", "monai", "huggingface_hub", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.quiet)
    func: Callable = args.func
    if os.environ.get("MEDCLIP_DEBUG") == "1":  # developers: full tracebacks instead of one-line errors
        return int(func(args) or 0)
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except UsageError as exc:
        print(f"medclip {args.command}: error: {exc}", file=sys.stderr)
    except USER_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            message = message.strip("'\"")
        print(f"medclip {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
