from __future__ import annotations

import os

import pytest
import torch

from medclip.train.cpu_memory import keep_freed_memory

MB = 1 << 20


def _resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _given_back_on_free(nbytes: int) -> int:
    """Bytes the process hands back to the OS when a touched block of `nbytes` is freed.

    Measured from the peak, so pages already resident before (freed by earlier tests
    and reused by this block) do not count either way.
    """
    block = torch.ones(nbytes // 4)  # touched: every page resident
    peak = _resident()
    del block
    return peak - _resident()


def test_freed_blocks_stay_in_the_process_while_training_and_go_back_after():
    with keep_freed_memory() as active:
        if not active:
            pytest.skip("glibc malloc on Linux only")
        given_back = _given_back_on_free(256 * MB)
        inside = _resident()
    released = inside - _resident()
    assert given_back < 32 * MB  # freed, yet its pages stay in the process for the next step
    assert released > 224 * MB  # given back when training ends
    # Outside: a block this size is mmapped and unmapped on free, as glibc does by default
    assert _given_back_on_free(256 * MB) > 224 * MB


def test_disabled_is_a_no_op():
    with keep_freed_memory(False) as active:
        assert not active
        assert _given_back_on_free(256 * MB) > 224 * MB
