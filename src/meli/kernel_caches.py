"""Bounds on the caches of compiled kernels that PyTorch's CPU backend keeps, one entry per input
shape, for the commands that score inputs of many shapes (`meli predict`, `meli serve`).

Under bf16 the RNN's packed GRU multiplies matrices of a different height at every time step
(the titles still running), so a long input brings new shapes for a long time. Two caches keep
what those shapes compiled: oneDNN's primitive cache (ONEDNN_PRIMITIVE_CACHE_CAPACITY) and
ideep's computation cache in front of it (LRU_CACHE_CAPACITY); both default to 1,024 entries.
Measured on the real-sample RNN bundle in bf16 (an AVX-512 BF16 CPU), over batches of 16,384
real-sample titles: with neither bounded, the heap in use grew by about 12 MB a batch; with only
oneDNN's bounded (to 16), by about 7 MB; with both bounded (to 16), it stayed at 114 MB, at the
same speed. Both are read when the backend first starts, so
this runs before PyTorch is imported; a value already in the environment is kept.
"""

from __future__ import annotations

import os

KERNEL_CACHE_CAPACITY = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32", "LRU_CACHE_CAPACITY": "32"}


def bound_kernel_caches() -> None:
    for variable, capacity in KERNEL_CACHE_CAPACITY.items():
        os.environ.setdefault(variable, capacity)
