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

The same commands also bound glibc's malloc arenas. Each thread that allocates gets an arena
of its own, up to 8 per core, and the memory a batch freed in one arena serves no other: with
the ensemble's members scored on two threads beside PyTorch's own, `meli predict --model
models/ensemble` on 1,000,000 real-sample titles peaked at 1,048 MB (of 2^20 bytes) with the
default and 895-950 MB with 2 arenas, at the same speed (5,950 and 6,160-6,340 titles/s; 1
arena: 893 MB but 5,620 titles/s; benchmarks/predict_speed.py). Set with mallopt before any
other thread starts; MALLOC_ARENA_MAX in the environment (which glibc reads itself) is left to
rule.
"""

from __future__ import annotations

import ctypes
import os
import sys

KERNEL_CACHE_CAPACITY = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32", "LRU_CACHE_CAPACITY": "32"}
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter for the number of arenas


def bound_kernel_caches() -> None:
    """Both kernel caches, and the malloc arenas (`bound_malloc_arenas`)."""
    for variable, capacity in KERNEL_CACHE_CAPACITY.items():
        os.environ.setdefault(variable, capacity)
    bound_malloc_arenas()


def bound_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """At most `arenas` malloc arenas from now on, where the C library is glibc and the user
    did not choose (MALLOC_ARENA_MAX); whether the bound was set."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to ask, or not one with mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(_M_ARENA_MAX, arenas) == 1
