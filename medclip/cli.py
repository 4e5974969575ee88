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
    "--labels data/demo_archive/labels.csv --out runs/cxr/eval\n  "
    "medclip eval probe --checkpoint runs/cxr/final --csv my_images.csv --image-col path --out runs/cxr/probe",
    "index": "medclip index build --checkpoint runs/cxr/final --manifest data/demo_manifest --out runs/cxr/index\n  "
    'medclip index query runs/cxr/index "small left apical pneumothorax" -k 10',
    "sections": "medclip sections report.txt",
    "label": "medclip label reports.csv --out labels.csv --labels chexpert --sections impression,findings",
    "prepare": "medclip prepare data/demo_manifest --out data/demo_shards --image-size 224 --workers 8",
}
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError)


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


def _parser_kwargs(name: str, help_text: str) -> dict:
    return {"help": help_text, "description": help_text, "epilog": f"example:\n  {EXAMPLES[name]}",
            "formatter_class": argparse.RawDescriptionHelpFormatter}  # fmt: skip


def cmd_synth(args) -> int:
    from medclip.demo import DEMOS

    if args.modality not in DEMOS:
        raise UsageError(f"synth {args.modality}: not available yet; choose from {sorted(DEMOS)}")
    summary = DEMOS[args.modality].synth(Path(args.out_dir), args.studies, args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_manifest(args) -> int:
    from medclip.data.manifest import build_manifest, write_manifest

    options = {}
    if args.column:
        if args.layout != "csv":
            raise UsageError(f"--column applies to --layout csv only, not {args.layout}")
        pairs = [c.partition("=") for c in args.column]
        if bad := [f"{k}{s}{v}" for k, s, v in pairs if not (k and s and v)]:
            raise UsageError(f"--column {bad[0]!r}: use ROLE=COLUMN, e.g. --column image=png_path")
        options["columns"] = {k: [v for k2, _, v in pairs if k2 == k] for k, _, _ in pairs}
    if args.modalities:
        modalities = tuple(m.strip().upper() for m in args.modalities.split(",") if m.strip()) or None
    else:
        modalities = ("CT",) if args.layout == "dicom-ct" else ("CR", "DX", "DR")
    result = build_manifest(args.archive, layout=args.layout, salt=args.salt, text_policy=args.text_policy,
                            modalities=modalities, verify_pixels=not args.no_verify, show_progress=not args.quiet,
                            reports=args.reports, layout_options=options, label_set=args.labels)  # fmt: skip
    write_manifest(result, args.out)
    c = result.meta["counts"]
    print(f"inputs = kept + rejected: {c['inputs']} = {c['kept']} + {c['rejected']}")
    print(f"reports: {c['reports_found']} found, {c['reports_rejected']} rejected; sidecar files skipped: "
          f"{c['sidecar_files_skipped']}")  # fmt: skip
    for reason, n in sorted(c["reject_reasons"].items()):
        print(f"  rejected {reason}: {n}")
    print(f"studies {c['studies']}, patients {c['patients']}, splits {c['splits']} -> {args.out}")
    return 0


def cmd_prepare(args) -> int:
    from medclip.config import PreprocessCfg, load_config
    from medclip.data.shards import parse_shard_spec, prepare_shards

    preprocess = load_config(args.config).preprocess if args.config else PreprocessCfg()
    if args.image_size:
        preprocess.image_size = args.image_size
    summary = prepare_shards(args.manifest, args.out, preprocess=preprocess, workers=args.workers,
                             shard=parse_shard_spec(args.shard), show_progress=not args.quiet)  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args) -> int:
    from medclip.config import load_config
    from medclip.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    final = train(cfg, show_progress=not args.quiet, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"checkpoint: {final}")
    return 0


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", help="manifest directory (a `medclip manifest` output)")
    p.add_argument("--csv", help="CSV with an image-path column, optional text and 0/1/-1/blank label columns")
    p.add_argument("--image-col", help="image-path column of --csv (default: image_path, path, image, ...)")
    p.add_argument("--text-col", help="report-text column of --csv (default: report, text, ...)")
    p.add_argument("--shards", help="prepared images of --manifest (`medclip prepare` output) to read instead of files")


