"""`meli <command>`: the command line for people (also `python -m meli <command>`).

- `meli predict`: categories of titles from a model bundle;
- `meli explain`: which words of titles made a model choose their category;
- `meli serve`: a model bundle (or a registry version) behind HTTP;
- `meli search`, `meli leaderboard`: hyperparameter search through the DVC experiment queue;
- `meli pull`: `dvc pull` that checks out only intact objects;
- `meli <stage>` runs one pipeline stage by hand, exactly as `python -m meli.stages.<stage>`,
  the form dvc.yaml uses (each stage enters through its own module, so that the code it runs,
  and nothing else, is its dependency).

A user's mistake ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import logging
import pkgutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from meli import __version__
from meli.errors import MeliError, run
from meli.kernel_caches import bound_kernel_caches
from meli.layout import PARAMS_FILE, bundle_dir

log = logging.getLogger("meli")

def stages() -> dict[str, str]:
    """Every module of `meli.stages`, with the summary its docstring opens with ("train: fit
    ..."): read from the files, so a new stage is listed without a line here, and listing them
    imports none (several import PyTorch)."""
    import meli.stages

    found = {}
    for module in sorted(pkgutil.iter_modules(meli.stages.__path__), key=lambda m: m.name):
        path = Path(module.module_finder.path) / f"{module.name}.py"
        summary = (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "")
        found[module.name] = summary.splitlines()[0].removeprefix(f"{module.name}: ").rstrip(".")
    return found


def _predict(args: argparse.Namespace) -> None:
    # PyTorch keeps every kernel it compiled, one per input shape: a few dozen cover the
    # batches of a long input, and memory stays flat.
    bound_kernel_caches()
    from meli.bundles.answers import Knobs, knob_problem
    from meli.bundles.calibration import load_calibration
    from meli.bundles.load import load_classifier
    from meli.bundles.predict import (
        TitleReader,
        print_predictions,
        show_progress,
        write_predictions_csv,
    )
    from meli.files import atomic_file

    if args.input is None and not args.titles:
        raise MeliError("give titles to classify, or --input FILE (- for stdin)")
    if args.input is not None and args.titles:
        raise MeliError("give titles on the command line or --input FILE, not both")
    if args.top_k < 1:
        raise MeliError(f"--top-k must be at least 1, got {args.top_k}")
    if args.input is None and any(not title.strip() for title in args.titles):
        raise MeliError("a title given on the command line is empty")
    if args.output and not Path(args.output).resolve().parent.is_dir():
        raise MeliError(f"{args.output}: its directory does not exist")
    knobs = Knobs(args.coverage, args.min_confidence, args.class_conditional)
    _check_knobs(knobs)
    reader = TitleReader(args.input, args.column) if args.input is not None else None
    classifier = load_classifier(args.model, args.device, args.precision)
    calibration = load_calibration(classifier) if knobs.coverage is not None else None
    problem = knob_problem(knobs, calibration, args.model)
    if problem:
        raise MeliError(f"--{problem[0].replace('_', '-')}: {problem[1]}")
    if reader is None:
        print_predictions(classifier, list(args.titles), args.top_k, sys.stdout, knobs,
                          calibration)
        return
    started = time.perf_counter()
    if args.output:
        # Written aside and moved into place when complete: a failure midway leaves no half file.
        with atomic_file(args.output) as out:
            titles = write_predictions_csv(classifier, reader, args.top_k, out, show_progress(),
                                           knobs, calibration)
    else:
        titles = write_predictions_csv(classifier, reader, args.top_k, sys.stdout.buffer,
                                       show_progress(), knobs, calibration)
        sys.stdout.buffer.flush()
    seconds = time.perf_counter() - started
    log.info("predict: %d titles in %.2fs (%.0f titles/s)", titles, seconds,
             titles / max(seconds, 1e-9))


def _explain(args: argparse.Namespace) -> None:
    import json

    from meli.bundles.explain import explain, format_explanation, write_explanations
    from meli.bundles.load import load_classifier
    from meli.bundles.predict import TitleReader

    if args.input is None and not args.titles:
        raise MeliError("give titles to explain, or --input FILE (- for stdin)")
    if args.input is not None and args.titles:
        raise MeliError("give titles on the command line or --input FILE, not both")
    if args.input is None and any(not title.strip() for title in args.titles):
        raise MeliError("a title given on the command line is empty")
    reader = TitleReader(args.input, args.column) if args.input is not None else None
    classifier = load_classifier(args.model, args.device, args.precision)
    options = dict(category=args.category, method=args.method, ngrams=args.ngrams)
    if reader is not None:
        write_explanations(classifier, reader, sys.stdout, as_json=args.json, **options)
        return
    for number, explanation in enumerate(explain(classifier, list(args.titles), **options)):
        if args.json:
            print(json.dumps(explanation.as_dict(), ensure_ascii=False))
        else:
            print(("\n" if number else "") + format_explanation(explanation))


def _check_knobs(knobs) -> None:
    """The knobs' own ranges, before the input is read or the model loaded."""
    if knobs.coverage is not None and not 0 < knobs.coverage < 1:
        raise MeliError(f"--coverage: must be a share between 0 and 1 (such as 0.95), got "
                        f"{knobs.coverage:g}")
    if knobs.min_confidence is not None and not 0 <= knobs.min_confidence <= 1:
        raise MeliError(f"--min-confidence: must be a probability from 0 to 1 (such as 0.9), "
                        f"got {knobs.min_confidence:g}")
    if knobs.class_conditional and knobs.coverage is None:
        raise MeliError("--class-conditional: needs --coverage (the per-category sets of which "
                        "coverage?)")


def _search(args: argparse.Namespace) -> None:
    from meli.experiments.driver import run_search

    run_search(args)


def _leaderboard(args: argparse.Namespace) -> None:
    from meli.experiments.driver import print_leaderboard
    from meli.experiments.leaderboard import apply_best

    done = print_leaderboard(args.model, args.top, args.remote)
    if args.apply:
        applied = apply_best(done, args.remote)
        log.info("leaderboard: applied %s to the workspace (dvc exp apply)",
                 applied.describe())


def _registry(args: argparse.Namespace) -> None:
    from meli.bundles import registry

    if args.update:
        names = registry.update()
        log.info("registry: dvc.yaml artifacts %s updated from the metrics; commit dvc.yaml, "
                 "then `gto register <name>` to publish a version", ", ".join(names))
    print(registry.show())


def _serve(args: argparse.Namespace) -> None:
    from meli.serve import serve

    serve(args)


def _pull(args: argparse.Namespace) -> None:
    from meli.data.remote import pull

    result = pull(args.remote, args.jobs)
    log.info("pull: %d objects in place, %d downloaded and verified; workspace checked out",
             result.objects, result.downloaded)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value:  # NaN
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return value


def _searchable() -> tuple[str, ...]:
    from meli.experiments.search import searchable  # imports PyTorch: only once a name is given

    return searchable()


def _with_bundles() -> list[str]:
    from meli.bundles.registry import models

    return models()


def _name_among(available: Callable[[], Sequence[str]]) -> Callable[[str], str]:
    """An argparse type: a model name among `available()`."""

    def check(text: str) -> str:
        names = available()
        if text not in names:
            raise argparse.ArgumentTypeError(f"unknown model {text!r} (choose from "
                                             f"{', '.join(names)})")
        return text

    return check


def _add_titles_source(parser: argparse.ArgumentParser) -> None:
    """The bundle and where the titles come from, as `meli predict` and `meli explain` read
    them."""
    parser.add_argument("--model", default=str(bundle_dir("cnn")),
                        help="model bundle directory (default: %(default)s)")
    parser.add_argument("--input", metavar="FILE",
                        help="one title per line, or a CSV with a 'title' column (gzip or "
                             "not); - for stdin")
    parser.add_argument("--column", metavar="NAME",
                        help="the CSV column that holds the titles (default: title)")


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    """Where and in what precision a bundle scores (predict, explain, serve)."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where a PyTorch model runs (default: %(default)s, CUDA if present)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 on CUDA, and on a CPU with bf16 when training found it "
                             "kept the model's validation figures (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meli", description="Classify MercadoLibre product titles (a DVC pipeline).")
    parser.add_argument("--version", action="version", version=f"meli {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    predict = commands.add_parser(
        "predict", help="print the most likely categories of titles",
        description="Classify titles with a trained model bundle.")
    predict.add_argument("titles", nargs="*", help="titles to classify")
    _add_titles_source(predict)
    predict.add_argument("--output", metavar="FILE", help="CSV to write (default: stdout)")
    predict.add_argument("-k", "--top-k", type=int, default=3,
                         help="categories per title (default: %(default)s)")
    predict.add_argument("--coverage", type=_share, metavar="P",
                         help="add columns set and set_size: the categories that hold the "
                              "true one for a share P of titles (e.g. 0.95), from the bundle's "
                              "calibration")
    predict.add_argument("--class-conditional", action="store_true",
                         help="with --coverage: that share for every category, not only over "
                              "all titles (larger sets for the hard categories)")
    predict.add_argument("--min-confidence", type=_share, metavar="P",
                         help="add a column abstain: true where the top probability is below P "
                              "(e.g. 0.9): the titles a person should check")
    _add_device_options(predict)

    explain = commands.add_parser(
        "explain", help="which words of titles made the model choose their category",
        description="For each title, its most probable category (or --category) and every "
                    "word's signed contribution to it, in title order, the strongest marked. "
                    "The linear model is decomposed exactly: its score for the category (the "
                    "heads' share / temperature x (TF-IDF . weights + intercept)) is the "
                    "intercept plus each word's n-grams' contributions (an n-gram across "
                    "words split evenly among them; character n-grams lie inside one word). "
                    "Every other bundle (PyTorch, fastText, the ensemble) is explained by "
                    "occlusion: how much the log-odds of the category's probability fall when "
                    "the word is left out (a title of n words scores n + 1 titles).")
    explain.add_argument("titles", nargs="*", help="titles to explain")
    _add_titles_source(explain)
    explain.add_argument("--category", metavar="NAME",
                         help="explain this category instead of each title's most probable")
    explain.add_argument("--method", choices=("decomposition", "occlusion"),
                         help="default: decomposition for the linear model, occlusion for "
                              "every other (occlusion works for the linear model too)")
    explain.add_argument("--json", action="store_true",
                         help="one JSON object per title (JSON lines) instead of the text view")
    explain.add_argument("--ngrams", action="store_true",
                         help="decomposition: also each word's n-grams and their parts")
    _add_device_options(explain)

    serve = commands.add_parser(
        "serve", help="serve a model bundle over HTTP (POST /predict, a page at /)",
        description="Serve a model bundle, or a version of the model registry, over HTTP: "
                    "POST /predict, GET /health, /model, /metrics, POST /reload (or SIGHUP) "
                    "to load a new version without a failed request, and a page at /.")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--model", default=str(bundle_dir("cnn")),
                        help="model bundle directory (default: %(default)s)")
    source.add_argument("--artifact", nargs=2, metavar=("REPO", "NAME"),
                        help="a registry artifact: Git repository (URL or path) and artifact "
                             "name, fetched as `dvc artifacts get` does")
    version = serve.add_mutually_exclusive_group()
    version.add_argument("--rev", metavar="VERSION",
                         help="with --artifact: a registered version, e.g. v1.0.0 "
                              "(default: the latest)")
    version.add_argument("--stage", help="with --artifact: the version assigned to this stage, "
                                         "e.g. prod")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on "
                                                           "(default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    _add_device_options(serve)
    serve.add_argument("--threads", type=int, default=2,
                       help="PyTorch threads for scoring (default: %(default)s; the event loop "
                            "runs beside them)")
    serve.add_argument("--max-titles", type=_positive, default=1024,
                       help="titles per request at most (default: %(default)s)")
    serve.add_argument("--max-batch-titles", type=_positive, default=2048,
                       help="titles the model scores at once at most; a larger request is "
                            "scored alone (default: %(default)s)")
    serve.add_argument("--batch-wait-ms", type=float, default=2.0,
                       help="how long a batch waits for more requests (default: %(default)s)")

    search = commands.add_parser(
        "search", help="queue a hyperparameter search (random or halving) as DVC experiments",
        description="Draw trials from the search section of params.yaml and queue each as a "
                    "DVC experiment.")
    search.add_argument("--params", default=PARAMS_FILE, help="params file (default: %(default)s)")
    search.add_argument("--strategy", choices=("random", "halving"),
                        help="default: search.strategy")
    search.add_argument("--trials", type=_positive, help="default: search.trials")
    search.add_argument("--seed", type=int, help="default: search.seed")
    search.add_argument("--model", action="append", type=_name_among(_searchable),
                        help="model(s) the trials train (repeatable; default: search.models)")
    search.add_argument("--run", action="store_true",
                        help="start the queue and wait for the trials, with a progress bar "
                             "(halving: rung after rung)")
    search.add_argument("--next-rung", action="store_true",
                        help="halving: promote the best of the finished rung to the next one")
    search.add_argument("--shard", metavar="I/N",
                        help="queue only this machine's share of the trials: configurations "
                             "I, I+N, I+2N, ... (several machines, one search)")
    search.add_argument("--jobs", "-j", type=_positive, default=1,
                        help="trials at a time with --run (default: %(default)s)")
    search.add_argument("--force", action="store_true",
                        help="queue trials again even if already queued or done")
    search.add_argument("--dry-run", action="store_true",
                        help="print the trials without queueing them")

    board = commands.add_parser(
        "leaderboard", help="rank experiments by validation balanced accuracy",
        description="Rank experiments by validation balanced accuracy; each search trial by "
                    "the model(s) it searched.")
    board.add_argument("--top", type=_positive, default=10,
                       help="experiments to show (default: %(default)s)")
    board.add_argument("--model", action="append", type=_name_among(_with_bundles),
                       help="rank every experiment by this model (repeatable; default: the "
                            "models each trial searched)")
    board.add_argument("--apply", action="store_true",
                       help="dvc exp apply the best full-budget experiment into the workspace")
    board.add_argument("--remote", metavar="GIT_REMOTE",
                       help="first pull the experiments every machine pushed there for this "
                            "commit (dvc exp pull --no-cache), e.g. origin")

    registry = commands.add_parser(
        "registry", help="the model bundles declared as DVC artifacts (dvc artifacts get)",
        description="Show the artifacts of dvc.yaml; --update rewrites their meta (architecture, "
                    "data, balanced accuracy) from the metrics files.")
    registry.add_argument("--update", action="store_true",
                          help="rewrite the artifacts section of dvc.yaml from the metrics")

    pull = commands.add_parser(
        "pull", help="dvc pull, but check out only if every object arrived intact",
        description="Fetch the outputs dvc.lock names, verify every downloaded object's hash, "
                    "and check them out only when all are intact (else change nothing).")
    pull.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    pull.add_argument("-j", "--jobs", type=_positive, help="parallel downloads")

    for name, summary in stages().items():
        stage = commands.add_parser(
            name, help=f"stage: {summary}", add_help=False,
            description=f"{summary} (the same as `python -m meli.stages.{name}`)")
        stage.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in stages():
        # The stage parses its own arguments (and --help), as under `python -m`.
        stage = importlib.import_module(f"meli.stages.{argv[0]}")
        return stage.main(argv[1:])
    args = build_parser().parse_args(argv)
    action = {"predict": _predict, "explain": _explain, "serve": _serve, "search": _search,
              "leaderboard": _leaderboard,
              "registry": _registry, "pull": _pull}[args.command]
    return run(args.command, lambda: action(args))
