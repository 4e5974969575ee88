"""The ``medclip`` command line. The only module that configures logging handlers.

Commands that take a configuration (``train``, ``eval``, ``index``, ``manifest``, ``demo``) read a typed schema from
:mod:`medclip.config`: an optional YAML file, then the command's flags (sugar for config keys, whose defaults live
in the schema only), then dotted ``key=value`` overrides. Choices (layouts, tasks, demos, label sets) come from the
registries.

Exit codes: 0 success; 2 a user error (bad usage, path, config key or input file), one line naming it and the fix;
1 a bug, with its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medclip.config import (
    DemoCfg,
    EvalCfg,
    IndexBuildCfg,
    IndexQueryCfg,
    ManifestCfg,
    PreprocessCfg,
    default_of,
    load_config,
)
from medclip.errors import MedclipError

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
# Errors the user can fix: one line, exit 2. Anything else is a bug: traceback, exit 1.
USER_ERRORS = (MedclipError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
CFG = "cfg:"  # argparse dest prefix of flags that set a config key


class UsageError(MedclipError):
    """Bad command-line usage: reported in one line, exit code 2."""


class RegistryChoices:
    """argparse ``choices`` read from a registry only when argparse checks a value or prints help.

    Keeps ``medclip sections`` from importing torch just to build the parser.
    """

    def __init__(self, names: Callable[[], list[str]], *extra: str) -> None:
        self._names, self._extra = names, extra

    def _all(self) -> list[str]:
        return [*self._names(), *self._extra]

    def __contains__(self, value: object) -> bool:
        return value in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())


def _registry_option(p: argparse.ArgumentParser, *flags: str, names: RegistryChoices, metavar: str, help: str,
                     **kwargs: Any) -> None:  # fmt: skip
    """An option or positional whose choices come from a registry; they are listed in --help only when asked."""
    kwargs.setdefault("help", f"{help}: %(choices)s" if help else "%(choices)s")
    if "key" in kwargs:
        _option(p, *flags, choices=names, metavar=metavar, **kwargs)
    else:
        kwargs.pop("schema", None)
        p.add_argument(*flags, choices=names, metavar=metavar, **kwargs)


def _layouts() -> list[str]:
    from medclip.ingest.layouts import LAYOUTS

    return LAYOUTS.list()


def _eval_tasks() -> list[str]:
    from medclip.eval.pipeline import EVAL_TASKS

    return list(EVAL_TASKS)


def _demos() -> list[str]:
    from medclip.demo import DEMOS

    return DEMOS.list()


def _label_sets() -> list[str]:
    from medclip.reports.label_rules import LABEL_SETS

    return list(LABEL_SETS)


def _comma_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _option(p: argparse.ArgumentParser, *flags: str, key: str, schema: type, help: str, **kwargs: Any) -> None:
    """A flag that sets config ``key``; its default (shown in --help) is the schema's, declared nowhere else."""
    default = default_of(schema, key)
    shown = "" if "const" in kwargs or default in ("", [], None) else f" (default: {default})"
    if "const" not in kwargs:
        kwargs.setdefault("metavar", flags[-1].lstrip("-").upper().replace("-", "_"))
    p.add_argument(*flags, dest=CFG + key, default=argparse.SUPPRESS, help=help + shown, **kwargs)


def _flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line's flags set, by dotted key."""
    return {k[len(CFG) :]: v for k, v in vars(args).items() if k.startswith(CFG)}


def _parser_kwargs(name: str, help_text: str) -> dict:
    return {
        "help": help_text,
        "description": help_text,
        "epilog": f"example:\n  {EXAMPLES[name]}",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }


def _command_config(args: argparse.Namespace, schema: type, positional: dict[str, Any]) -> Any:
    """YAML (``--config``) + positional arguments and flags + ``key=value`` overrides -> ``schema``."""
    values = {**{k: v for k, v in positional.items() if v is not None}, **_flag_values(args)}
    return load_config(args.config, args.overrides, schema=schema, values=values)


# ---------------------------------------------------------------------------------------------------- commands


