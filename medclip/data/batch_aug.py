"""Training augmentation applied to a whole batch at once, on the training device.

Per-sample MONAI random transforms (:func:`medclip.data.transforms.random_transforms`) run one image at a time in
the data loader: at 224 px a random affine alone costs more per image than reading a prepared one, so on a CPU
they, not decoding, cap the images per second a loader can deliver. :class:`BatchAugment` draws the same
parameter ranges and probabilities (affine warp with rotation / per-axis scale / translation, p 0.8; gamma
contrast, p 0.5; Gaussian noise with std ~ U(0, noise_std), p 0.5) but applies each to the whole batch with one
``grid_sample`` and a few tensor ops, on the GPU when training runs there.

It works on *normalised* images (the output of the evaluation pipeline), so training and evaluation datasets are
the same pipeline: the zero padding of the warp is padding with the normalised value of black, gamma contrast is
computed between each image's own minimum and maximum (invariant to the normalising shift and scale), and the
noise std is divided by the normalising std. The result equals augmenting in [0, 1] and normalising after.

Its randomness is a pure function of ``(seed, rank, step)``: a resumed run augments exactly as an uninterrupted
one without any saved state, and each rank of a distributed run draws differently.

``preprocess.augment`` picks it (``batch``, the default) or the per-sample MONAI transforms (``monai``) or neither
(``none``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medclip.config import PreprocessCfg
from medclip.data.normalize import normalize_image

AUGMENT_MODES = ("batch", "monai", "none")
_CPU_CHUNK_BYTES = 3 << 19  # 1.5 MB: a chunk of the batch that stays in a CPU's L2 cache
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9)  # odd 64-bit constants to spread (seed, rank, step) over seeds


def _affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, [B, C, H, W], align_corners=False)`` computed separably: each output coordinate is
    ``a * x_j + (b * y_i + c)``, one broadcast add of a [B, 1, W] row and a [B, H, 1] column written straight into
    the output (about 6x faster than ``F.affine_grid`` on a CPU, where a K=2 batched matmul is memory-bound)."""
    b = theta.shape[0]
    xs = (torch.arange(width, dtype=theta.dtype, device=theta.device) * 2 + 1) / width - 1  # pixel centres in (-1, 1)
    ys = (torch.arange(height, dtype=theta.dtype, device=theta.device) * 2 + 1) / height - 1
    out = torch.empty(b, height, width, 2, dtype=theta.dtype, device=theta.device)
    for k in range(2):  # k = 0: input x, k = 1: input y
        row = theta[:, k, 0, None, None] * xs.view(1, 1, width)  # [B, 1, W]
        col = theta[:, k, 1, None, None] * ys.view(1, height, 1) + theta[:, k, 2, None, None]  # [B, H, 1]
        torch.add(row, col, out=out[..., k])
    return out  # [B, H, W, (x, y)]


