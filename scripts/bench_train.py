"""Benchmark training-step throughput of medclip against open_clip on identical towers; prints JSON.

Towers: timm ``resnet18`` (3-channel, random init) + the packaged all-MiniLM-L6-v2 text encoder (mean pooling),
linear heads to the same embedding size, AdamW, grad-norm clipping at 1.0, batch 32 at 224 px, at most 128 text
tokens. Texts: findings + impression of the Open-i reports shipped by ``torchxrayvision`` (synthetic ones when that
package is absent). open_clip's model is built from a model-config dict (``timm_model_name`` + ``hf_model_name`` =
the local MiniLM path), exactly as its ``open_clip_train`` would run it (autocast, its ClipLoss, its tokenizer).

Two setups, the same training work in each:
  trainable  both towers train (medclip packs each batch's reports with no padding tokens, padding only inside
             attention to the longest of each length bucket; open_clip pads every report to 128 tokens)
  locked     the text tower is frozen in both (LiT); medclip computes its outputs once per unique report and caches
             them (a legitimate advantage of a locked tower), open_clip runs the frozen tower every step

For each setup and precision the two trainers alternate in rounds; the median pairs/s, their ratio, the median of
the per-round ratios (steadier on a shared machine), the FLOPs and aten ops each step dispatches and the fraction of
this machine's matmul peak (measured in the same run) are reported. ``local_loss``: medclip's step with and without
the local word-region loss (GLoRIA, ``loss.local_weight``), alternated the same way: its extra cost per step. Also the peak
memory of one step at a 4,096 effective batch with and without the gradient cache, estimated by tracing the step
with fake tensors (no allocation; live tensor storage incl. parameters, gradients, AdamW state and the input batch).

    python scripts/bench_train.py                         # CPU, about 10-15 minutes on 2 cores
    python scripts/bench_train.py --setups none --memory-batch 0   # only the local word-region loss's extra cost
    python scripts/bench_train.py --device cuda --image-tower vit_base_patch16_224 --text-tower DIR --batch 128
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from medclip.config import LossCfg, ModelCfg, OptimCfg, PreprocessCfg
from medclip.losses import LocalAlignmentLoss, loss_from_cfg
from medclip.models.medclip import MedClip
from medclip.reports.sections import normalize_text, parse_sections, report_text
from medclip.text.tokenizer import load_tokenizer, resolve_text_model, tokenize
from medclip.train.cpu_memory import keep_freed_memory
from medclip.train.grad_cache import GradCache
from medclip.train.optim import create_optimizer, create_scheduler
from medclip.train.step import StepParts, autocast_factory, set_train_mode, train_step
from medclip.train.trainer import text_features


def report_texts(n: int) -> tuple[list[str], str]:
    from medclip.reports.label_io import iter_openi_reports

    texts = []
    for report in iter_openi_reports():
        text = report_text(parse_sections(report["text"]), "findings_impression")
        if text.strip():
            texts.append(text)
    if texts:
        return (texts * (n // len(texts) + 1))[:n], "openi (torchxrayvision/data/NLMCXR_reports.tgz)"
    findings = [
        "The heart size is normal.",
        "Small left pleural effusion.",
        "Mild pulmonary vascular congestion.",
        "No focal consolidation, pneumothorax or effusion.",
        "Right lower lobe opacity.",
    ]
    return [" ".join(findings[(i + k) % 5] for k in range(1 + i % 4)) for i in range(n)], "synthetic"


def matmul_peak(device: torch.device, dtype: torch.dtype, *, n: int, seconds: float = 3.0) -> float:
    """The fastest single n x n matmul seen in ``seconds``, as FLOP/s: this machine's practical peak for ``dtype``."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MedclipTrainer:
    """medclip's own training step (``medclip.train.step.train_step``) with its defaults (channels-last)."""

    name = "medclip"

    def __init__(
        self, args, *, locked: bool, precision: str, texts: list[str], device: torch.device, local: bool = False
    ) -> None:
        cfg = ModelCfg(embed_dim=args.embed_dim, head="linear", local_dim=args.embed_dim if local else 0)
        cfg.image.name, cfg.text.name, cfg.text.lock = args.image_tower, args.text_tower, locked
        cfg.text.length_buckets, cfg.text.packing = args.length_buckets, args.packing  # exact: less padding
        cfg.text.varlen_attention = args.varlen_attention
        self.model = MedClip(cfg, PreprocessCfg(image_size=args.image_size, channels=3)).to(device)
        self.model.image.to(memory_format=torch.channels_last)
        self.tokenizer, self.device, self.max_len = load_tokenizer(args.text_tower), device, args.max_text_tokens
        self.unique = {normalize_text(t): i for i, t in enumerate(dict.fromkeys(texts))}
        t0 = time.perf_counter()
        self.cached = (
            text_features(
                self.model, self.tokenizer, list(dict.fromkeys(texts)), max_length=self.max_len, device=device
            )
            if locked
            else None
        )
        self.cache_s = time.perf_counter() - t0 if locked else 0.0
        optim = OptimCfg(lr=1e-4, text_tower_lr=1e-5, warmup_steps=0)
        opt = create_optimizer(self.model, optim)
        self.parts = StepParts(
            model=self.model,
            forward_model=self.model,
            loss_fn=loss_from_cfg(LossCfg()),
            optimizer=opt,
            scheduler=create_scheduler(opt, optim, 10**6),
            scaler=torch.amp.GradScaler(device.type, enabled=False),
            autocast=autocast_factory(device, precision),
            grad_clip=1.0,
            local_loss=LocalAlignmentLoss() if local else None,
            local_weight=1.0 if local else 0.0,
        )
        self.state = {"step": 0, "bad_steps": 0, "skipped": 0}

    def batch(self, images: torch.Tensor, texts: list[str]) -> tuple[dict, dict]:
        keys = torch.tensor([self.unique[normalize_text(t)] for t in texts], device=self.device)
        image = images.to(self.device).contiguous(memory_format=torch.channels_last)
        if isinstance(self.cached, tuple):  # token states + mask (the local loss reads every word)
            states, mask = self.cached[0][keys], self.cached[1][keys]
            width = int(mask.sum(1).max())
            return {"image": image, "text_features": states[:, :width].float(), "text_mask": mask[:, :width]}, {
                "text_keys": keys
            }
        if self.cached is not None:
            return {"image": image, "text_features": self.cached[keys]}, {"text_keys": keys}
        tok = tokenize(self.tokenizer, texts, max_length=self.max_len)
        return {"image": image, **{k: v.to(self.device) for k, v in tok.items()}}, {"text_keys": keys}

    def step(self, batch) -> None:
        train_step(self.parts, batch[0], batch[1], self.state)


