"""`meli predict` bounds both of PyTorch's CPU kernel caches before PyTorch starts (see
meli.kernel_caches): with oneDNN's alone bounded, the RNN's memory grew with the input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meli.kernel_caches import KERNEL_CACHE_CAPACITY

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
