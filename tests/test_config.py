from __future__ import annotations

import pytest

from medclip.config import ConfigError, load_config, packaged_configs


def test_defaults_and_overrides_are_typed():
    cfg = load_config(None, ["train.epochs=3", "optim.lr=0.01", "model.text.lock=false"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == pytest.approx(0.01)
    assert cfg.model.text.lock is False


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epoch=3", "Did you mean 'train.epochs'"),
        ("model.imag.name=resnet18", "Did you mean 'model.image'"),
        ("train.epochs=many", "bad value for 'train.epochs'"),
        ("trainepochs", "is not key=value"),
        ("eval.mode=softmax", "eval.mode 'softmax' is not one of"),
    ],
)
def test_bad_overrides_explain_themselves(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  batchsize: 4\n")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(path)


def test_packaged_configs_load_and_misspelt_name_suggests():
    for name in packaged_configs():
        load_config(name)
    with pytest.raises(ConfigError, match="Did you mean 'tiny'"):
        load_config("tinyy")