class OpenClipTrainer:
    """open_clip's CustomTextCLIP from a model-config dict, trained the way ``open_clip_train`` does it."""

    name = "open_clip"

    def __init__(self, args, *, locked: bool, precision: str, texts: list[str], device: torch.device) -> None:
        import open_clip
        from open_clip.tokenizer import HFTokenizer

        path = resolve_text_model(args.text_tower)
        # timm_pool "": the trunk's own pooling (avg for ResNets, class token for ViTs), as medclip's tower uses
        model_cfg = {
            "embed_dim": args.embed_dim,
            "vision_cfg": {
                "timm_model_name": args.image_tower,
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": args.image_size,
            },
            "text_cfg": {
                "hf_model_name": path,
                "hf_tokenizer_name": path,
                "hf_proj_type": "linear",
                "hf_pooler_type": "mean_pooler",
                "hf_model_pretrained": True,  # a local dir: offline
                "context_length": args.max_text_tokens,
            },
        }
        self.model = open_clip.CustomTextCLIP(**model_cfg, output_dict=True).to(device)
        if locked:
            self.model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
        self.tokenizer = HFTokenizer(path, context_length=args.max_text_tokens)  # pads to context_length
        self.loss = open_clip.ClipLoss()
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)
        self.autocast, self.device = autocast_factory(device, precision), device

    def batch(self, images: torch.Tensor, texts: list[str]):
        return images.to(self.device), self.tokenizer(texts).to(self.device)

    def step(self, batch) -> None:
        images, tokens = batch
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.model(images, tokens)
            loss = sum(self.loss(**out, output_dict=True).values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        float(loss.detach())  # both trainers synchronise once per step


def padded_tokens(mask: torch.Tensor, buckets: int) -> float:
    """Tokens per text the text tower processes: each length-sorted bucket is padded to its longest report."""
    lengths = mask.sum(1).sort().values
    return sum(float(c.max()) * len(c) for c in lengths.chunk(buckets)) / len(lengths)


def step_flops(trainer, batch) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.step(batch)
    return counter.get_total_flops()


class DispatchCount(TorchDispatchMode):
    """How many aten ops a step dispatches: each costs the host time, and on a GPU most are a kernel launch."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def dispatched_ops(trainer, batch) -> int:
    with DispatchCount() as counter:
        trainer.step(batch)
    return counter.ops


def profile_step(trainer, batch, device: torch.device, path: Path, title: str) -> dict:
    """One step under torch.profiler: its top ops appended to ``path``; on CUDA, how long the GPU was busy in it."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        t0 = time.perf_counter()
        trainer.step(batch)
        sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    with path.open("a") as f:
        f.write(f"## {title}: {trainer.name}, {wall * 1e3:.1f} ms under the profiler\n")
        f.write(events.table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=25) + "\n")
    if not cuda:
        return {"profiled_step_s": round(wall, 4)}
    from torch.autograd import DeviceType

    # the kernels themselves: not the CPU ops above them, nor record_function ranges (which span kernels)
    kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    busy = sum(e.self_device_time_total for e in kernels) / 1e6  # us -> s; streams overlapping would count twice
    return {
        "profiled_step_s": round(wall, 4),
        "gpu_kernel_s": round(busy, 4),
        "gpu_busy_fraction": round(busy / wall, 3),
    }


