"""The names of search trials, which carry their lineage: `cnn-s0-07-r1` is configuration 07 of
the CNN search with seed 0, on rung 1 of successive halving. The leaderboard reads the rung back
from the name; the halving search reads which of its trials DVC already has."""

from __future__ import annotations

import re
from collections.abc import Sequence

# configuration 07 of the search `cnn-s0` on rung 1: `cnn-s0-07-r1`
HALVING_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{2,})-r(?P<rung>\d+)$")


def prefix(models: Sequence[str], seed: int) -> str:
    """What every trial of a search of `models` from `seed` is named with first."""
    return f"{'-'.join(models)}-s{seed}"


def trial_name(search_prefix: str, index: int, rung: int) -> str:
    return f"{search_prefix}-{index:02d}-r{rung}"


def rung_of(name: str) -> int | None:
    """The rung in a halving trial's name, None for any other experiment."""
    found = HALVING_NAME.match(name)
    return int(found["rung"]) if found else None
