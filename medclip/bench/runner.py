"""``medclip bench NAME``: read a dataset in its official layout, apply the preset's protocol, write the results.

The evaluation itself is ``medclip eval``'s (the same zero-shot, retrieval and probe code, the same embeddings cache);
what a preset adds is the subset, the split, the label mapping, the prompt set and the headline metric of the paper it
follows, and a ``protocol`` block in results.json. Two results compare only when their protocol blocks match
(:func:`compare_results`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from medclip.bench.base import PRESETS, PROTOCOL_VERSION, BenchData, Preset, prompts_hash, subset_hash
from medclip.config import BenchCfg, EvalCfg
from medclip.errors import InputError
from medclip.eval.embeddings import Embedder
from medclip.eval.formatting import fmt, with_ci
from medclip.eval.pipeline import EvalRun, run_tasks
from medclip.eval.report import (
    check_out_url,
    default_out_dir,
    local_out_dir,
    markdown_table,
    result_files,
    upload_outputs,
    write_results,
)
from medclip.ingest.tables import finding_key
from medclip.io import storage
from medclip.models.medclip import local_checkpoint
from medclip.text.prompts import load_prompts

logger = logging.getLogger(__name__)

# protocol keys that may differ between two results that still compare (they describe the run, not the protocol)
RUN_KEYS = ("checkpoint",)


def eval_config(preset: Preset, cfg: BenchCfg) -> EvalCfg:
    """The ``medclip eval`` options the preset's protocol fixes, plus the user's bootstrap / screening choices."""
    return EvalCfg(
        tasks=list(preset.tasks),
        prompts=cfg.prompts or preset.prompts,
        mode=preset.mode,
        split="test",
        bootstrap=cfg.bootstrap,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        probe_fractions=list(preset.probe_fractions),
        probe_shots=[],
        retrieval_ks=list(preset.retrieval_ks),
        operating_point=cfg.operating_point,
        prevalence=list(cfg.prevalence),
        calibration=cfg.calibration,
        subgroups=list(cfg.subgroups),
        min_group=cfg.min_group,
        checkpoint=cfg.checkpoint,
        device=cfg.device,
    )


def _check_modality(preset: Preset, embedder: Embedder) -> None:
    dims = int((embedder.meta.get("preprocess") or {}).get("spatial_dims") or 2)
    kind = "ct" if dims == 3 else "cxr"
    if kind != preset.modality:
        want = "a 3-D (CT volume)" if preset.modality == "ct" else "a 2-D (radiograph)"
        raise InputError(
            f"bench {preset.name} evaluates {want} checkpoint; {embedder.checkpoint} is {dims}-D "
            f"(its preprocess.spatial_dims); pick a checkpoint trained on {preset.modality.upper()} images"
        )


def protocol_block(preset: Preset, data: BenchData, root: Path, ecfg: EvalCfg, run: EvalRun) -> dict:
    table = data.table
    wanted = set(table.labels.columns)
    prompt_set = {k: v for k, v in ((finding_key(f), v) for f, v in load_prompts(ecfg.prompts).items()) if k in wanted}
    return {
        "preset": preset.name,
        "version": PROTOCOL_VERSION,
        "paper": preset.paper,
        "subset_hash": subset_hash(table, root),
        "n_images": {s: int((table.rows["split"] == s).sum()) for s in ("train", "val", "test")},
        "findings": list(table.labels.columns),
        "prompt_set": ecfg.prompts,
        "prompts_hash": prompts_hash(prompt_set),
        "mode": ecfg.mode,
        "label_policy": preset.label_policy,
        "tasks": list(preset.tasks),
        "headline": preset.headline,
        **({"probe_fractions": list(ecfg.probe_fractions)} if "probe" in preset.tasks else {}),
        **({"retrieval_ks": list(ecfg.retrieval_ks)} if "retrieval" in preset.tasks else {}),
        "decisions": data.decisions,
    }


def headline(preset: Preset, results: dict) -> dict:
    """The paper's number: {"metric", "value", "ci"} (plus per-setting values for probes)."""
    zs, rt, pr = results.get("zero_shot") or {}, results.get("retrieval") or {}, results.get("probe") or {}
    kind = preset.headline
    if kind == "accuracy":
        mc = zs.get("multiclass") or {}
        return {"metric": "zero-shot top-1 accuracy", "value": mc.get("accuracy"), "ci": mc.get("accuracy_ci")}
    if kind == "macro_auroc":
        return {"metric": "zero-shot macro AUROC", "value": zs.get("macro_auroc"), "ci": zs.get("macro_auroc_ci")}
    if kind.startswith("recall@"):
        k = kind.split("@", 1)[1]
        m = rt.get("text_to_image" if preset.modality == "ct" else "image_to_text", {})
        direction = "text -> volume" if preset.modality == "ct" else "image -> report"
        return {"metric": f"{direction} R@{k}", "value": m.get(f"R@{k}"), "ci": m.get(f"R@{k}_ci")}
    if kind == "probe":
        settings = pr.get("settings", {})
        return {
            "metric": "linear probe macro AUROC",
            "value": {name: s.get("macro_auroc") for name, s in settings.items()},
            "zero_shot": zs.get("macro_auroc"),
            "zero_shot_ci": zs.get("macro_auroc_ci"),
        }
    raise ValueError(f"unknown headline '{kind}' of preset {preset.name}")


