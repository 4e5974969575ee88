"""Two gloo processes on CPU give the loss and gradients of one process holding the whole global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from medclip.distributed import all_gather_with_grad, env_info, get_world_size

GLOBAL_BATCH = 8
# (name, config overrides, gradient-cache micro-batch)
VARIANTS = [
    ("infonce", [], 0),
    ("infonce_local", ["loss.local_loss=true"], 0),
    ("siglip", ["loss.name=siglip", "model.logit_bias=true", "model.init_temperature=0.1"], 0),
    ("soft_multiview", ["loss.name=infonce_soft", "loss.study_positives=true"], 0),
    ("infonce_grad_cache", [], 2),
    ("gloria_local", ["loss.local_weight=1.0", "model.local_dim=32"], 0),
    ("gloria_local_grad_cache", ["loss.local_weight=0.5", "model.local_dim=32"], 2),
]

WORKER = textwrap.dedent(
    """
    import json, sys, torch
    from medclip.distributed import init_distributed, destroy
    sys.path.insert(0, sys.argv[3])
    from test_distributed import run_variant, VARIANTS

    info, device = init_distributed("cpu")
    torch.set_num_threads(1)
    results = {name: run_variant(overrides, micro, rank=info.rank, world=info.world_size)
               for name, overrides, micro in VARIANTS}
    torch.save(results, sys.argv[2] + f"/rank{info.rank}.pt")
    destroy()
    """
)


def _batch(n: int, *, tokens: bool = False) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(1)
    inputs = {"image": torch.randn(n, 1, 64, 64, generator=g), "text_features": torch.randn(n, 384, generator=g)}
    if tokens:  # a locked encoder's cached token states; texts of 3..12 tokens, so ranks' batches differ in width
        lengths = torch.tensor([5, 12, 3, 7, 4, 6, 9, 5])
        inputs["text_mask"] = (torch.arange(12)[None] < lengths[:, None]).long()
        inputs["text_features"] = torch.randn(n, 12, 384, generator=g) * inputs["text_mask"][..., None]
    # rows 1 and 6 share a report (on different ranks); rows 2, 3 are two views of one study
    keys = {
        "text_keys": torch.tensor([0, 1, 2, 3, 4, 5, 1, 7]),
        "study_keys": torch.tensor([0, 1, 2, 2, 3, 4, 5, 6]),
        "labels": (torch.rand(n, 5, generator=g) > 0.5).float(),
    }
    return inputs, keys


def run_variant(overrides: list[str], micro: int, *, rank: int = 0, world: int = 1) -> dict:
    """Loss and gradients of one step of the tiny model on this rank's share of a fixed global batch."""
    from medclip.config import load_config
    from medclip.losses import local_loss_from_cfg, loss_from_cfg
    from medclip.models.medclip import MedClip
    from medclip.train.optim import create_optimizer, create_scheduler
    from medclip.train.step import StepParts, autocast_factory, loss_and_grads, set_train_mode

    # test_convnext: LayerNorm, no BatchNorm, so per-rank batches normalise like the global batch
    cfg = load_config("tiny", ["model.image.name=test_convnext", *overrides])
    torch.manual_seed(0)
    model = MedClip(cfg.model, cfg.preprocess)
    forward_model = model
    if world > 1:
        forward_model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = create_optimizer(model, cfg.optim)
    parts = StepParts(
        model=model,
        forward_model=forward_model,
        loss_fn=loss_from_cfg(cfg.loss),
        optimizer=optimizer,
        scheduler=create_scheduler(optimizer, cfg.optim, 10),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        autocast=autocast_factory(torch.device("cpu"), "fp32"),
        micro_batch=micro,
        local_loss=local_loss_from_cfg(cfg.loss),
        local_weight=cfg.loss.local_weight,
    )
    inputs, keys = _batch(GLOBAL_BATCH, tokens=parts.local_loss is not None)
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    mine = {k: v[share] for k, v in inputs.items()}
    if "text_mask" in mine:  # each rank's batch trimmed to its own longest text, as the trainer does
        width = int(mine["text_mask"].sum(1).max())
        mine["text_features"], mine["text_mask"] = mine["text_features"][:, :width], mine["text_mask"][:, :width]
    set_train_mode(model)
    loss, _ = loss_and_grads(parts, mine, {k: v[share] for k, v in keys.items()})
    return {"loss": loss, "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    script = out / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, str(script), "unused", str(out), str(Path(__file__).parent)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.parametrize("name", [v[0] for v in VARIANTS])
def test_two_processes_match_one_process_on_the_global_batch(two_rank_results, name):
    overrides, micro = next((o, m) for n, o, m in VARIANTS if n == name)
    torch.set_num_threads(1)
    reference = run_variant(overrides, micro)
    for result in two_rank_results:
        got = result[name]
        assert abs(float(got["loss"]) - float(reference["loss"])) <= 1e-5
        assert got["grads"].keys() == reference["grads"].keys()
        for key, grad in reference["grads"].items():
            # <= 1e-5, relative to the tensor's largest gradient when that exceeds 1 (float32 summation order)
            assert (got["grads"][key] - grad).abs().max() <= 1e-5 * max(1.0, float(grad.abs().max())), key


def test_single_process_helpers_are_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    x = torch.randn(3, 4, requires_grad=True)
    assert all_gather_with_grad(x) is x and get_world_size() == 1
    assert env_info().world_size == 1 and env_info().is_main


def test_torchrun_environment_is_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_info()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (3, 4, 1, False)


@pytest.mark.slow
def test_torchrun_trains_with_two_processes(tiny_manifest, tmp_path):
    """End to end: ``torchrun --nproc-per-node 2 -m medclip.cli train``; rank 0 alone writes the run dir."""
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(_free_port()),
        "-m",
        "medclip.cli",
        "--quiet",
        "train",
        "tiny",
        f"data.manifest={tiny_manifest}",
        f"train.out_dir={out}",
        "train.max_steps=3",
        "train.batch_size=4",
        "train.checkpoint_every=2",
        "train.device=cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (out / "final" / "model.safetensors").is_file()
    assert json.loads((out / "final" / "medclip_config.json").read_text())["global_batch"] == 8
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-0000002", "step-0000003"]
    assert {p.name for p in (out / "checkpoints" / "step-0000003").iterdir()} >= {"rng-rank0.pt", "rng-rank1.pt"}
