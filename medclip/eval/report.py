"""results.json + results.md for an evaluation run, and the console table; output folders that may be URLs.

An output URL (``--out s3://bucket/runs/eval``) is written to a local staging folder first
(:func:`local_out_dir`, under the local cache, one per URL; it keeps the embeddings cache, so a rerun to the same URL
reuses it) and the results and plots are uploaded from there (:func:`upload_outputs`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np

from medclip.errors import InputError
from medclip.eval.formatting import fmt, with_ci
from medclip.eval.screening import screening_markdown
from medclip.io import storage

logger = logging.getLogger(__name__)

STAGING_DIR = "outputs"  # under storage.cache_root(): local copies of the outputs of commands run with --out URL


def local_out_dir(out_dir: str | os.PathLike) -> Path:
    """Where outputs are written on this machine: ``out_dir`` itself when local (or ``file://``); for a URL, its
    staging folder ``$MEDCLIP_CACHE/outputs/<hash>-<name>``."""
    if not storage.is_url(out_dir):
        return storage.local_path(out_dir)
    url = storage.display(out_dir).rstrip("/")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return storage.cache_root() / STAGING_DIR / f"{key}-{url.rsplit('/', 1)[-1] or 'out'}"


def check_out_url(out_dir: str | os.PathLike) -> None:
    """Refuse an output URL whose bucket does not exist before any work is done (a local folder is always fine)."""
    if bucket := storage.missing_bucket(out_dir):
        raise InputError(
            f"--out {storage.display(out_dir)}: bucket '{bucket}' does not exist, or these credentials cannot see it; "
            "create it or fix the URL"
        )


def upload_outputs(local: Path, out_dir: str | os.PathLike, names: list[str]) -> None:
    """Upload the files ``names`` of ``local`` to the URL ``out_dir`` (nothing to do when it is local)."""
    if not storage.is_url(out_dir):
        return
    for name in names:
        storage.upload(local / name, storage.join(out_dir, name))
    logger.info("uploaded %s to %s", ", ".join(names), storage.display(out_dir))


def default_out_dir(checkpoint: str | os.PathLike, name: str) -> str:
    """``name`` in the checkpoint's run folder; for a URL checkpoint ``./<run>/<name>`` in the current folder instead
    (nothing goes into a bucket that ``--out`` does not name), with a warning that says so."""
    if not storage.is_url(checkpoint):
        return str(storage.local_path(checkpoint).parent / name)
    run = PurePosixPath(urlsplit(storage.display(checkpoint)).path.rstrip("/")).parent.name or "checkpoint"
    out = Path.cwd() / run / name
    logger.warning("the checkpoint is a URL: writing to the local folder %s (--out DIR or URL to choose)", out)
    return str(out)


def result_files(results: dict) -> list[str]:
    """The files :func:`write_results` writes: results.json, results.md and the plots."""
    return ["results.json", "results.md", *(results.get("plots") or {}).values()]


def _zero_shot_lines(zs: dict) -> list[str]:
    lines = [
        f"## Zero-shot ({zs.get('mode', 'multilabel')}, held-out patients)",
        "",
        "| finding | AUROC [95% CI] | AUPRC [95% CI] | F1 | MCC | accuracy | n | positives |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for finding, m in zs["per_finding"].items():
        lines.append(
            f"| {finding} | {with_ci(m['auroc'], m.get('auroc_ci'))} | "
            f"{with_ci(m['auprc'], m.get('auprc_ci'))} | {fmt(m.get('f1'))} | {fmt(m.get('mcc'))} | "
            f"{fmt(m.get('accuracy'))} | {m['n']} | {m['positives']} |"
        )
    lines += [
        f"| **macro** | **{with_ci(zs['macro_auroc'], zs.get('macro_auroc_ci'))}** | {fmt(zs.get('macro_auprc'))} | "
        f"{fmt(zs.get('macro_f1'))} | {fmt(zs.get('macro_mcc'))} | | | |",
        "",
    ]
    if zs.get("threshold_split"):
        lines.append(
            f"F1 / MCC / accuracy at the threshold maximising {zs.get('threshold_metric', 'mcc').upper()} on the "
            f"'{zs['threshold_split']}' split; CIs from {zs.get('n_bootstrap', 0)} bootstrap resamples "
            f"(seed {zs.get('seed', 0)})."
        )
    if zs.get("multiclass", {}).get("accuracy") is not None:
        mc = zs["multiclass"]
        lines.append(
            f"Multi-class top-1 accuracy {with_ci(mc['accuracy'], mc.get('accuracy_ci'))} over {mc['n']} "
            "single-finding images."
        )
    if zs.get("laterality"):
        lat = zs["laterality"]
        pairs = ", ".join(f"{k} {fmt(v['auroc'])}" for k, v in lat["pairs"].items())
        lines.append(
            f"Left vs right (AUROC of score(left) - score(right) on one-sided cases): {pairs}; "
            f"macro {fmt(lat['macro_auroc'])}."
        )
    messages = zs.get("polarity_messages") or [
        f"{f} has AUROC < 0.5; its prompts are probably inverted." for f in zs.get("polarity_warnings", [])
    ]
    lines += [f"> warning: {m}" for m in messages]
    if zs.get("screening"):
        lines += ["", *screening_markdown(zs["screening"])]
    return lines + [""]


def _retrieval_lines(rt: dict) -> list[str]:
    ks = rt.get("ks", [1, 5, 10])
    lines = [
        "## Retrieval (hit = same study or identical report)",
        "",
        "| direction | " + " | ".join(f"R@{k}" for k in ks) + " | MRR | median rank |",
        "|---" * (len(ks) + 3) + "|",
    ]
    for direction in ("image_to_text", "text_to_image"):
        m = rt[direction]
        cells = " | ".join(with_ci(m[f"R@{k}"], m.get(f"R@{k}_ci")) for k in ks)
        lines.append(f"| {direction} | {cells} | {with_ci(m['MRR'], m.get('MRR_ci'))} | {m['median_rank']:.1f} |")
    lines.append(f"\n{rt['n_images']} images, {rt['n_texts']} report texts.")
    sc = rt.get("similar_cases")
    if sc and sc.get("P@1") is not None:
        ps = ", ".join(f"{k} {fmt(v)}" for k, v in sc.items() if k.startswith("P@"))
        lines.append(
            f"\nSimilar cases (image -> image, same findings, other studies): {ps}; "
            f"chance {fmt(sc['chance'])} ({sc['n_queries']} queries)."
        )
    return lines + [""]


def _probe_lines(pr: dict) -> list[str]:
    names = list(pr["settings"])
    zs = pr.get("zero_shot_auroc", {})
    lines = [
        f"## Linear probe (AUROC on '{pr.get('eval_split', 'test')}', C chosen on val)",
        "",
        "| finding | zero-shot | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for f in pr["findings"]:
        cells = [fmt(pr["settings"][n]["per_finding"][f]["auroc"]) for n in names]
        lines.append(f"| {f} | {fmt(zs.get(f))} | " + " | ".join(cells) + " |")
    macro_zs = [v for v in zs.values() if v is not None]
    lines.append(
        f"| **macro** | **{fmt(float(np.mean(macro_zs)) if macro_zs else None)}** | "
        + " | ".join(f"**{fmt(pr['settings'][n]['macro_auroc'])}**" for n in names)
        + " |"
    )
    lines.append(
        f"\ntrain {pr['n_train']} / val {pr['n_val']} / test {pr['n_test']} images; per-finding 95% CIs "
        "in results.json."
    )
    return lines + [""]


def markdown_table(results: dict) -> str:
    lines: list[str] = []
    if results.get("zero_shot"):
        lines += _zero_shot_lines(results["zero_shot"])
    if results.get("retrieval"):
        lines += _retrieval_lines(results["retrieval"])
    if results.get("probe"):
        lines += _probe_lines(results["probe"])
    if results.get("grounding"):
        lines += grounding_lines(results["grounding"])
    return "\n".join(lines) + "\n"


GROUNDING_METRICS = (("pointing_game", "pointing game"), ("cnr", "CNR"), ("miou", "mIoU"))


def grounding_lines(gr: dict) -> list[str]:
    """The grounding section: the model's figures with CIs next to random maps', then one row per category."""

    def cell(part: dict, key: str) -> str:
        m = part.get(key) or {}
        return with_ci(m.get("value"), m.get("ci"))

    floor = gr.get("random_floor") or {}
    lines = [
        f"## Grounding ({gr['method']} maps, {gr['n']} phrase-box rows)",
        "",
        "| | " + " | ".join(name for _, name in GROUNDING_METRICS) + " |",
        "|---" * (len(GROUNDING_METRICS) + 1) + "|",
        "| model | " + " | ".join(cell(gr, key) for key, _ in GROUNDING_METRICS) + " |",
    ]
    if floor:
        lines.append("| random maps | " + " | ".join(cell(floor, key) for key, _ in GROUNDING_METRICS) + " |")
    by_category = gr.get("by_category") or {}
    if len(by_category) > 1:
        lines += ["", "| category | n | " + " | ".join(n for _, n in GROUNDING_METRICS) + " |"]
        lines.append("|---" * (len(GROUNDING_METRICS) + 2) + "|")
        for name, part in by_category.items():
            cells = " | ".join(cell(part, key) for key, _ in GROUNDING_METRICS)
            lines.append(f"| {name} | {part.get('n', '')} | {cells} |")
    threshold = (gr.get("miou") or {}).get("threshold")
    if threshold is not None:
        lines.append(f"\nmIoU at the best threshold over the set ({fmt(threshold)} of each map's min-max range).")
    return lines + [""]


def write_results(results: dict, out_dir: str | os.PathLike, *, title: str = "medclip evaluation") -> Path:
    """Write ``results.json`` and ``results.md`` (tables, then the PNG plots listed in ``results["plots"]``).

    ``out_dir`` may be a URL: the files go to its :func:`local_out_dir` (where the run put the plots) and are
    uploaded with the plots. Returns the local folder.
    """
    out = local_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    plots = results.get("plots") or {}
    figures = "".join(f"### {name.replace('_', ' ')}\n\n![{name}]({file})\n\n" for name, file in plots.items())
    body = f"# {title}\n\n" + markdown_table(results) + (f"\n## Plots\n\n{figures}" if figures else "")
    (out / "results.md").write_text(body)
    upload_outputs(out, out_dir, result_files(results))
    return out
