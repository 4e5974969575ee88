"""What each ``medclip`` command does, given its parsed arguments; see :mod:`medclip.cli.parser` for the options."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from medclip.config import (
    BenchCfg,
    DemoCfg,
    EvalCfg,
    GroundCfg,
    IndexBuildCfg,
    IndexQueryCfg,
    ManifestCfg,
    PreprocessCfg,
    ServeCfg,
    load_config,
)
from medclip.errors import MedclipError

CFG = "cfg:"  # argparse dest prefix of flags that set a config key


class UsageError(MedclipError):
    """Bad command-line usage: reported in one line, exit code 2."""


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line's flags set, by dotted key."""
    return {k[len(CFG) :]: v for k, v in vars(args).items() if k.startswith(CFG)}


def command_config(args: argparse.Namespace, schema: type, positional: dict[str, Any]) -> Any:
    """YAML (``--config``) + positional arguments and flags + ``key=value`` overrides -> ``schema``."""
    values = {**{k: v for k, v in positional.items() if v is not None}, **flag_values(args)}
    return load_config(args.config, args.overrides, schema=schema, values=values)


def cmd_synth(args) -> int:
    from medclip.demo import DEMOS

    summary = DEMOS.get(args.modality).synth(Path(args.out_dir), args.studies, args.seed)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_manifest(args) -> int:
    from medclip.ingest.manifest import manifest_from_config, staged_output, write_manifest
    from medclip.io import storage

    source = args.archive
    if (
        source and "=" in source and not Path(source).exists() and "://" not in source
    ):  # `manifest source=X ...`: an override, not a path
        args.overrides, source = [source, *args.overrides], None
    cfg: ManifestCfg = command_config(args, ManifestCfg, {"source": source})
    if not cfg.out_dir:
        raise UsageError("manifest needs an output folder: --out DIR (or out_dir=DIR)")
    with staged_output(cfg.out_dir) as local_out:  # a URL: built in a local folder, then uploaded
        target, cfg.out_dir = cfg.out_dir, str(local_out)
        result = manifest_from_config(cfg, show_progress=not args.quiet)
        write_manifest(result, cfg.out_dir)
        cfg.out_dir = storage.display(target)
    c = result.meta["counts"]
    if "sync" in result.meta:
        y = result.meta["sync"]
        print(
            f"sync: {y['listed']} studies listed, {y['already']} already synced, {y['fetched']} fetched, "
            f"{y['updated']} updated, {y['failed']} failed (retried by the next run)"
        )
    print(f"inputs = kept + rejected: {c['inputs']} = {c['kept']} + {c['rejected']}")
    print(
        f"reports: {c['reports_found']} found, {c['reports_rejected']} rejected; "
        f"sidecar files skipped: {c['sidecar_files_skipped']}"
    )
    for reason, n in sorted(c["reject_reasons"].items()):
        print(f"  rejected {reason}: {n}")
    print(f"studies {c['studies']}, patients {c['patients']}, splits {c['splits']} -> {cfg.out_dir}")
    s = result.meta["splits"]
    table = f", {s['from_table']} from {s['file']}" if s["source"] == "table" else ""
    print(f"patient splits: {s['pinned']} pinned to the previous manifest{table}, {s['hashed']} by hash")
    d = result.meta.get("deid", {})
    if d.get("enabled"):
        print(
            f"de-identified: {d['reports_scrubbed']} reports scrubbed, {d['replacements']} replacements {d['by_kind']}"
        )
    return 0


