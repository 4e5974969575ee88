from __future__ import annotations

import pytest

from medclip.train.optim import lr_factor


def test_warmup_then_cosine_to_min():
    kw = {"warmup_steps": 10, "total_steps": 110, "min_ratio": 0.1}
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.55)
    assert lr_factor(110, **kw) == pytest.approx(0.1)
    assert all(lr_factor(s, **kw) >= lr_factor(s + 1, **kw) for s in range(10, 120))
