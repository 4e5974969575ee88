from __future__ import annotations

import os

import pytest
import torch

from medclip.train.cpu_memory import keep_freed_memory

MB = 1 << 20


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _resident_after_free(nbytes: int) -> int:
    block = torch.ones(nbytes // 4)  # touched: every page resident
    del block
    return _resident()


def test_freed_blocks_stay_in_the_process_while_training_and_go_back_after():
    with keep_freed_memory() as active:
        if not active:
            pytest.skip("glibc malloc on Linux only")
        before = _resident()
        kept = _resident_after_free(256 * MB) - before
    released = _resident() - before
    assert kept > 200 * MB  # freed, yet its pages stay in the process for the next step
    assert released < 64 * MB  # given back when training ends
    # Outside: a block this size is mmapped and unmapped on free, as glibc does by default
    assert _resident_after_free(256 * MB) - _resident() < 64 * MB


def test_disabled_is_a_no_op():
    with keep_freed_memory(False) as active:
        assert not active
        before = _resident()
        assert _resident_after_free(256 * MB) - before < 64 * MB