def cmd_prepare(args) -> int:
    from medclip.data.shards import parse_shard_spec, prepare_shards
    from medclip.executors import make_executor

    preprocess = load_config(args.config).preprocess if args.config else PreprocessCfg()
    if args.image_size:
        preprocess.image_size = args.image_size
    shard = parse_shard_spec(args.shard)
    with make_executor(args.executor, scheduler=args.scheduler, workers=args.workers) as executor:
        summary = prepare_shards(
            args.manifest,
            args.out,
            preprocess=preprocess,
            workers=args.workers,
            shard=shard,
            show_progress=not args.quiet,
            executor=executor,
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
    from medclip.eval.report import default_out_dir, markdown_table, write_results
    from medclip.io import storage

    tasks = list(EVAL_TASKS) if args.task == "all" else [args.task]
    cfg: EvalCfg = command_config(args, EvalCfg, {"tasks": tasks})
    if args.task == "grounding" and not cfg.grounding_csv:  # `eval grounding --csv BOXES.csv`: --csv is the boxes
        cfg.grounding_csv, cfg.csv = cfg.csv, ""
    if args.task == "all" and not cfg.grounding_csv:  # grounding needs boxes; "all" is every task it has inputs for
        cfg.tasks = [t for t in cfg.tasks if t != "grounding"]
    if not cfg.out_dir and cfg.checkpoint:  # next to the checkpoint; ./RUN/eval_TASK for a URL checkpoint
        cfg.out_dir = default_out_dir(cfg.checkpoint, f"eval_{args.task}")
    results = evaluate(cfg, show_progress=not args.quiet)
    write_results(results, cfg.out_dir, title=f"medclip eval {args.task}")  # an --out URL: uploaded
    print(markdown_table(results))
    out = storage.display(cfg.out_dir).rstrip("/")
    print(f"results: {out}/results.json, {out}/results.md; plots: {', '.join(results['plots'].values()) or 'none'}")
    return 0


def cmd_ground(args) -> int:
    from medclip.eval.grounding import ground_to_files

    cfg: GroundCfg = command_config(args, GroundCfg, {"image": args.image, "phrases": args.phrase or None})
    if not cfg.checkpoint or not cfg.image or not cfg.phrases or not cfg.out_dir:
        raise UsageError('ground needs --checkpoint CKPT IMAGE "phrase" --out DIR')
    written = ground_to_files(cfg)
    for item in written["phrases"]:
        print(f"{item['phrase']}: peak at {tuple(item['peak'])} ({item['method']} map) -> {item['overlay']}")
    print(f"grid: {written['json']}")
    return 0


def cmd_bench(args) -> int:
    from medclip.bench import PRESETS, preset_table
    from medclip.bench.runner import bench_markdown, compare_results, run_bench, write_bench_results

    if args.list:
        print(preset_table())
        return 0
    if not args.name:
        raise UsageError(f"bench needs a preset name (one of {', '.join(PRESETS.list())}) or --list")
    cfg: BenchCfg = command_config(args, BenchCfg, {"name": args.name})
    results = run_bench(cfg, show_progress=not args.quiet)
    write_bench_results(results)  # an --out URL: uploaded
    out = results["out_dir"].rstrip("/")
    print(bench_markdown(results))
    if cfg.compare:
        print(compare_results(results, cfg.compare))
    print(f"results: {out}/results.json, {out}/results.md; plots: {', '.join(results['plots'].values()) or 'none'}")
    return 0


def cmd_index(args) -> int:
    from medclip.eval.index import CaseIndex, build_case_index, query_case_index, results_table
    from medclip.io import storage

    if args.index_command == "build":
        cfg: IndexBuildCfg = command_config(args, IndexBuildCfg, {})
        info = build_case_index(cfg, show_progress=not args.quiet).info
        print(
            f"case index: {info['n']} images, {info['kind']} ({info['compression']}), built in {info['build_s']}s "
            f"-> {storage.display(cfg.out_dir)}"
        )
        return 0
    q: IndexQueryCfg = command_config(args, IndexQueryCfg, {"index": args.index, "query": args.query})
    index = CaseIndex.load(q.index, nprobe=q.nprobe or None)
    answer = query_case_index(
        index,
        q.query,
        k=q.k,
        checkpoint=q.checkpoint or None,
        unique_studies=q.unique_studies,
        device=q.device,
        modality=q.modality or None,
        label=q.label or None,
    )
    if q.json:  # a path or a URL
        out = q.json
    elif storage.is_url(q.index):  # nothing goes into the index's bucket unless --json names it
        out = str(Path.cwd() / "last_query.json")
    else:
        out = storage.join(q.index, "last_query.json")
    storage.write_text(out, json.dumps(answer, indent=2))
    print(results_table(answer))
    print(f"\nJSON: {storage.display(out)}")
    return 0


def cmd_demo(args) -> int:
    from medclip.demo import demo_out_dir, run_demo, split_overrides
    from medclip.eval.report import markdown_table

    demo_overrides, run_overrides = split_overrides(args.overrides)
    cfg: DemoCfg = load_config(None, demo_overrides, schema=DemoCfg, values=flag_values(args))
    results = run_demo(cfg, overrides=run_overrides, show_progress=not args.quiet)
    out = demo_out_dir(cfg)
    print(markdown_table(results))
    print(f"timings (s): {json.dumps(results['timings'])}")
    print(f"results: {out}/results.json, {out}/results.md; checkpoint: {results['checkpoint']}")
    return 0


def cmd_serve(args) -> int:
    from medclip.serve.server import serve

    cfg: ServeCfg = command_config(args, ServeCfg, {})
    serve(cfg, announce=lambda text: print(text, flush=True))
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
