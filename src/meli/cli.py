"""`meli <command>`: the thin command line over the stage functions (also `python -m meli`).

Every pipeline stage in dvc.yaml is one command here. Paths follow the repository layout; params
come from params.yaml, validated once before any work starts. A user's mistake ends in one line
on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from meli import __version__
from meli.errors import MeliError
from meli.params import PARAMS_FILE, Params, load_params

log = logging.getLogger("meli")

RAW_DIR = Path("data/raw")
PREPARED_DIR = Path("data/prepared")
FEATURES_DIR = Path("data/features")
MODELS_DIR = Path("models")
EMBEDDINGS_DIR = MODELS_DIR / "embeddings"
METRICS_DIR = Path("metrics")
RESULTS_DIR = Path("results")
TORCH_MODELS = ("mlp", "cnn")
ALL_MODELS = (*TORCH_MODELS, "fasttext")


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
    log.info("embeddings: %d x %d matrix, %d words with their own vector",
             result.vocabulary_size, result.dim, result.covered)


def _train(args: argparse.Namespace, params: Params) -> None:
    from meli.train import train

    model_params = params.mlp if args.model == "mlp" else params.cnn
    result = train(args.model, params.train, model_params, FEATURES_DIR, EMBEDDINGS_DIR,
                   PREPARED_DIR, MODELS_DIR / args.model, RESULTS_DIR / "train" / args.model)
    log.info("train %s: best epoch %d of %d, validation balanced accuracy %.4f, accuracy %.4f; "
             "%.0f titles/s while training", args.model, result.best_epoch, result.epochs_run,
             result.validation_balanced_accuracy, result.validation_accuracy,
             result.train_titles_per_second)


def _baseline(args: argparse.Namespace, params: Params) -> None:
    from meli.baseline import train_baseline

    result = train_baseline(params.baseline, PREPARED_DIR, MODELS_DIR / "fasttext",
                            RESULTS_DIR / "train" / "fasttext")
    log.info("baseline fasttext: validation balanced accuracy %.4f, accuracy %.4f (%.1fs)",
             result.validation_balanced_accuracy, result.validation_accuracy, result.seconds)


def _evaluate(args: argparse.Namespace, params: Params) -> None:
    from meli.evaluate import evaluate

    result = evaluate(params.evaluate, MODELS_DIR / args.model, PREPARED_DIR,
                      METRICS_DIR / f"{args.model}.json", RESULTS_DIR / "evaluate" / args.model)
    log.info("evaluate %s: test balanced accuracy %.4f, accuracy %.4f, macro F1 %.4f on %d "
             "titles; %.0f titles/s", args.model, result.balanced_accuracy, result.accuracy,
             result.macro_f1, result.rows, result.titles_per_second)


def _predict(args: argparse.Namespace) -> None:
    from meli.bundle import load_classifier
    from meli.predict import print_predictions, read_titles, write_predictions_csv

    if args.input is None and not args.titles:
        raise MeliError("give titles to classify, or --input FILE (- for stdin)")
    if args.input is not None and args.titles:
        raise MeliError("give titles on the command line or --input FILE, not both")
    if args.top_k < 1:
        raise MeliError(f"--top-k must be at least 1, got {args.top_k}")
    titles = read_titles(args.input) if args.input else [t for t in args.titles]
    if any(not title.strip() for title in titles):
        raise MeliError("a title given on the command line is empty")
    classifier = load_classifier(args.model)
    started = time.perf_counter()
    if args.input is None:
        print_predictions(classifier, titles, args.top_k, sys.stdout)
        return
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            write_predictions_csv(classifier, titles, args.top_k, out)
    else:
        write_predictions_csv(classifier, titles, args.top_k, sys.stdout)
    seconds = time.perf_counter() - started
    log.info("predict: %d titles in %.2fs (%.0f titles/s)", len(titles), seconds,
             len(titles) / max(seconds, 1e-9))


def _search(args: argparse.Namespace, params: Params) -> None:
    from meli import search

    models = args.model or params.search.models
    trials = search.sample_trials(params, args.trials or params.search.trials,
                                  params.search.seed if args.seed is None else args.seed, models)
    queued = [] if args.dry_run else search.queue(trials, models, force=args.force)
    for trial in trials:
        mark = "drawn" if args.dry_run else "queued" if trial in queued else "exists"
        values = ", ".join(f"{key}={value}" for key, value in trial.values.items())
        print(f"{mark:7} {trial.name}  {values}")
    if args.dry_run:
        log.info("search: %d trial(s) drawn, none queued (--dry-run)", len(trials))
        return
    log.info("search: %d trial(s) queued, %d already queued or done; stages %s",
             len(queued), len(trials) - len(queued), ", ".join(search.targets(models)))
    if args.run and queued:
        states = search.run_queue(args.jobs, [trial.name for trial in queued])
        failed = sorted(name for name, state in states.items() if state == "Failed")
        log.info("search: %d trial(s) finished, %d failed%s", len(states), len(failed),
                 f" ({', '.join(failed)})" if failed else "")
        _print_leaderboard(models, top=10)
    elif not args.run:
        log.info("start them with `dvc queue start -j 2`, then see `meli leaderboard`")


def _print_leaderboard(models: list[str], top: int) -> list:
    from meli.leaderboard import leaderboard

    table, done = leaderboard(list(models), top)
    print(table)
    return done


def _leaderboard(args: argparse.Namespace, params: Params) -> None:
    from meli.leaderboard import apply_best

    done = _print_leaderboard(args.model or params.search.models, args.top)
    if args.apply:
        log.info("leaderboard: applied %s to the workspace (dvc exp apply)", apply_best(done))


def _pull(args: argparse.Namespace) -> None:
    from meli.remote import pull

    result = pull(args.remote, args.jobs)
    log.info("pull: %d objects in place, %d downloaded and verified; workspace checked out",
             result.objects, result.downloaded)


STAGES: dict[str, tuple[Callable[[argparse.Namespace, Params], None], str]] = {
    "ingest": (_ingest, "read data.source into data/raw/ (one canonical table)"),
    "prepare": (_prepare, "normalize, filter, deduplicate and split into data/prepared/"),
    "featurize": (_featurize, "vocabulary and fixed-length token ids into data/features/"),
    "embeddings": (_embeddings, "fastText word vectors aligned to the vocabulary"),
    "train": (_train, "train the MLP or the CNN into models/<model>/ (dvclive log in results/)"),
    "baseline": (_baseline, "train the fastText supervised baseline into models/fasttext/"),
    "evaluate": (_evaluate, "score a model on the test split into metrics/<model>.json"),
    "search": (_search, "queue a random hyperparameter search as DVC experiments"),
    "leaderboard": (_leaderboard, "rank experiments by validation balanced accuracy"),
}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
            stage.add_argument("model", choices=TORCH_MODELS)
        if name == "evaluate":
            stage.add_argument("model", choices=ALL_MODELS)
        if name == "search":
            stage.add_argument("--trials", type=_positive, help="default: search.trials")
            stage.add_argument("--seed", type=int, help="default: search.seed")
            stage.add_argument("--model", action="append", choices=TORCH_MODELS,
                               help="model(s) the trials train (repeatable; default: "
                                    "search.models)")
            stage.add_argument("--run", action="store_true",
                               help="start the queue and wait for the trials, with a progress bar")
            stage.add_argument("--jobs", "-j", type=_positive, default=1,
                               help="trials at a time with --run (default: %(default)s)")
            stage.add_argument("--force", action="store_true",
                               help="queue trials again even if already queued or done")
            stage.add_argument("--dry-run", action="store_true",
                               help="print the trials without queueing them")
        if name == "leaderboard":
            stage.add_argument("--top", type=_positive, default=10,
                               help="experiments to show (default: %(default)s)")
            stage.add_argument("--model", action="append", choices=TORCH_MODELS,
                               help="rank by this model (repeatable; default: search.models)")
            stage.add_argument("--apply", action="store_true",
                               help="dvc exp apply the best experiment into the workspace")

    predict = commands.add_parser(
        "predict", help="print the most likely categories of titles",
        description="Classify titles with a trained model bundle.")
    predict.add_argument("titles", nargs="*", help="titles to classify")
    predict.add_argument("--model", default=str(MODELS_DIR / "cnn"),
                         help="model bundle directory (default: %(default)s)")
    predict.add_argument("--input", metavar="FILE",
                         help="one title per line, or a CSV with a 'title' column; - for stdin")
    predict.add_argument("--output", metavar="FILE", help="CSV to write (default: stdout)")
    predict.add_argument("-k", "--top-k", type=int, default=3,
                         help="categories per title (default: %(default)s)")

    pull = commands.add_parser(
        "pull", help="dvc pull, but check out only if every object arrived intact",
        description="Fetch the outputs dvc.lock names, verify every downloaded object's hash, "
                    "and check them out only when all are intact (else change nothing).")
    pull.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    pull.add_argument("-j", "--jobs", type=_positive, help="parallel downloads")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if args.command == "predict":
            _predict(args)
        elif args.command == "pull":
            _pull(args)
        else:
            run, _ = STAGES[args.command]
            run(args, load_params(args.params))
    except MeliError as error:
        print(f"meli {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"meli {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    return 0
