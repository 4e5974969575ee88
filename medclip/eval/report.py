"""results.json + results.md for an evaluation run, and the console table."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def markdown_table(results: dict) -> str:
    lines = []
    zs = results.get("zero_shot")
    if zs:
        lines += ["## Zero-shot (held-out patients)", "", "| finding | AUROC | AUPRC | n | positives |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for finding, m in zs["per_finding"].items():
            lines.append(f"| {finding} | {_fmt(m['auroc'])} | {_fmt(m['auprc'])} | {m['n']} | {m['positives']} |")
        lines += [f"| **macro** | **{_fmt(zs['macro_auroc'])}** | | | |", ""]
        for finding in zs.get("polarity_warnings", []):
            lines.append(f"> warning: {finding} has AUROC < 0.5; its prompts are probably inverted.")
    rt = results.get("retrieval")
    if rt:
        lines += ["## Retrieval (hit = same study or identical report)", "", "| direction | R@1 | R@5 | R@10 | MRR | median rank |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for direction in ("image_to_text", "text_to_image"):
            m = rt[direction]
            lines.append(f"| {direction} | {_fmt(m['R@1'])} | {_fmt(m['R@5'])} | {_fmt(m['R@10'])} | "
                         f"{_fmt(m['MRR'])} | {m['median_rank']:.1f} |")  # fmt: skip
        lines.append(f"\n{rt['n_images']} images, {rt['n_texts']} report texts.")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out_dir: str | Path, *, title: str = "medclip evaluation") -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (out / "results.md").write_text(f"# {title}\n\n" + markdown_table(results))
    return out