def host_syncs(trainer, batch) -> int:
    """CUDA: how many times one step makes the host wait for the GPU (``torch.cuda.set_sync_debug_mode``)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def time_steps(trainer, batches: list, steps: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.step(batches[i % len(batches)])
    sync(device)
    return time.perf_counter() - t0


def local_loss_cost(args, *, data, device) -> dict:
    """medclip's step with and without the local word-region loss (GLoRIA) on the same towers and batches, alternated
    in rounds: the local term's extra cost per step."""
    images, texts = data
    locked = args.local_setup == "locked"
    trainers = {
        name: MedclipTrainer(args, locked=locked, precision=args.local_precision, texts=texts, device=device, local=on)
        for name, on in (("global_only", False), ("with_local_loss", True))
    }
    chunks = [(images[i], texts[i * args.batch : (i + 1) * args.batch]) for i in range(len(images))]
    batches = {name: [t.batch(img, txt) for img, txt in chunks] for name, t in trainers.items()}
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for name, t in trainers.items():
        time_steps(t, batches[name], args.warmup, device)
    for r in range(args.rounds):
        for name in list(trainers) if r % 2 == 0 else list(trainers)[::-1]:
            rates[name].append(args.batch * args.steps / time_steps(trainers[name], batches[name], args.steps, device))
    out = {
        name: {"pairs_per_s": round(statistics.median(v), 2), "rounds": [round(x, 2) for x in v]}
        for name, v in rates.items()
    }
    paired = [g / w for g, w in zip(rates["global_only"], rates["with_local_loss"], strict=True)]
    first = batches["with_local_loss"][0][0]
    with torch.no_grad():
        regions = trainers["with_local_loss"].model.image.forward_maps(first["image"][:1]).local.flatten(2).shape[-1]
    out.update(
        setup=args.local_setup,
        precision=args.local_precision,
        regions_per_image=regions,
        step_time_ratio_paired_median=round(statistics.median(paired), 3),
        extra_cost_per_step=f"{100 * (statistics.median(paired) - 1):.0f} %",
    )
    return out