def cmd_eval(args) -> int:
    from medclip.eval.pipeline import evaluate
    from medclip.eval.report import markdown_table, write_results

    if bool(args.manifest) == bool(args.csv):
        raise UsageError("eval needs exactly one of --manifest DIR (a `medclip manifest` output) or --csv FILE")
    if args.shards and not args.manifest:
        raise UsageError("--shards goes with --manifest (shards are keyed by manifest row)")
    tasks = {"zeroshot": ("zeroshot",), "retrieval": ("retrieval",), "probe": ("probe",),
             "all": ("zeroshot", "retrieval", "probe")}[args.task]  # fmt: skip
    label_cols = [c.strip() for c in args.label_cols.split(",") if c.strip()] if args.label_cols else None
    out = args.out or str(Path(args.checkpoint).parent / f"eval_{args.task}")
    results = evaluate(args.checkpoint, args.manifest, csv=args.csv, tasks=tasks, split=args.split,
                       labels_csv=args.labels, prompts=args.prompts, mode=args.mode, n_bootstrap=args.bootstrap,
                       seed=args.seed, image_col=args.image_col, text_col=args.text_col, label_cols=label_cols,
                       batch_size=args.batch_size, device=args.device, out_dir=out, cache=not args.no_cache,
                       show_progress=not args.quiet, shards=args.shards)  # fmt: skip
    write_results(results, out, title=f"medclip eval {args.task}")
    print(markdown_table(results))
    print(f"results: {out}/results.json, {out}/results.md; plots: {', '.join(results['plots'].values()) or 'none'}")
    return 0


def cmd_index(args) -> int:
    from medclip.eval.index import IndexParams, build_case_index, query_case_index, results_table

    if args.index_command == "build":
        if bool(args.manifest) == bool(args.csv):
            raise UsageError("index build needs exactly one of --manifest DIR or --csv FILE")
        if args.shards and not args.manifest:
            raise UsageError("--shards goes with --manifest (shards are keyed by manifest row)")
        params = IndexParams(kind=args.kind, compression=args.compression, nlist=args.nlist, nprobe=args.nprobe)
        index = build_case_index(args.checkpoint, args.out, manifest=args.manifest, csv=args.csv, split=args.split,
                                 params=params, image_col=args.image_col, text_col=args.text_col,
                                 device=args.device, show_progress=not args.quiet, shards=args.shards)  # fmt: skip
        info = index.info
        print(f"case index: {info['n']} images, {info['kind']} ({info['compression']}), built in {info['build_s']}s "
              f"-> {args.out}")  # fmt: skip
        return 0
    from medclip.eval.index import CaseIndex

    index = CaseIndex.load(args.index, nprobe=args.nprobe)
    answer = query_case_index(index, args.query, k=args.k, checkpoint=args.checkpoint,
                              unique_studies=not args.all_images, device=args.device)  # fmt: skip
    out = Path(args.json) if args.json else Path(args.index) / "last_query.json"
    out.write_text(json.dumps(answer, indent=2))
    print(results_table(answer))
    print(f"\nJSON: {out}")
    return 0


def cmd_demo(args) -> int:
    from medclip.demo import DEMOS, run_demo
    from medclip.eval.report import markdown_table

    if args.modality not in DEMOS:
        raise UsageError(f"demo --modality {args.modality}: not available yet; choose from {sorted(DEMOS)}")
    args.out = args.out or ("runs/demo" if args.modality == "cxr" else f"runs/demo_{args.modality}")
    results = run_demo(args.out, modality=args.modality, studies=args.studies, seed=args.seed,
                       overrides=args.overrides, show_progress=not args.quiet)  # fmt: skip
    print(markdown_table(results))
    print(f"timings (s): {json.dumps(results['timings'])}")
    print(f"results: {args.out}/results.json, {args.out}/results.md; checkpoint: {results['checkpoint']}")
    return 0


