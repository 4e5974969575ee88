"""Keep freed CPU memory in the process while training, instead of handing it back to the OS every step.

glibc serves blocks above its mmap threshold (at most 32 MiB, and 128 KiB until the first free) with fresh ``mmap``
pages and unmaps them on free. A training step frees and reallocates the same large activations and gradients every
step (a 224-px ResNet stem alone has several 100 MB tensors at batch 32), so each step pays its page faults again:
about 15% of a CPU step. PyTorch's CPU performance guide answers with jemalloc / tcmalloc; raising glibc's mmap and
trim thresholds for the duration of training does the same with no new dependency: freed blocks stay in the heap and
the next step reuses them. The resident memory stays near the run's peak, which a training process reaches anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import platform
from collections.abc import Iterator

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_KEEP = 1 << 30  # blocks up to 1 GiB come from the heap; the heap is not trimmed below 1 GiB of free space
# Restored afterwards: the mmap threshold glibc's dynamic rule ends at (32 MiB on 64-bit), trim at twice that (setting
# either turns the dynamic rule off for good, so its end point is the closest to the default there is)
_RESTORE_MMAP, _RESTORE_TRIM = 32 << 20, 64 << 20


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """While active, glibc reuses freed blocks instead of unmapping them; afterwards thresholds near the defaults come
    back and the free heap is returned to the OS. Yields whether the setting took effect (glibc on Linux only; else a no-op)."""
    libc = _libc() if enabled else None
    active = bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, _KEEP) and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP))
    if active:
        logger.debug("glibc malloc: mmap/trim thresholds raised to %d bytes while training", _KEEP)
    try:
        yield active
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _RESTORE_MMAP)
            libc.mallopt(_M_TRIM_THRESHOLD, _RESTORE_TRIM)
            libc.malloc_trim(0)
