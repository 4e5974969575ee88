"""Real, already de-identified reports (Open-i, shipped by torchxrayvision) come out of the scrubber unchanged."""

from __future__ import annotations

import pytest

from medclip.deid.text import TextScrubber
from medclip.reports.label_io import iter_openi_reports, openi_archive


@pytest.mark.skipif(openi_archive() is None, reason="torchxrayvision (the Open-i report archive) is not installed")
def test_openi_reports_are_not_changed():
    scrubber = TextScrubber()
    reports = [r["text"] for r in iter_openi_reports()]
    assert len(reports) > 3000
    changed = [(t, out.text) for t in reports if (out := scrubber.scrub(t)).replacements]
    assert changed == []
