"""The training step: how often it makes the host wait for the device, and its skip path under fp16's GradScaler."""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from medclip.config import LossCfg, ModelCfg, OptimCfg, PreprocessCfg
from medclip.losses import loss_from_cfg
from medclip.models import text_tower as text_module
from medclip.models.medclip import MedClip
from medclip.train.optim import create_optimizer, create_scheduler
from medclip.train.step import StepParts, autocast_factory, train_step

# Ops whose result the host needs before it can go on (on a GPU each one waits for every queued kernel).
HOST_READS = {"_local_scalar_dense", "nonzero", "equal", "is_nonzero", "masked_select", "unique", "_unique2"}


class HostReads(TorchDispatchMode):
    """Names of the ops run under it that read a device value on the host (bool-mask indexing included)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self.paused:
            bool_index = name in ("index", "index_put", "index_put_") and any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in tree_flatten(args[1])[0]
            )
            if name in HOST_READS or bool_index:
                self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _parts(*, precision: str = "fp32", scaler: bool = False) -> StepParts:
    cfg = ModelCfg(embed_dim=32, head="linear")
    cfg.image.name, cfg.text.name, cfg.text.length_buckets, cfg.text.packing = "test_resnet", "minilm", 4, True
    torch.manual_seed(0)
    model = MedClip(cfg, PreprocessCfg(image_size=32))
    optim = OptimCfg(lr=1e-3, warmup_steps=0)
    opt = create_optimizer(model, optim)
    return StepParts(
        model=model,
        forward_model=model,
        loss_fn=loss_from_cfg(LossCfg()),
        optimizer=opt,
        scheduler=create_scheduler(opt, optim, 10),
        scaler=torch.amp.GradScaler("cpu", enabled=scaler),
        autocast=autocast_factory(torch.device("cpu"), precision),
    )


def _inputs(report_batch: dict) -> dict[str, torch.Tensor]:
    n = report_batch["input_ids"].shape[0]
    return {"image": torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)), **report_batch}


def test_a_packed_training_step_reads_the_device_only_through_its_planned_copies(monkeypatch, report_batch):
    # The step reads the device twice, both as one .tolist() each (not dispatched ops): the texts' lengths before the
    # text tower, and (loss, gradient norm, temperature) after backward. Everything else, per layer and per bucket,
    # must stay on the device (integer gathers, no bool masks), or a GPU idles while the host catches up.
    parts, inputs = _parts(), _inputs(report_batch)
    state = {"step": 0, "bad_steps": 0, "skipped": 0}
    mode = HostReads()
    plan = text_module.packing_plan

    def host_plan(*args, **kwargs):  # the plan is built from host lengths on the CPU: its ops are not device reads
        mode.paused = True
        try:
            return plan(*args, **kwargs)
        finally:
            mode.paused = False

    monkeypatch.setattr(text_module, "packing_plan", host_plan)
    calls = []
    real_packed = text_module.HFTextTower._packed
    monkeypatch.setattr(text_module.HFTextTower, "_packed", lambda *a: calls.append(1) or real_packed(*a))
    with mode:
        record = train_step(parts, inputs, {"text_keys": torch.arange(inputs["image"].shape[0])}, state)
    assert calls == [1] and math.isfinite(record["loss"]) and record["grad_norm"] > 0
    assert mode.seen == []
    # the detector does see the old pattern: a bool-mask scatter and an int() of a device value
    with HostReads() as probe:
        x = torch.zeros(4)
        x[torch.tensor([True, False, True, False])] = 1.0
        int(x.sum())
    assert probe.seen == ["index_put_", "_local_scalar_dense"]


def test_fp16_skips_a_non_finite_loss_and_the_next_step_trains(report_batch):
    parts, inputs = _parts(precision="fp16", scaler=True), _inputs(report_batch)
    keys = {"text_keys": torch.arange(inputs["image"].shape[0])}
    state = {"step": 0, "bad_steps": 0, "skipped": 0}
    real = parts.loss_fn
    parts.loss_fn = lambda *a, **k: real(*a, **k) * float("nan")
    before = {n: p.detach().clone() for n, p in parts.model.named_parameters()}
    scale = parts.scaler.get_scale()
    skipped = train_step(parts, inputs, keys, state)
    assert math.isnan(skipped["loss"]) and state["skipped"] == 1
    assert all(torch.equal(p, before[n]) for n, p in parts.model.named_parameters())  # no update
    assert parts.scaler.get_scale() < scale  # the scaler saw the non-finite gradients
    parts.loss_fn = real
    dtypes = set()  # what the image tower's convolutions compute in: fp16 under the step's autocast
    for conv in (m for m in parts.model.image.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    record = train_step(parts, inputs, keys, state)  # unscale_ again: the skipped step closed its scaler state
    assert math.isfinite(record["loss"]) and state["bad_steps"] == 0 and "loss_scale" in record
    assert dtypes == {torch.float16}