def run_bench(cfg: BenchCfg, *, show_progress: bool = True) -> dict:
    """Run one preset -> the results dict (``write_bench_results`` saves it). ``cfg.checkpoint`` and ``cfg.out_dir``
    may be URLs (see :func:`medclip.eval.pipeline.evaluate`)."""
    preset = PRESETS.get(cfg.name)
    if not cfg.data:
        raise InputError(f"bench {preset.name} needs the dataset folder: --data DIR ({preset.layout})")
    if not cfg.checkpoint:
        raise InputError("bench needs a checkpoint (--checkpoint, a run's final/ directory)")
    root = preset.check(cfg.data)
    data = preset.load(root)
    if data.table.subset("test").rows.empty:
        raise InputError(f"bench {preset.name}: no test rows were selected from {root}")
    out_dir = cfg.out_dir or default_out_dir(cfg.checkpoint, f"bench_{preset.name}")
    check_out_url(out_dir)
    out = local_out_dir(out_dir)
    embedder = Embedder(
        local_checkpoint(cfg.checkpoint),
        cache_dir=out if cfg.cache else None,
        batch_size=cfg.batch_size,
        device=cfg.device,
        show_progress=show_progress,
    )
    _check_modality(preset, embedder)
    ecfg = eval_config(preset, cfg)
    run = EvalRun(embedder, data.table, "test", out, n_bootstrap=cfg.bootstrap, seed=cfg.seed, plots=cfg.plots)
    results: dict = {"benchmark": preset.name, "title": preset.title, "checkpoint": storage.display(cfg.checkpoint)}
    results.update(run_tasks(run, ecfg, training_curves=False))  # ecfg.tasks are the preset's
    results["protocol"] = protocol_block(preset, data, root, ecfg, run)
    results["headline"] = headline(preset, results)
    results["notes"] = list(data.notes)
    results["out_dir"] = storage.display(out_dir)
    return results


def protocol_lines(results: dict) -> list[str]:
    p, h = results["protocol"], results["headline"]
    if isinstance(h["value"], dict):
        value = ", ".join(f"{k} {fmt(v)}" for k, v in h["value"].items())
        value += f"; zero-shot {with_ci(h.get('zero_shot'), h.get('zero_shot_ci'))}"
    else:
        value = with_ci(h["value"], h.get("ci"))
    n = p["n_images"]
    lines = [
        f"**{h['metric']}: {value}**",
        "",
        "## Protocol",
        "",
        f"- preset `{p['preset']}` (protocol version {p['version']}), following {p['paper']}",
        f"- subset hash `{p['subset_hash']}`: {n['test']} test"
        + "".join(f", {n[s]} {s}" for s in ("train", "val") if n[s])
        + " images",
        f"- prompts `{p['prompt_set']}` (hash `{p['prompts_hash']}`), {p['mode']} scoring; findings: "
        + ", ".join(p["findings"]),
        f"- labels: {p['label_policy']}",
    ]
    lines += [f"- {key.replace('_', ' ')}: {value}" for key, value in p["decisions"].items()]
    lines += [f"> note: {note}" for note in results.get("notes", [])]
    return lines + [""]


def write_bench_results(results: dict, out_dir: str | Path | None = None) -> Path:
    """results.json + results.md (headline and protocol first, then the evaluation tables and plots); an output URL
    gets them uploaded. Returns the local folder."""
    target = out_dir or results["out_dir"]
    out = write_results(
        results, local_out_dir(target), title=f"medclip bench {results['benchmark']}: {results['title']}"
    )
    md = out / "results.md"
    head, _, body = md.read_text().partition("\n\n")
    md.write_text(head + "\n\n" + "\n".join(protocol_lines(results)) + "\n" + body)
    upload_outputs(out, target, result_files(results))
    return out


def compare_results(new: dict, old_path: str | Path) -> str:
    """A markdown table of the headline metric of ``new`` against an earlier results.json; InputError unless both
    ran the same protocol (same preset, version, subset, prompts, label policy and decisions)."""
    path = Path(old_path)
    if not path.is_file():
        raise InputError(f"--compare: {path} not found (give an earlier bench run's results.json)")
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"--compare: {path} is not JSON ({exc.msg})") from None
    if "protocol" not in old:
        raise InputError(f"--compare: {path} has no protocol block (it is not a `medclip bench` result)")
    a, b = old["protocol"], new["protocol"]
    differ = sorted(k for k in set(a) | set(b) if k not in RUN_KEYS and a.get(k) != b.get(k))
    if differ:
        detail = "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in differ[:3])
        raise InputError(f"--compare: the protocols differ ({detail}); results are comparable only under one protocol")
    ha, hb = old["headline"], new["headline"]
    lines = [f"| {ha['metric']} | {path} | this run | difference |", "|---|---|---|---|"]
    va, vb = ha["value"], hb["value"]
    pairs = va.items() if isinstance(va, dict) else [("", va)]
    for key, x in pairs:
        y = vb.get(key) if isinstance(vb, dict) else vb
        diff = None if x is None or y is None else y - x
        lines.append(f"| {key or 'value'} | {fmt(x)} | {fmt(y)} | {fmt(diff)} |")
    return "\n".join(lines)


def bench_markdown(results: dict) -> str:
    return "\n".join(protocol_lines(results)) + "\n" + markdown_table(results)