def _shift_slices(v: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """[N, C, D, H, W] volumes -> out[:, :, z] = v[:, :, z + shift] (linear between slices, zeros outside), shift in
    slices per volume: ``grid_sample``'s trilinear sampling along an axis the warp only translates."""
    out = torch.zeros_like(v)
    d = v.shape[2]
    for i, t in enumerate(shift.tolist()):
        k = math.floor(t)
        for offset, weight in ((k, 1.0 - (t - k)), (k + 1, t - k)):
            lo, hi = max(0, -offset), min(d, d - offset)  # output slices whose source z + offset exists
            if weight > 0 and lo < hi:
                out[i, :, lo:hi].add_(v[i, :, lo + offset : hi + offset], alpha=weight)
    return out


def affine_theta(angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """[B] angles (radians, MONAI's sign), [B, 2] scales and [B, 2] shifts (normalised, x then y) -> [B, 2, 3]
    ``grid_sample`` matrices mapping output to input coordinates."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    row_x = torch.stack([cos / scale[:, 0], sin / scale[:, 0], shift[:, 0]], 1)
    row_y = torch.stack([-sin / scale[:, 1], cos / scale[:, 1], shift[:, 1]], 1)
    return torch.stack([row_x, row_y], 1)


class BatchAugment:
    """``augment(images, step, rank=0)``: [B, C, H, W] normalised images -> augmented, same shape and dtype.

    Args:
        cfg: the preprocessing recipe (ranges, normalisation mean / std).
        seed: the run's seed.
    """

    def __init__(self, cfg: PreprocessCfg, *, seed: int = 0) -> None:
        self.cfg, self.seed = cfg, int(seed)
        self.black = normalize_image(0.0, cfg)  # a padded pixel, normalised

    def _seed(self, step: int, rank: int) -> int:
        return (self.seed * _MIX[0] + rank * _MIX[1] + step) % (1 << 63)

    def __call__(self, images: torch.Tensor, step: int, rank: int = 0) -> torch.Tensor:
        """[B, C, H, W] images or [B, C, D, H, W] volumes (rotated and scaled in the H-W plane, shifted in all three
        axes) -> augmented, same shape and dtype."""
        if images.ndim not in (4, 5):
            raise ValueError(f"BatchAugment expects [B, C, H, W] or [B, C, D, H, W], got {tuple(images.shape)}")
        cfg, b, dev = self.cfg, images.shape[0], images.device
        gen = torch.Generator().manual_seed(self._seed(step, rank))  # parameters: drawn on the CPU, a few numbers

        def uniform(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
            return torch.rand(*shape, generator=gen) * (hi - lo) + lo  # kept on the CPU: see _apply

        # Every parameter of the batch first, so the result does not depend on how the batch is split below.
        angle = uniform(b, lo=-1, hi=1) * math.radians(cfg.rotate_degrees)
        scale = 1 + uniform(b, 2, lo=-1, hi=1) * cfg.scale_range
        shift = uniform(b, 3, lo=-1, hi=1) * (2 * cfg.translate_frac)  # pixels / size * 2 in normalised coordinates
        params = {
            "theta": affine_theta(angle, scale, shift[:, :2]),
            "shift_z": shift[:, 2],
            "warp": uniform(b) < 0.8,  # an affine warp with probability 0.8
            "gamma": 1 + uniform(b, lo=-1, hi=1) * cfg.contrast_gamma,
            "contrast": uniform(b) < 0.5,  # gamma contrast with probability 0.5
            "noise_std": uniform(b) * (cfg.noise_std / cfg.std),
            "noise": (uniform(b) < 0.5) & (cfg.noise_std > 0),  # Gaussian noise with probability 0.5
        }
        noise_gen = torch.Generator(device=dev).manual_seed(self._seed(step, rank) ^ 1)  # pixels: on the device
        out = torch.empty(images.shape, dtype=torch.float32, device=dev)
        # On a CPU the batch goes through in chunks of ~1.5 MB so each chunk's passes stay in cache (2x faster than
        # whole-batch passes at 224 px); a GPU takes the whole batch at once.
        per_image = images[0].numel() * 4
        chunk = b if dev.type != "cpu" else max(1, min(b, _CPU_CHUNK_BYTES // per_image))
        for lo in range(0, b, chunk):
            part = slice(lo, min(b, lo + chunk))
            self._apply(out[part].copy_(images[part]), {k: v[part] for k, v in params.items()}, noise_gen)
        return out.to(images.dtype)

    def _apply(self, x: torch.Tensor, p: dict[str, torch.Tensor], noise_gen: torch.Generator) -> None:
        """Augment one chunk ``x`` (float32) in place with its slice ``p`` of the batch's parameters.

        The parameters stay on the CPU, where every choice (which images, how far to shift slices) is made; the device
        gets integer indices and values by asynchronous copies, so on a GPU nothing here waits for queued work.
        """
        dev = x.device

        def rows(pick: torch.Tensor) -> torch.Tensor | None:  # CPU bool [n] -> device indices, or None for all
            return None if bool(pick.all()) else pick.nonzero().flatten().to(dev, non_blocking=True)

        def put(index: torch.Tensor | None, value: torch.Tensor) -> None:
            if index is None:
                x.copy_(value)
            else:
                x.index_copy_(0, index, value)

        warp = p["warp"]
        if warp.any():
            index = rows(warp)
            src = (x if index is None else x.index_select(0, index)) - self.black  # zero padding = black padding
            theta = p["theta"][warp].to(dev, non_blocking=True)
            grid = _affine_grid(theta, *x.shape[-2:])  # affine: output pixel -> input pixel, as RandAffine
            if x.ndim == 4:
                warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            else:  # volumes: the same in-plane warp on every slice (one 2-D pass over C x D planes), then a shift
                n, c, d = src.shape[:3]  # along the slice axis; trilinear sampling is separable, so this equals it
                planes = F.grid_sample(
                    src.reshape(n, c * d, *src.shape[-2:]),
                    grid,
                    mode="bilinear",
                    padding_mode="zeros",
                    align_corners=False,
                )
                warped = _shift_slices(planes.view(src.shape), p["shift_z"][warp] * d / 2)
            put(index, warped.add_(self.black))
        pick = p["contrast"]
        if pick.any():  # gamma contrast between each image's own min and max
            per_image, expand = tuple(range(1, x.ndim)), (-1,) + (1,) * (x.ndim - 1)
            index = rows(pick)
            sub = x if index is None else x.index_select(0, index)
            lo = sub.amin(dim=per_image, keepdim=True)
            span = sub.amax(dim=per_image, keepdim=True) - lo
            g = p["gamma"][pick].view(expand).to(dev, non_blocking=True)
            # x ** g as exp(g * log x): vectorised, where a per-image tensor exponent takes pow's slow path
            put(index, ((sub - lo) / (span + 1e-7)).clamp_(min=0).log_().mul_(g).exp_().mul_(span).add_(lo))
        for i in p["noise"].nonzero().flatten().tolist():  # Gaussian noise, std ~ U(0, noise_std) in [0, 1] units
            noise = torch.randn(x.shape[1:], generator=noise_gen, device=dev)  # one draw per image, in order
            x[i].add_(noise.mul_(float(p["noise_std"][i])))
