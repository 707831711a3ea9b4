"""Training fastText (word vectors or the supervised baseline) reproducibly and with clear errors.

Three things about the pinned fastText 0.9.3 make a plain `fasttext.train_*` call unfit here:
- its Python `train_unsupervised` rejects the `seed` keyword that the C++ core understands;
- it allocates its input matrix uninitialized and, with fewer than 10 threads, randomizes only
  threads/10 of it, so the other rows start from whatever the heap held: runs differ, and some
  diverge (NaN);
- its failures surface as a bare `RuntimeError: Encountered NaN`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from meli.errors import MeliError

_M_PERTURB = -6  # glibc's mallopt(3) parameter number


def train(kind: str, corpus: Path, settings: dict[str, Any], what: str, rate_key: str) -> Any:
    """Train a fastText model (`kind` "unsupervised" or "supervised") on the `corpus` file.

    `settings` are fastText's own argument names; `seed` is shifted by one because fastText's
    generator (minstd_rand) treats seeds 0 and 1 alike. Failures become one MeliError line
    naming `what` was being trained on and the params key (`rate_key`) to lower on divergence.
    """
    from fasttext import FastText

    defaults = dict(FastText.unsupervised_default)
    if kind == "supervised":
        # What fasttext.train_supervised puts in place of the unsupervised defaults.
        defaults |= {"model": "supervised", "lr": 0.1, "minCount": 1, "minn": 0, "maxn": 0,
                     "loss": "softmax"}
    settings = {**settings, "input": str(corpus), "seed": settings.get("seed", 0) + 1,
                "verbose": 0}
    try:
        args, manually_set = FastText.read_args((), settings, ["input", *defaults], defaults)
        built = FastText._build_args(args, manually_set)
        model = FastText._FastText(args=built)
        with _zero_filled_allocations():
            FastText.fasttext.train(model.f, built)
        model.set_args(model.f.getArgs())
        return model
    except (RuntimeError, ValueError) as error:
        words = _distinct_words(corpus)
        if "NaN" in str(error):
            raise MeliError(f"{what}: fastText training diverged (NaN loss) on {words} distinct "
                            f"words; lower {rate_key} or train on more varied data") from None
        raise MeliError(f"{what}: fastText could not train on {words} distinct words: "
                        f"{error}") from None


def _distinct_words(corpus: Path) -> int:
    with corpus.open(encoding="utf-8") as lines:
        return len({word for line in lines for word in line.split()
                    if not word.startswith("__label__")})


@contextmanager
def _zero_filled_allocations() -> Iterator[None]:
    """Have malloc hand out zero-filled memory while fastText allocates its matrices.

    glibc's M_PERTURB fills every allocation with the complement of the given byte (0xff gives
    zeros): the rows fastText leaves uninitialized then start at zero, as in fastText 0.9.2.
    Elsewhere (not glibc) nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        yield
        return
    mallopt(_M_PERTURB, 0xFF)
    try:
        yield
    finally:
        mallopt(_M_PERTURB, 0)
