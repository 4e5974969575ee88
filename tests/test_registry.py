from __future__ import annotations

import pytest

from medclip.registry import Registry


def test_register_get_list_and_did_you_mean():
    reg: Registry = Registry("thing")

    @reg.register("alpha")
    def alpha():
        return 1

    assert reg.get("alpha") is alpha
    assert reg.list() == ["alpha"]
    with pytest.raises(KeyError, match="Did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(KeyError, match="already registered"):
        reg.register("alpha")(alpha)