def cmd_synth(args) -> int:
    from medclip.demo import DEMOS

    summary = DEMOS.get(args.modality).synth(Path(args.out_dir), args.studies, args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_manifest(args) -> int:
    from medclip.ingest.manifest import manifest_from_config, write_manifest

    cfg: ManifestCfg = _command_config(args, ManifestCfg, {"source": args.archive})
    if not cfg.out:
        raise UsageError("manifest needs an output folder: --out DIR (or out=DIR)")
    result = manifest_from_config(cfg, show_progress=not args.quiet)
    write_manifest(result, cfg.out)
    c = result.meta["counts"]
    print(f"inputs = kept + rejected: {c['inputs']} = {c['kept']} + {c['rejected']}")
    print(
        f"reports: {c['reports_found']} found, {c['reports_rejected']} rejected; "
        f"sidecar files skipped: {c['sidecar_files_skipped']}"
    )
    for reason, n in sorted(c["reject_reasons"].items()):
        print(f"  rejected {reason}: {n}")
    print(f"studies {c['studies']}, patients {c['patients']}, splits {c['splits']} -> {cfg.out}")
    return 0


def cmd_prepare(args) -> int:
    from medclip.data.shards import parse_shard_spec, prepare_shards

    preprocess = load_config(args.config).preprocess if args.config else PreprocessCfg()
    if args.image_size:
        preprocess.image_size = args.image_size
    summary = prepare_shards(
        args.manifest,
        args.out,
        preprocess=preprocess,
        workers=args.workers,
        shard=parse_shard_spec(args.shard),
        show_progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args) -> int:
    from medclip.train.trainer import train

    cfg = load_config(args.config, args.overrides)
    final = train(cfg, show_progress=not args.quiet, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        print(f"checkpoint: {final}")
    return 0


def cmd_eval(args) -> int:
    from medclip.eval.pipeline import EVAL_TASKS, evaluate
    from medclip.eval.report import markdown_table, write_results

    tasks = list(EVAL_TASKS) if args.task == "all" else [args.task]
    cfg: EvalCfg = _command_config(args, EvalCfg, {"tasks": tasks})
    if bool(cfg.manifest) == bool(cfg.csv):
        raise UsageError("eval needs exactly one of --manifest DIR (a `medclip manifest` output) or --csv FILE")
    if not cfg.checkpoint:
        raise UsageError("eval needs --checkpoint CKPT (a run's final/ directory)")
    if not cfg.out_dir:
        cfg.out_dir = str(Path(cfg.checkpoint).parent / f"eval_{args.task}")
    results = evaluate(cfg, show_progress=not args.quiet)
    write_results(results, cfg.out_dir, title=f"medclip eval {args.task}")
    print(markdown_table(results))
    out = cfg.out_dir
    print(f"results: {out}/results.json, {out}/results.md; plots: {', '.join(results['plots'].values()) or 'none'}")
    return 0


def cmd_index(args) -> int:
    from medclip.eval.index import build_case_index, load_case_index, query_case_index, results_table

    if args.index_command == "build":
        cfg: IndexBuildCfg = _command_config(args, IndexBuildCfg, {})
        if bool(cfg.manifest) == bool(cfg.csv):
            raise UsageError("index build needs exactly one of --manifest DIR or --csv FILE")
        if not cfg.checkpoint or not cfg.out:
            raise UsageError("index build needs --checkpoint CKPT and --out IDX")
        info = build_case_index(cfg, show_progress=not args.quiet).info
        print(
            f"case index: {info['n']} images, {info['kind']} ({info['compression']}), built in {info['build_s']}s "
            f"-> {cfg.out}"
        )
        return 0
    q: IndexQueryCfg = _command_config(args, IndexQueryCfg, {"index": args.index, "query": args.query})
    index = load_case_index(q.index, nprobe=q.nprobe or None)
    answer = query_case_index(
        index, q.query, k=q.k, checkpoint=q.checkpoint or None, unique_studies=q.unique_studies, device=q.device
    )
    out = Path(q.json) if q.json else Path(q.index) / "last_query.json"
    out.write_text(json.dumps(answer, indent=2))
    print(results_table(answer))
    print(f"\nJSON: {out}")
    return 0


def cmd_demo(args) -> int:
    from medclip.demo import demo_out_dir, run_demo, split_overrides
    from medclip.eval.report import markdown_table

    demo_overrides, run_overrides = split_overrides(args.overrides)
    cfg: DemoCfg = load_config(None, demo_overrides, schema=DemoCfg, values=_flag_values(args))
    results = run_demo(cfg, overrides=run_overrides, show_progress=not args.quiet)
    out = demo_out_dir(cfg)
    print(markdown_table(results))
    print(f"timings (s): {json.dumps(results['timings'])}")
    print(f"results: {out}/results.json, {out}/results.md; checkpoint: {results['checkpoint']}")
    return 0


def cmd_label(args) -> int:
    from medclip.reports.label_io import label_reports_file

    summary = label_reports_file(
        args.reports,
        args.out,
        label_set=args.labels,
        sections=tuple(args.sections.split(",")),
        rules=args.rules,
        id_column=args.id_column,
        text_column=args.text_column,
        show_progress=not args.quiet,
    )
    print(f"inputs = labelled + rejected: {summary['inputs']} = {summary['labelled']} + {summary['rejected']}")
    for reason, n in sorted(summary["reject_reasons"].items()):
        print(f"  rejected {reason}: {n}")
    print(f"labels ({args.labels}) -> {summary['out']}")
    return 0


def cmd_sections(args) -> int:
    from medclip.reports.sections import sections_json

    path = Path(args.report)
    if not path.is_file():
        raise UsageError(f"report file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; convert it (e.g. iconv -f latin1 -t utf-8)") from None
    print(sections_json(text))
    return 0


# ---------------------------------------------------------------------------------------------------- parser


def _config_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--config", default=None, help=f"a YAML file of {what} keys (flags and key=value override it)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted key=value overrides of the same keys")


def _source_args(p: argparse.ArgumentParser, schema: type) -> None:
    _option(p, "--manifest", key="manifest", schema=schema, help="manifest directory (a `medclip manifest` output)")
    _option(p, "--csv", key="csv", schema=schema, help="CSV with an image-path column, optional text, 0/1/-1 labels")
    _option(p, "--image-col", key="image_col", schema=schema, help="image-path column of --csv (default: image_path, "
            "path, image, ...)")  # fmt: skip
    _option(p, "--text-col", key="text_col", schema=schema, help="report-text column of --csv (default: report, ...)")
    _option(p, "--shards", key="shards", schema=schema, help="prepared images of --manifest (`medclip prepare`) "
            "to read instead of files")  # fmt: skip
    _option(p, "--checkpoint", key="checkpoint", schema=schema, help="a run's final/ directory")
    _option(p, "--batch-size", key="batch_size", schema=schema, type=int, help="images per forward pass")
    _option(p, "--device", key="device", schema=schema, help="cpu, cuda, cuda:N")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", **_parser_kwargs("demo", "synthesise an archive, build a manifest, train, evaluate"))
    _registry_option(
        p,
        "--modality",
        key="modality",
        schema=DemoCfg,
        names=RegistryChoices(_demos),
        metavar="NAME",
        help="which demo",
    )
    _option(p, "--out", key="out_dir", schema=DemoCfg, help="run directory (default runs/demo, runs/demo_<modality>)")
    _option(p, "--studies", key="studies", schema=DemoCfg, type=int, help="studies (sketches) in the synthetic "
            "archive (default: 2000 CXR studies, 1500 CT studies, 1000 sketches)")  # fmt: skip
    _option(p, "--seed", key="seed", schema=DemoCfg, type=int, help="synthesis and training seed")
    p.add_argument("overrides", nargs="*", default=[], help="training-config overrides key=value (e.g. "
                   "train.epochs=3); demo.KEY=VALUE sets the demo's own keys")  # fmt: skip
    p.set_defaults(func=cmd_demo)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", **_parser_kwargs("synth", "write a synthetic hospital archive (DICOM + reports)"))
    _registry_option(p, "modality", names=RegistryChoices(_demos), metavar="MODALITY", help="which archive")
    p.add_argument("out_dir")
    p.add_argument("--studies", "--n", dest="studies", type=int, default=400, help="studies (sketches for sketch)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)


def _add_manifest(sub) -> None:
    s = ManifestCfg
    p = sub.add_parser("manifest", **_parser_kwargs("manifest", "scan an archive into manifest.parquet + rejects"))
    p.add_argument("archive", nargs="?", help="the archive folder, or the CSV of --layout csv (or source=PATH)")
    _registry_option(p, "--layout", key="layout", schema=s, names=RegistryChoices(_layouts), metavar="LAYOUT",
                     help="dicom: DICOM tree + <accession>.txt; dicom-ct: one row per CT series or NIfTI volume; "
            "mimic-cxr-jpg: files/pNN/p*/s*/; openi: XML + PNG; csv: ARCHIVE is a CSV of image paths, "
            "patient, study and report")  # fmt: skip
    _option(p, "--modalities", key="modalities", schema=s, type=_comma_list, help="comma-separated modalities to "
            "keep (default CR,DX,DR; CT for dicom-ct); others are rejected with reason 'modality'")  # fmt: skip
    _option(p, "--reports", key="reports", schema=s, help="report table (CSV/JSONL: study key + text) or a folder of "
            "<key>.txt files")  # fmt: skip
    _option(p, "--column", key="columns", schema=s, action="append", metavar="ROLE=COLUMN",
            help="csv layout: name a column (roles: image, report_text, report_path, patient, study, view, "
            "modality); repeat for several image columns; the rest is auto-detected")  # fmt: skip
    _option(p, "--out", key="out", schema=s, help="output folder")
    _option(p, "--salt", key="salt", schema=s, help="secret salt for patient-key hashes (or env MEDCLIP_PATIENT_SALT)")
    _option(p, "--text-policy", key="text_policy", schema=s, help="which report text pairs with an image")
    _option(p, "--no-verify", key="verify_pixels", schema=s, action="store_const", const=False,
            help="skip decoding every image once while scanning")  # fmt: skip
    _registry_option(
        p,
        "--labels",
        key="labels",
        schema=s,
        names=RegistryChoices(_label_sets),
        metavar="SET",
        help="attach report labels to the manifest",
    )
    _config_args(p, "manifest")
    p.set_defaults(func=cmd_manifest)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", **_parser_kwargs("prepare", "decode + resize manifest images once into shards"))
    p.add_argument("manifest", help="a `medclip manifest` output folder")
    p.add_argument("--out", required=True, help="shard folder (rerunning into it skips finished shards)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (default: all cores)")
    p.add_argument("--shard", default=None, help="I/N: this machine's part of N (blocks k with k %% N == I)")
    p.add_argument("--image-size", type=int, default=0, help="side in px (default: the config's, else 224)")
    p.add_argument("--config", default=None, help="take the preprocess recipe from this YAML / packaged config")
    p.set_defaults(func=cmd_prepare)


def _add_train(sub) -> None:
    p = sub.add_parser("train", **_parser_kwargs("train", "train a model from a YAML config (+ key=value overrides)"))
    p.add_argument("config", help="a YAML file or a packaged config name (demo_cxr, tiny, ...)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in train.out_dir/checkpoints (start fresh if none)")  # fmt: skip
    p.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    s = EvalCfg
    p = sub.add_parser("eval", **_parser_kwargs("eval", "evaluate a checkpoint: zero-shot, retrieval, linear probe"))
    _registry_option(p, "task", names=RegistryChoices(_eval_tasks, "all"), metavar="TASK", help="what to evaluate")
    _source_args(p, s)
    _option(p, "--labels", key="labels", schema=s, help="ground-truth CSV keyed by study_id (with --manifest)")
    _option(p, "--label-cols", key="label_cols", schema=s, type=_comma_list,
            help="comma-separated label columns of --csv (default: every 1/0/-1/blank column)")  # fmt: skip
    _option(p, "--prompts", key="prompts", schema=s, help="prompt set (cxr_demo, chexpert, chestxray14, ct, sketch) "
            "or a YAML file")  # fmt: skip
    _option(p, "--mode", key="mode", schema=s, choices=("multilabel", "multiclass"), help="zero-shot scoring")
    _option(p, "--split", key="split", schema=s, help="train, val, test or all")
    _option(p, "--bootstrap", key="bootstrap", schema=s, type=int, help="bootstrap resamples for 95%% CIs (0: none)")
    _option(p, "--seed", key="seed", schema=s, type=int, help="bootstrap / sampling seed")
    _option(p, "--no-cache", key="cache", schema=s, action="store_const", const=False,
            help="recompute embeddings instead of reusing OUT/embeddings.*")  # fmt: skip
    _option(p, "--out", key="out_dir", schema=s, help="output directory (default: next to the checkpoint)")
    _config_args(p, "eval")
    p.set_defaults(func=cmd_eval)


def _add_index(sub) -> None:
    p = sub.add_parser("index", **_parser_kwargs("index", "build or query a case index (similar prior cases)"))
    isub = p.add_subparsers(dest="index_command", required=True, metavar="{build,query}")
    examples = EXAMPLES["index"].split("\n")
    b = isub.add_parser("build", help="embed every image and build a FAISS index", description="embed every image "
                        "and build a FAISS index", epilog="example:\n  " + examples[0].strip(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s = IndexBuildCfg
    _source_args(b, s)
    _option(b, "--out", key="out", schema=s, help="index directory")
    _option(b, "--split", key="split", schema=s, help="train, val, test or all")
    _option(b, "--kind", key="params.kind", schema=s, choices=("auto", "flat", "ivf", "hnsw"),
            help="auto: exact below 50,000 images, IVF above")  # fmt: skip
    _option(b, "--compression", key="params.compression", schema=s, choices=("none", "int8", "pq"),
            help="int8/pq: less memory")  # fmt: skip
    _option(b, "--nlist", key="params.nlist", schema=s, type=int, help="IVF cells (0: ~2 sqrt(N))")
    _option(b, "--nprobe", key="params.nprobe", schema=s, type=int, help="IVF cells searched per query")
    _config_args(b, "index build")
    q = isub.add_parser("query", help="similar cases for a text or an image file", description="similar cases for a "
                        "text or an image file", epilog="example:\n  " + examples[1].strip(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s = IndexQueryCfg
    q.add_argument("index", help="index directory (from `medclip index build`)")
    q.add_argument("query", help="query text, or the path of an image (DICOM / PNG / JPEG)")
    _option(q, "-k", key="k", schema=s, type=int, help="number of cases")
    _option(q, "--json", key="json", schema=s, help="write the answer here (default IDX/last_query.json)")
    _option(q, "--all-images", key="unique_studies", schema=s, action="store_const", const=False,
            help="list every matching image, not one per study")  # fmt: skip
    _option(q, "--nprobe", key="nprobe", schema=s, type=int, help="override the index's IVF nprobe")
    _option(q, "--checkpoint", key="checkpoint", schema=s, help="the checkpoint the index was built with, if it moved")
    _option(q, "--device", key="device", schema=s, help="cpu, cuda, cuda:N")
    _config_args(q, "index query")
    p.set_defaults(func=cmd_index)


def _add_label(sub) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medclip",
        description="Medical image-report contrastive learning: archive -> manifest -> CLIP model -> evaluation.",
        epilog="example:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_demo, _add_synth, _add_manifest, _add_prepare, _add_train, _add_eval, _add_index, _add_label):
        add(sub)
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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    if os.environ.get("MEDCLIP_DEBUG") == "1":  # developers: full tracebacks for user errors too
        return int(func(args) or 0)
    try:
        return int(func(args) or 0)
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except USER_ERRORS as exc:
        print(f"medclip {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception:  # a bug: show where it happened
        traceback.print_exc()
        print(f"medclip {args.command}: internal error (a bug; please report it with the traceback above)",
              file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
