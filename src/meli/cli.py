"""`meli <command>`: the thin command line over the stage functions (also `python -m meli`).

Every pipeline stage in dvc.yaml is one command here. Paths default to the repository layout;
params come from params.yaml, validated once before any work starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from meli import __version__
from meli.errors import MeliError
from meli.params import PARAMS_FILE, Params, load_params

log = logging.getLogger("meli")

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
FEATURES_DIR = Path("data/features")
EMBEDDINGS_DIR = Path("models/embeddings")
METRICS_DIR = Path("metrics")
MODELS_DIR = Path("models")
RESULTS_DIR = Path("results")


def _ingest(args: argparse.Namespace, params: Params) -> None:
    from meli.ingest import ingest

    result = ingest(params.data, RAW_DIR)
    log.info("ingest: %d rows read from %s (%s), %d written to %s, %d rejected",
             result.rows_read, params.data.source, result.format, result.rows_written,
             RAW_DIR, result.rows_rejected)


def _prepare(args: argparse.Namespace, params: Params) -> None:
    from meli.prepare import prepare

    result = prepare(params.prepare, RAW_DIR, PREPARED_DIR, METRICS_DIR / "data.json")
    rows = ", ".join(f"{split} {count}" for split, count in result.rows.items())
    log.info("prepare: %d classes; %s (%s split); dropped %s", result.classes, rows,
             result.split, result.dropped or "nothing")


def _featurize(args: argparse.Namespace, params: Params) -> None:
    from meli.featurize import featurize

    result = featurize(params.featurize, PREPARED_DIR, FEATURES_DIR,
                       METRICS_DIR / "features.json")
    log.info("featurize: vocabulary of %d tokens; rows %s", result.vocabulary_size, result.rows)


def _embeddings(args: argparse.Namespace, params: Params) -> None:
    from meli.embeddings import build_embeddings

    result = build_embeddings(params.embeddings, PREPARED_DIR, FEATURES_DIR, EMBEDDINGS_DIR)
    log.info("embeddings: %d x %d matrix, %d words with their own vector", result.vocabulary_size,
             result.dim, result.covered)


def _train(args: argparse.Namespace, params: Params) -> None:
    from meli.train import train

    model_params = params.mlp if args.model == "mlp" else params.cnn
    result = train(args.model, params.train, model_params, FEATURES_DIR, EMBEDDINGS_DIR,
                   PREPARED_DIR, MODELS_DIR / args.model, RESULTS_DIR / "train" / args.model)
    log.info("train %s: best epoch %d of %d, validation balanced accuracy %.4f, accuracy %.4f; "
             "%.0f titles/s while training", args.model, result.best_epoch, result.epochs_run,
             result.validation_balanced_accuracy, result.validation_accuracy,
             result.train_titles_per_second)


STAGES: dict[str, tuple[Callable[[argparse.Namespace, Params], None], str]] = {
    "ingest": (_ingest, "read data.source into data/raw/ (one canonical table)"),
    "prepare": (_prepare, "normalize, filter, deduplicate and split into data/prepared/"),
    "featurize": (_featurize, "vocabulary and fixed-length token ids into data/features/"),
    "embeddings": (_embeddings, "fastText word vectors aligned to the vocabulary"),
    "train": (_train, "train the MLP or the CNN into models/<model>/ (dvclive log in results/)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meli", description="Classify MercadoLibre product titles (a DVC pipeline).")
    parser.add_argument("--version", action="version", version=f"meli {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, (_, summary) in STAGES.items():
        stage = commands.add_parser(name, help=summary, description=summary)
        stage.add_argument("--params", default=PARAMS_FILE,
                           help="params file (default: %(default)s)")
        if name == "train":
            stage.add_argument("model", choices=["mlp", "cnn"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        run, _ = STAGES[args.command]
        run(args, load_params(args.params))
    except MeliError as error:
        print(f"meli {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"meli {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
