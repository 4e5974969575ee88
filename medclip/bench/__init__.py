"""Published evaluation protocols as presets (``medclip bench NAME``); see docs/benchmarks.md.

Each module of :mod:`medclip.bench.presets` registers its presets in :data:`PRESETS` when imported here.
"""

from medclip.bench import presets  # noqa: F401 - registers the presets
from medclip.bench.base import PRESETS, BenchData, Preset


def preset_table() -> str:
    """A markdown table of the presets: what each measures, the protocol it follows and the layout it reads."""
    lines = ["| preset | measures | protocol of | --data |", "|---|---|---|---|"]
    for name in PRESETS.list():
        p = PRESETS.get(name)
        status = f" (not yet: {p.available})" if p.available else ""
        lines.append(f"| `{name}` | {p.title}{status} | {p.paper} | {p.layout} |")
    return "\n".join(lines)


__all__ = ["PRESETS", "BenchData", "Preset", "preset_table"]
