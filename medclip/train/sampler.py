"""A shuffling batch sampler that shards each global batch over ranks and can resume mid-epoch.

Every rank draws the same permutation from a generator seeded identically, cuts it into global batches of
``batch_size x world_size`` and takes its own contiguous slice, so N processes with batch b see exactly the global
batches one process with batch N x b would (per-epoch reshuffle comes from the generator advancing).

The draws mirror torch's ``RandomSampler`` (``randperm`` per epoch plus the empty remainder draw when the epoch is
exhausted), so a one-process run shuffles exactly as ``DataLoader(shuffle=True, generator=g)`` did before.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from medclip.errors import InputError


class ShardedBatchSampler(Sampler[list[int]]):
    """Yields this rank's index lists; ``skip_batches(k)`` makes the next epoch start at batch k (resume)."""

    def __init__(
        self, n: int, *, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size * world_size > n:
            raise InputError(f"{n} training pairs are fewer than one global batch ({batch_size} x {world_size})")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.rank, self.world_size = rank, world_size
        self._skip = 0

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world_size)  # drop_last: every rank gets full batches

    def skip_batches(self, k: int) -> None:
        self._skip = k

    def __iter__(self) -> Iterator[list[int]]:
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        skip, self._skip = self._skip, 0
        step = self.batch_size * self.world_size
        for b in range(skip, len(self)):
            start = b * step + self.rank * self.batch_size
            yield perm[start : start + self.batch_size]
        # RandomSampler draws one more (empty) permutation when an epoch is exhausted; keep the stream identical.
        torch.randperm(self.n, generator=self.generator)