def cmd_label(args) -> int:
    from medclip.data.label_io import label_reports_file

    summary = label_reports_file(args.reports, args.out, label_set=args.labels, sections=tuple(args.sections.split(",")),
                                 rules=args.rules, id_column=args.id_column, text_column=args.text_column,
                                 show_progress=not args.quiet)  # fmt: skip
    print(f"inputs = labelled + rejected: {summary['inputs']} = {summary['labelled']} + {summary['rejected']}")
    for reason, n in sorted(summary["reject_reasons"].items()):
        print(f"  rejected {reason}: {n}")
    print(f"labels ({args.labels}) -> {summary['out']}")
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
    p.add_argument("--out", help="run directory (default runs/demo, runs/demo_ct, runs/demo_sketch)")
    p.add_argument(
        "--studies",
        type=int,
        help="studies (sketches) in the synthetic archive (default: 2000 CXR studies, 1500 CT studies, 1000 sketches)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="config overrides key=value (e.g. train.epochs=3)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("synth", **_parser_kwargs("synth", "write a synthetic hospital archive (DICOM + reports)"))
    p.add_argument("modality", choices=("cxr", "ct", "sketch"))
    p.add_argument("out_dir")
    p.add_argument("--studies", "--n", dest="studies", type=int, default=400, help="studies (sketches for sketch)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("manifest", **_parser_kwargs("manifest", "scan an archive into manifest.parquet + rejects"))
    p.add_argument("archive")
    p.add_argument("--layout", default="dicom", choices=("dicom", "dicom-ct", "mimic-cxr-jpg", "openi", "csv"),
                   help="dicom: DICOM tree + <accession>.txt; dicom-ct: one row per CT series or NIfTI volume; "
                   "mimic-cxr-jpg: files/pNN/p*/s*/; openi: XML + PNG; csv: ARCHIVE is a CSV of image paths, "
                   "patient, study and report")  # fmt: skip
    p.add_argument("--modalities", help="comma-separated modalities to keep (default CR,DX,DR; CT for dicom-ct); "
                   "others are rejected with reason 'modality'")  # fmt: skip
    p.add_argument("--reports", help="report table (CSV/JSONL: study key + text) or folder of <key>.txt files")
    p.add_argument("--column", action="append", metavar="ROLE=COLUMN",
                   help="csv layout: name a column (roles: image, report_text, report_path, patient, study, view, "
                   "modality); repeat for several image columns; the rest is auto-detected")  # fmt: skip
    p.add_argument("--out", required=True)
    p.add_argument("--salt", default=None, help="secret salt for patient-key hashes (or env MEDCLIP_PATIENT_SALT)")
    p.add_argument("--text-policy", default="findings_impression")
    p.add_argument("--no-verify", action="store_true", help="skip decoding every image once while scanning")
    p.add_argument("--labels", default=None, help="attach report labels to the manifest: chexpert or chestxray14")
    p.set_defaults(func=cmd_manifest)

    p = sub.add_parser("prepare", **_parser_kwargs("prepare", "decode + resize manifest images once into shards"))
    p.add_argument("manifest", help="a `medclip manifest` output folder")
    p.add_argument("--out", required=True, help="shard folder (rerunning into it skips finished shards)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (default: all cores)")
    p.add_argument("--shard", default=None, help="I/N: this machine's part of N (blocks k with k %% N == I)")
    p.add_argument("--image-size", type=int, default=0, help="side in px (default: the config's, else 224)")
    p.add_argument("--config", default=None, help="take the preprocess recipe from this YAML / packaged config")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", **_parser_kwargs("train", "train a model from a YAML config (+ key=value overrides)"))
    p.add_argument("config", help="a YAML file or a packaged config name (demo_cxr, tiny, ...)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in train.out_dir/checkpoints (start fresh if none)")  # fmt: skip
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", **_parser_kwargs("eval", "evaluate a checkpoint: zero-shot, retrieval, linear probe"))
    p.add_argument("task", choices=("zeroshot", "retrieval", "probe", "all"))
    p.add_argument("--checkpoint", required=True, help="a run's final/ directory")
    _add_source_args(p)
    p.add_argument("--labels", help="ground-truth CSV keyed by study_id (with --manifest)")
    p.add_argument("--label-cols", help="comma-separated label columns of --csv (default: every 1/0/-1/blank column)")
    p.add_argument("--prompts", default="cxr_demo", help="prompt set (cxr_demo, chexpert, chestxray14) or a YAML file")
    p.add_argument("--mode", default="multilabel", choices=("multilabel", "multiclass"), help="zero-shot scoring")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for 95%% CIs (0: none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap / sampling seed")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-cache", action="store_true", help="recompute embeddings instead of reusing OUT/embeddings.*")
    p.add_argument("--out", help="output directory (default: next to the checkpoint)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("index", **_parser_kwargs("index", "build or query a case index (similar prior cases)"))
    isub = p.add_subparsers(dest="index_command", required=True, metavar="{build,query}")
    b = isub.add_parser("build", help="embed every image and build a FAISS index", description="embed every image "
                        "and build a FAISS index", epilog="example:\n  " + EXAMPLES["index"].split("\n")[0].strip(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    b.add_argument("--checkpoint", required=True, help="a run's final/ directory")
    _add_source_args(b)
    b.add_argument("--out", required=True, help="index directory")
    b.add_argument("--split", default="all", choices=("train", "val", "test", "all"))
    b.add_argument("--kind", default="auto", choices=("auto", "flat", "ivf", "hnsw"),
                   help="auto: exact below 50,000 images, IVF above")  # fmt: skip
    b.add_argument("--compression", default="none", choices=("none", "int8", "pq"), help="int8/pq: less memory")
    b.add_argument("--nlist", type=int, help="IVF cells (default ~2 sqrt(N))")
    b.add_argument("--nprobe", type=int, default=16, help="IVF cells searched per query")
    b.add_argument("--device", default="cpu")
    q = isub.add_parser("query", help="similar cases for a text or an image file", description="similar cases for a "
                        "text or an image file", epilog="example:\n  " + EXAMPLES["index"].split("\n")[1].strip(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    q.add_argument("index", help="index directory (from `medclip index build`)")
    q.add_argument("query", help="query text, or the path of an image (DICOM / PNG / JPEG)")
    q.add_argument("-k", type=int, default=10, help="number of cases (default 10)")
    q.add_argument("--json", help="write the answer here (default IDX/last_query.json)")
    q.add_argument("--all-images", action="store_true", help="list every matching image, not one per study")
    q.add_argument("--nprobe", type=int, help="override the index's IVF nprobe")
    q.add_argument("--checkpoint", help="the checkpoint the index was built with, if it moved")
    q.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("label", **_parser_kwargs("label", "label reports: positive / negative / uncertain per finding"))
    p.add_argument(
        "reports", help="CSV / parquet / JSONL with an id and a text (or report-path) column, or a folder of .txt"
    )
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--labels", default="chexpert", help="label set: chexpert, chestxray14, or one defined in --rules")
    p.add_argument("--sections", default="impression,findings", help="comma-separated sections to read")
    p.add_argument("--rules", help="a user YAML adding phrases, triggers or label sets")
    p.add_argument("--id-column")
    p.add_argument("--text-column")
    p.set_defaults(func=cmd_label)

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
    args, extra = parser.parse_known_args(argv)
    # argparse ends a nargs="*" positional at the first flag: `train CONFIG a=1 --resume b=2` leaves b=2 over
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides, extra = [*args.overrides, *extra], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
