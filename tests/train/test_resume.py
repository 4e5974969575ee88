"""Checkpoints: a run killed with SIGKILL and resumed ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from medclip.config import load_config
from medclip.train import checkpoint as ckpt
from medclip.train.step import NonFiniteLossError
from medclip.train.trainer import train

# 4 batches per epoch on the tiny manifest: 8 steps are two epochs; checkpoints at 2, 6 (mid-epoch), 4 (epoch end).
RUN = [
    "train.max_steps=8",
    "train.checkpoint_every=2",
    "train.keep_checkpoints=2",
    "train.threads=1",
    "train.log_every=2",
]

# Runs `medclip train` in a child process that SIGKILLs itself at a chosen point (no cleanup of any kind runs).
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from medclip import cli
    from medclip.train import checkpoint, trainer

    where, at = sys.argv[1], int(sys.argv[2])
    if where == "step":  # killed in the middle of step `at` (its forward has run, nothing saved)
        real_step = trainer.train_step
        def train_step(parts, inputs, loss_kwargs, state):
            if state["step"] + 1 == at:
                parts.forward_model(**inputs)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_step(parts, inputs, loss_kwargs, state)
        trainer.train_step = train_step
    else:  # killed while writing the checkpoint of step `at`: the weights are written, the rest is not
        real_write = checkpoint.write_main
        def write_main(tmp, *, model, optimizer, trainer_state):
            if trainer_state["step"] == at:
                from safetensors.torch import save_model
                save_model(model, str(tmp / "model.safetensors"))
                os.kill(os.getpid(), signal.SIGKILL)
            real_write(tmp, model=model, optimizer=optimizer, trainer_state=trainer_state)
        checkpoint.write_main = write_main
    sys.exit(cli.main(["--quiet", "train", *sys.argv[3:]]))
    """
)


def _weights(final) -> dict[str, torch.Tensor]:
    return load_file(str(final / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tiny_manifest, tmp_path_factory):
    """Final weights of an uninterrupted run."""
    out = tmp_path_factory.mktemp("uninterrupted")
    threads = torch.get_num_threads()
    try:
        final = train(
            load_config("tiny", [f"data.manifest={tiny_manifest}", f"train.out_dir={out}", *RUN]), show_progress=False
        )
    finally:
        torch.set_num_threads(threads)
    return out, _weights(final)


@pytest.mark.parametrize(
    "where,at,resume_from",
    [("step", 7, 6), ("step", 5, 4), ("checkpoint", 6, 4)],
    ids=["mid-epoch", "epoch-end", "while-writing-a-checkpoint"],
)
def test_sigkill_then_resume_gives_the_uninterrupted_weights(
    tiny_manifest, tmp_path, reference, where, at, resume_from
):
    out = tmp_path / "run"
    overrides = [f"data.manifest={tiny_manifest}", f"train.out_dir={out}", *RUN]
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run(
        [sys.executable, str(script), where, str(at), "tiny", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert not (out / "final").exists()
    assert ckpt.latest_checkpoint(out / "checkpoints").name == f"step-{resume_from:07d}"  # never a partial one
    if where == "checkpoint":
        assert (out / "checkpoints" / ".tmp-step-0000006").is_dir()

    threads = torch.get_num_threads()
    try:
        final = train(load_config("tiny", overrides), show_progress=False, resume=True)
    finally:
        torch.set_num_threads(threads)
    want = reference[1]
    got = _weights(final)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want), [k for k in want if not torch.equal(got[k], want[k])]
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step-0000006", "step-0000008"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert _losses(out) == _losses(reference[0])


def _losses(run) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_resume_without_checkpoint_starts_fresh(tiny_manifest, tmp_path, caplog):
    cfg = load_config("tiny", [f"data.manifest={tiny_manifest}", f"train.out_dir={tmp_path}", "train.max_steps=1"])
    with caplog.at_level("WARNING"):
        final = train(cfg, show_progress=False, resume=True)
    assert (final / "model.safetensors").is_file() and "no checkpoint" in caplog.text


def _patch_loss(monkeypatch, change) -> None:
    """The trainer's loss, with ``change(value, call)`` applied to the value of the call-th call (from 1)."""
    from medclip.train import trainer

    real = trainer.loss_from_cfg

    def patched(cfg):
        loss, calls = real(cfg), []

        def forward(*args, **kwargs):
            calls.append(1)
            return change(loss(*args, **kwargs), len(calls))

        return forward

    monkeypatch.setattr(trainer, "loss_from_cfg", patched)


def test_non_finite_losses_stop_the_run_and_keep_the_last_good_checkpoint(tiny_manifest, tmp_path, monkeypatch):
    _patch_loss(monkeypatch, lambda value, call: value if call <= 3 else value * float("nan"))
    cfg = load_config(
        "tiny",
        [
            f"data.manifest={tiny_manifest}",
            f"train.out_dir={tmp_path}",
            "train.max_steps=20",
            "train.checkpoint_every=2",
            "train.max_bad_steps=3",
        ],
    )
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses or gradients in a row .*step-0000002"):
        train(cfg, show_progress=False)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step-0000002"]
    assert not (tmp_path / "final").exists()


def test_non_finite_gradients_of_a_finite_loss_skip_the_step_and_the_run_goes_on(tiny_manifest, tmp_path, monkeypatch):
    # at steps 2 and 3 the same (finite) value, but d/dvalue of 0 * sqrt(0 * value) is 0 * inf = NaN
    _patch_loss(monkeypatch, lambda value, call: value + 0 * torch.sqrt(value * 0) if call in (2, 3) else value)
    cfg = load_config(
        "tiny",
        [f"data.manifest={tiny_manifest}", f"train.out_dir={tmp_path}", "train.max_steps=5", "train.log_every=1"],
    )
    final = train(cfg, show_progress=False)
    weights = load_file(final / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "skipped" in r]
    assert [r["skipped"] for r in steps] == [0, 1, 2, 2, 2]
    assert all(math.isfinite(r["loss"]) for r in steps if r["step"] not in (2, 3))


def test_commit_is_atomic_and_keeps_the_last_n(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        tmp = ckpt.begin(root, step)
        (tmp / "state.json").write_text("{}")
        ckpt.commit(tmp, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-0000002", "step-0000003"]
    partial = ckpt.begin(root, 4)  # a run killed here leaves only the temporary directory
    assert ckpt.latest_checkpoint(root).name == "step-0000003"
    ckpt.clean_partial(root)
    assert not partial.exists()
    again = ckpt.begin(root, 3)  # the same step written again after a resume replaces the old one
    (again / "state.json").write_text('{"new": 1}')
    assert (ckpt.commit(again, keep=2) / "state.json").read_text() == '{"new": 1}'
