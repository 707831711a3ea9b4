"""`meli predict` bounds both of PyTorch's CPU kernel caches before PyTorch starts (see
meli.kernel_caches): with oneDNN's alone bounded, the RNN's memory grew with the input. And the
malloc arenas: with one per thread, the ensemble's peak memory was 13% higher."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meli.kernel_caches import KERNEL_CACHE_CAPACITY, MALLOC_ARENAS

# What `meli predict` leaves in its environment, read where nothing else of the test suite has
# set or read these variables: a fresh process, its command failing on a model that is not there.
PROBE = """
import os, sys
from meli.cli import main
status = main(["predict", "--model", sys.argv[1], "a title"])
print(status, *(os.environ.get(name, "unset")
                for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")))
"""


def predict_environment(tmp_path, **env: str) -> list[str]:
    environment = {key: value for key, value in os.environ.items()
                   if key not in KERNEL_CACHE_CAPACITY}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "no-such-bundle")],
                          env=environment, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_predict_bounds_both_kernel_caches(tmp_path):
    status, onednn, ideep = predict_environment(tmp_path)
    assert status != "0"  # the bundle is missing: the command failed, after the bounds were set
    assert onednn == "32"
    assert ideep == "32"


@pytest.mark.parametrize("variable", sorted(KERNEL_CACHE_CAPACITY))
def test_a_capacity_already_set_is_kept(tmp_path, variable):
    status, onednn, ideep = predict_environment(tmp_path, **{variable: "7"})
    assert {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": onednn, "LRU_CACHE_CAPACITY": ideep}[variable] == "7"


# A fresh process: threads that each allocate while all are alive, then the arenas glibc made,
# counted in malloc_info's report (one <heap nr="..."> per arena).
ARENAS = """
import ctypes, sys, tempfile, threading
from meli.kernel_caches import bound_malloc_arenas
if sys.argv[1] == "predict":  # the command, failing on a bundle that is not there
    from meli.cli import main
    print(main(["predict", "--model", sys.argv[2], "a title"]) != 0)
else:
    print(bound_malloc_arenas(int(sys.argv[1])) if sys.argv[1] != "none" else "unbounded")
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def allocate():
    barrier.wait()
    libc.malloc(4096)
    barrier.wait()  # every thread holds an arena at once
threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
with tempfile.NamedTemporaryFile("r") as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(report.read().count("<heap nr="))
"""


def arenas_made(*arguments: str, **env: str) -> tuple[str, int]:
    environment = {key: value for key, value in os.environ.items() if key != "MALLOC_ARENA_MAX"}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", ARENAS, *arguments], env=environment,
                          capture_output=True, text=True, check=True)
    was_set, count = done.stdout.split()
    return was_set, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
def test_malloc_arenas_are_bounded_and_a_users_choice_kept(tmp_path):
    assert arenas_made("none")[1] >= 4  # the default: an arena per allocating thread, nearly
    assert arenas_made("2") == ("True", 2)
    assert arenas_made("predict", str(tmp_path / "no-such-bundle")) == ("True", MALLOC_ARENAS)
    was_set, count = arenas_made("2", MALLOC_ARENA_MAX="3")
    assert was_set == "False" and count == 3