def compare(args, *, locked: bool, precision: str, data, device, peak: float) -> dict:
    """Alternate the two trainers for ``args.rounds`` rounds on the same batches; medians and ratio."""
    images, texts = data
    trainers = [
        cls(args, locked=locked, precision=precision, texts=texts, device=device)
        for cls in (MedclipTrainer, OpenClipTrainer)
    ]
    chunks = [(images[i], texts[i * args.batch : (i + 1) * args.batch]) for i in range(len(images))]
    batches = {t.name: [t.batch(img, txt) for img, txt in chunks] for t in trainers}
    out = {}
    for t in trainers:
        out[t.name] = {
            "flops_per_step": step_flops(t, batches[t.name][0]),
            "dispatched_ops_per_step": dispatched_ops(t, batches[t.name][0]),
        }
        time_steps(t, batches[t.name], args.warmup, device)
        if device.type == "cuda":
            out[t.name]["host_syncs_per_step"] = host_syncs(t, batches[t.name][0])
    rates: dict[str, list[float]] = {t.name: [] for t in trainers}
    for r in range(args.rounds):
        for t in trainers if r % 2 == 0 else trainers[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rates[t.name].append(args.batch * args.steps / time_steps(t, batches[t.name], args.steps, device))
            if device.type == "cuda":  # both models stay resident: the peak includes the other's weights
                out[t.name]["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    for t in trainers:
        pairs_s = statistics.median(rates[t.name])
        tflops = out[t.name]["flops_per_step"] * pairs_s / args.batch
        out[t.name].update(
            pairs_per_s=round(pairs_s, 2),
            rounds=[round(x, 2) for x in rates[t.name]],
            achieved_tflops=round(tflops / 1e12, 4),
            fraction_of_matmul_peak=round(tflops / peak, 4),
        )
    out["ratio_medclip_over_open_clip"] = round(out["medclip"]["pairs_per_s"] / out["open_clip"]["pairs_per_s"], 3)
    # A round's two timings are seconds apart: their ratio cancels most of a shared machine's drift over the run
    paired = [m / o for m, o in zip(rates["medclip"], rates["open_clip"], strict=True)]
    out["ratio_paired_median"] = round(statistics.median(paired), 3)
    out["ratio_per_round"] = [round(r, 3) for r in paired]
    if args.profile:
        title = f"{'locked' if locked else 'trainable'} {precision}"
        for t in trainers:
            out[t.name].update(profile_step(t, batches[t.name][0], device, args.profile, title))
    if locked:
        out["medclip"]["text_cache_s"] = round(trainers[0].cache_s, 2)
    if not locked:  # tokens per report through the text layers (packed: the real ones; attention pads per bucket)
        masks = [b[0]["attention_mask"] for b in batches["medclip"]]
        widths = [
            float(m.sum(1).float().mean()) if args.packing else padded_tokens(m, args.length_buckets) for m in masks
        ]
        out["medclip"]["mean_text_tokens"] = round(statistics.mean(widths), 1)
        out["open_clip"]["mean_text_tokens"] = args.max_text_tokens
    return out


class PeakStorage(TorchDispatchMode):
    """Live tensor-storage bytes of every op output (fake tensors too), and their peak."""

    def __init__(self, base: int) -> None:
        super().__init__()
        self.current = self.peak = base
        self._live: dict[int, weakref.ref] = {}

    def _free(self, key: int, nbytes: int) -> None:
        self.current -= nbytes
        self._live.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or id(st := t.untyped_storage()) in self._live:
                continue
            key, nbytes = id(st), st.nbytes()
            self._live[key] = weakref.ref(st, lambda _r, key=key, nbytes=nbytes: self._free(key, nbytes))
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        return out


def estimate_peak_memory(args, *, locked: bool, batch: int, micro: int) -> float:
    """GiB at the peak of one fp32 training step (fake tensors: shapes only, nothing is computed)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg = ModelCfg(embed_dim=args.embed_dim, head="linear")
    cfg.image.name, cfg.text.name, cfg.text.lock = args.image_tower, args.text_tower, locked
    cfg.text.packing = False  # every report at the limit: nothing to pack (and fake tensors hold no lengths)
    model = MedClip(cfg, PreprocessCfg(image_size=args.image_size, channels=3))
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    base = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) + 2 * trainable  # AdamW
    loss_fn, width = loss_from_cfg(LossCfg()), model.text.output_dim
    with FakeTensorMode(allow_non_fake_inputs=True), PeakStorage(base) as mem:
        inputs = {"image": torch.randn(batch, 3, args.image_size, args.image_size)}
        if locked:
            inputs["text_features"] = torch.randn(batch, width)
        else:  # worst case: every report as long as the limit
            inputs["input_ids"] = torch.randint(0, 1000, (batch, args.max_text_tokens))
            inputs["attention_mask"] = torch.ones(batch, args.max_text_tokens, dtype=torch.long)
        set_train_mode(model)
        cache = (
            GradCache(
                model, forward_model=model, micro_batch=micro, autocast=contextlib.nullcontext, trim_padding=False
            )
            if micro
            else None
        )
        out = cache.embed(inputs) if cache else model(**inputs)
        loss = loss_fn(out["image_emb"], out["text_emb"], out["logit_scale"], text_keys=torch.arange(batch))
        cache.backward(loss) if cache else loss.backward()
    return round(mem.peak / 2**30, 2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-tower", default="resnet18")
    p.add_argument("--text-tower", default="minilm", help="minilm (packaged) or a local Hugging Face directory")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--max-text-tokens", type=int, default=128)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--length-buckets", type=int, default=4, help="medclip's model.text.length_buckets (1: off)")
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True, help="model.text.packing")
    p.add_argument(
        "--varlen-attention",
        action="store_true",
        help="model.text.varlen_attention: FlashAttention's variable-length kernel (CUDA, bf16/fp16)",
    )
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--setups", default="trainable,locked")
    p.add_argument("--steps", type=int, default=3, help="timed steps per trainer per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--n-batches", type=int, default=4, help="distinct batches cycled through")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads (0: torch's default); 1 is steadier on a shared machine"
    )
    p.add_argument(
        "--keep-freed-memory",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="CPU: run the whole process (both trainers) with medclip's train.keep_freed_memory=true",
    )
    p.add_argument("--local-setup", default="locked", help="the local-loss cost: trainable | locked | none (skip)")
    p.add_argument("--local-precision", default="fp32")
    p.add_argument("--memory-batch", type=int, default=4096, help="0 skips the memory estimate")
    p.add_argument("--memory-micro-batch", type=int, default=64)
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    p.add_argument("--profile", type=Path, help="profile one more step of each trainer; top ops go to this file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    texts, source = report_texts(args.batch * args.n_batches)
    images = [torch.randn(args.batch, 3, args.image_size, args.image_size) for _ in range(args.n_batches)]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    n = 8192 if device.type == "cuda" else 2048
    peaks = {p: matmul_peak(device, dtypes[p], n=n) for p in args.precisions.split(",")}
    result = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "towers": {
            "image": args.image_tower,
            "text": args.text_tower,
            "image_size": args.image_size,
            "batch": args.batch,
            "max_text_tokens": args.max_text_tokens,
        },
        "medclip_options": {
            "model.text.length_buckets": args.length_buckets,
            "model.text.packing": args.packing,
            "model.text.varlen_attention": args.varlen_attention,
            "train.channels_last": True,
            "optimizer": "AdamW fused",
        },
        "texts": source,
        "matmul_peak_tflops": {p: round(v / 1e12, 4) for p, v in peaks.items()},
        "setups": {},
    }
    with contextlib.suppress(ImportError):
        import open_clip

        result["open_clip"] = open_clip.__version__
    # --keep-freed-memory: the process runs as medclip trains with train.keep_freed_memory=true; both trainers share
    # it, so both run with it
    setups = [s for s in args.setups.split(",") if s and s != "none"]
    with keep_freed_memory(device.type == "cpu" and args.keep_freed_memory) as kept:
        result["process"] = {"keep_freed_memory": kept, "applies_to": "both trainers"}
        for setup in setups:
            result["setups"][setup] = {
                p: compare(
                    args, locked=setup == "locked", precision=p, data=(images, texts), device=device, peak=peaks[p]
                )
                for p in args.precisions.split(",")
            }
        if args.local_setup != "none":
            result["local_loss"] = local_loss_cost(args, data=(images, texts), device=device)
    # Measured again at the end (a shared machine's load changes); the higher figure is the peak.
    peaks = {p: max(v, matmul_peak(device, dtypes[p], n=n)) for p, v in peaks.items()}
    for setup in result["setups"].values():
        for p, res in setup.items():
            for name in ("medclip", "open_clip"):
                res[name]["fraction_of_matmul_peak"] = round(res[name]["achieved_tflops"] * 1e12 / peaks[p], 4)
    result["matmul_peak_tflops"] = {p: round(v / 1e12, 4) for p, v in peaks.items()}
    if args.memory_batch:
        result["peak_memory_gib"] = {
            "effective_batch": args.memory_batch,
            "micro_batch": args.memory_micro_batch,
            "precision": "fp32",
            **{
                setup: {
                    "without_grad_cache": estimate_peak_memory(
                        args, locked=setup == "locked", batch=args.memory_batch, micro=0
                    ),
                    "with_grad_cache": estimate_peak_memory(
                        args, locked=setup == "locked", batch=args.memory_batch, micro=args.memory_micro_batch
                    ),
                }
                for setup in setups
            },
        }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
