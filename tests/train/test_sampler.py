from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from medclip.train.sampler import ShardedBatchSampler


def _epochs(loader, n: int) -> list[list[int]]:
    return [[int(i) for batch in loader for i in batch] for _ in range(n)]


def test_one_process_shuffles_exactly_like_dataloader_shuffle():
    # Earlier medclip versions used DataLoader(shuffle=True, drop_last=True, generator=g); same seed, same order.
    data = list(range(37))
    old = DataLoader(data, batch_size=8, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    new = DataLoader(data, batch_sampler=ShardedBatchSampler(37, batch_size=8, generator=g), generator=g)
    assert _epochs(new, 3) == _epochs(old, 3)
    assert len(new) == len(old) == 4


def test_ranks_take_contiguous_slices_of_the_global_batch():
    one = list(ShardedBatchSampler(40, batch_size=8, generator=torch.Generator().manual_seed(1)))
    ranks = [
        list(ShardedBatchSampler(40, batch_size=4, generator=torch.Generator().manual_seed(1), rank=r, world_size=2))
        for r in range(2)
    ]
    assert [a + b for a, b in zip(*ranks, strict=True)] == one
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))


def test_skip_batches_resumes_mid_epoch():
    g = torch.Generator().manual_seed(2)
    state = g.get_state()
    full = list(ShardedBatchSampler(30, batch_size=4, generator=g))
    g.set_state(state)
    sampler = ShardedBatchSampler(30, batch_size=4, generator=g)
    sampler.skip_batches(3)
    assert list(sampler) == full[3:]
    assert len(list(sampler)) == len(full)  # the skip applies to one epoch only


def test_too_few_pairs_for_a_global_batch():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatchSampler(7, batch_size=4, generator=torch.Generator(), world_size=2)
