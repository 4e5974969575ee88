"""How numbers appear in results.md tables and on the console: 3 decimals, "n/a" when undefined, CIs in brackets."""

from __future__ import annotations

import math


def fmt(x) -> str:
    """0.1234 -> "0.123"; None / NaN -> "n/a"."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def with_ci(value, ci) -> str:
    """A value and its 95 % CI as "0.812 [0.771, 0.850]" (the value alone without a CI)."""
    return fmt(value) if not ci or value is None else f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"
