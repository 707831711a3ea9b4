"""The full challenge's scale: build challenge- and course-shaped files, run the pipeline on them.

    python benchmarks/scale.py --rows 4900000 --format jsonl --stages all
    python benchmarks/scale.py --rows 2000000 [--format csv|jsonl|both] [--work /tmp/meli-scale]
        [--stages ingest,prepare,featurize,embeddings,baseline,linear | all | train@rnn,...]
        [--set train.epochs=2 ...] [--categories 1600] [--json results.json]

Two test files of `--rows` rows each, built once and kept under `--work` (a rerun reuses them):
- `challenge-<rows>.csv.gz`: the MeLi 2019 challenge's `train.csv` shape, a header
  `title,label_quality,language,category` and one row per title, quoted only where needed
  (titles holding a comma, such as "1,5m", are quoted);
- `course-<rows>.jsonl.gz`: the course's JSON-lines shape (`language`, `label_quality`, `title`,
  `category`, `split`, `tokenized_title`, `data`, `target`, `n_labels`, `size` per line, titles
  escaped to ASCII like the course's files).

The titles are made up, deterministically from `--seed`, with numpy and Arrow: 1,600 categories
(names such as `KITCHEN_PARTS`; `--categories` takes fewer, for a quick try), each with twelve
pseudo-words of its own per language built from Spanish or Portuguese syllables ("ción"/"ção",
"ñ"/"nh", ...), plus 800 brands shared by every category, model codes ("X42"), generic words per
language ("nuevo"/"novo") and sizes ("1,5m"); half the rows are Spanish, half Portuguese, one in
eight `reliable`, categories drawn with a mild Zipf skew (the rarest still has hundreds of rows at
2M). About 1% of the rows are broken on purpose, in turns: a wrong number of CSV fields or
malformed JSON, bytes that are not UTF-8, an empty title, a missing category, a 1,500-character
title, and (JSON) a line that is not an object. The files differ with the seed, the row count
and the categories only, so a rerun measures the same bytes.

`--stages` names stages of dvc.yaml (`train@rnn`, `evaluate@ensemble`, ...) to run in the order
given, or `all`: every stage of dvc.yaml in its order, then `registry` (`meli registry --update`,
which writes the models' figures into the workspace's copy of dvc.yaml). Each runs as its own
process, `python -m meli.stages.<stage> [<model>]`, in a workspace holding a `params.yaml`: the
repository's, with `data.source` pointed at the file, then the settings a user would give at that
size (`SCALE_SETTINGS`, the README's "The full data" commands: fewer epochs, fastText on every
core), then the `--set` values. Printed per stage: seconds in the stage (the interpreter's
start-up aside; the process's own wall time in parentheses), rows/s of what it read, the peak
resident memory of that process (os.wait4's ru_maxrss), the size of what it wrote and the longest
time it went without writing a line (a stage should show progress at least every minute); for
the fastText stages also words per second per thread. At the end, one markdown table of every
stage and the total. The machine may be busy with other work: rerun for steadier figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pipeline_speed import run_stage  # the same per-stage driver and measures

ROOT = Path(__file__).resolve().parents[1]
# What runs without --stages: the stages whose figures the README gives for both files.
DEFAULT_STAGES = ("ingest", "prepare", "featurize", "embeddings", "baseline", "linear")
REGISTRY = "registry"  # `meli registry --update`, after the pipeline
CATEGORIES = 1_600
WORDS_PER_CATEGORY = 12
BRANDS = 800
CHUNK_ROWS = 200_000
BROKEN_EVERY = 100  # about 1% of the rows

_FIRST = ["AUTOMOTIVE", "KITCHEN", "BABY", "PET", "GARDEN", "OFFICE", "SPORTS", "TOOLS", "TOYS",
          "BEAUTY", "HEALTH", "MUSIC", "CAMERA", "PHONE", "COMPUTER", "GAMING", "BIKE", "FISHING",
          "CAMPING", "BATH", "BEDROOM", "LIGHTING", "PARTY", "SCHOOL", "SHOE", "WATCH", "JEWELRY",
          "MOTORCYCLE", "TRUCK", "BOAT", "DRONE", "PRINTER", "NETWORK", "AUDIO", "VIDEO", "SOLAR",
          "SEWING", "CRAFT", "WINE", "COFFEE"]
_SECOND = ["PARTS", "ACCESSORIES", "CASES", "CABLES", "LIGHTS", "COVERS", "BAGS", "SETS", "KITS",
           "STANDS", "FILTERS", "PUMPS", "SENSORS", "MOTORS", "BATTERIES", "CHARGERS", "TOOLS",
           "CLEANERS", "HOLDERS", "MOUNTS", "DISPLAYS", "SWITCHES", "VALVES", "BRUSHES", "BOXES",
           "SHELVES", "MATS", "STRAPS", "BELTS", "GLOVES", "HATS", "SHIRTS", "PANTS", "BOOTS",
           "DECALS", "STICKERS", "LABELS", "TAPES", "GLUES", "PAINTS"]
_SYLLABLES = {
    "spanish": ["ca", "lo", "ta", "mi", "sa", "ne", "ro", "pi", "du", "me", "li", "ga", "ve",
                "ño", "lla", "cho", "rre", "gue", "qui", "ble", "dor", "cia", "té", "zá", "mó"],
    "portuguese": ["ca", "lo", "ta", "mi", "sa", "ne", "ro", "pi", "du", "me", "li", "ga", "ve",
                   "nho", "lha", "xo", "rre", "gue", "qui", "vel", "dor", "ção", "tê", "zã", "mô"],
}
_ENDINGS = {"spanish": ["", "s", "ón", "es", "ado", "ero"],
            "portuguese": ["", "s", "ão", "es", "ado", "eiro"]}
_GENERIC = {
    "spanish": ["nuevo", "original", "oferta", "envío gratis", "kit", "pack", "premium",
                "importado", "garantía", "usado", "calidad", "combo", "oficial", "liquidación"],
    "portuguese": ["novo", "original", "oferta", "frete grátis", "kit", "pacote", "premium",
                   "importado", "garantia", "usado", "qualidade", "combo", "oficial", "promoção"],
}
_SIZES = ["1,5m", "2,5kg", "0,5l", "3,2mm", "1,8m", "2,4ghz"]


class Titles:
    """The made-up vocabulary and the vectorized drawing of titles from it."""

    def __init__(self, seed: int, categories: int = CATEGORIES):
        rng = np.random.default_rng(seed)
        self.count = categories
        self.categories = pa.array([f"{_FIRST[i % len(_FIRST)]}_{_SECOND[i // len(_FIRST)]}"
                                    for i in range(categories)])
        ranks = rng.permutation(categories) + 1
        weights = 1.0 / ranks.astype(np.float64) ** 0.5
        self.weights = weights / weights.sum()
        self.words = {language: self._words(rng, language, categories * WORDS_PER_CATEGORY)
                      for language in ("spanish", "portuguese")}
        self.brands = self._words(rng, "spanish", BRANDS, capitalize=False)
        self.brands = [brand.upper() if i % 3 == 0 else brand.capitalize()
                       for i, brand in enumerate(self.brands)]
        letters = "ABCDEFGHJKLMNPRSTVXZ"
        self.models = [f"{letters[i % 20]}{10 + i // 20}" for i in range(2_000)]

    @staticmethod
    def _words(rng: np.random.Generator, language: str, count: int,
               capitalize: bool = True) -> list[str]:
        syllables, endings = _SYLLABLES[language], _ENDINGS[language]
        words = []
        for _ in range(count):
            parts = rng.choice(len(syllables), size=rng.integers(2, 4))
            word = "".join(syllables[p] for p in parts) + endings[rng.integers(len(endings))]
            words.append(word.capitalize() if capitalize else word)
        return words

    def chunk(self, rows: int, seed: int) -> pa.Table:
        """`rows` titles with their category, language and label quality."""
        rng = np.random.default_rng(seed)
        category = rng.choice(self.count, size=rows, p=self.weights)
        portuguese = rng.random(rows) < 0.5
        portuguese_mask = pa.array(portuguese)

        def pick(per_language: dict[str, list[str]] | list[str], index: np.ndarray) -> pa.Array:
            if isinstance(per_language, list):
                return pc.take(pa.array(per_language), pa.array(index))
            spanish = pc.take(pa.array(per_language["spanish"]), pa.array(index))
            other = pc.take(pa.array(per_language["portuguese"]), pa.array(index))
            return pc.if_else(portuguese_mask, other, spanish)

        def own_word() -> pa.Array:
            index = category * WORDS_PER_CATEGORY + rng.integers(0, WORDS_PER_CATEGORY, rows)
            return pick(self.words, index)

        first, second, third = own_word(), own_word(), own_word()
        brand = pick(self.brands, rng.integers(0, BRANDS, rows))
        model = pick(self.models, rng.integers(0, len(self.models), rows))
        generic = pick(_GENERIC, rng.integers(0, len(_GENERIC["spanish"]), rows))
        size = pick(_SIZES, rng.integers(0, len(_SIZES), rows))
        with_size = pa.array(rng.random(rows) < 0.1)
        model = pc.if_else(with_size, pc.binary_join_element_wise(model, size, " "), model)
        title = pc.binary_join_element_wise(first, second, brand, model, third, generic, " ")
        quality = np.where(rng.random(rows) < 0.125, "reliable", "unreliable")
        return pa.table({
            "title": title,
            "label_quality": pa.array(quality),
            "language": pa.array(np.where(portuguese, "portuguese", "spanish")),
            "category": pc.take(self.categories, pa.array(category)),
        })


def _broken_rows(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of a chunk are broken (about 1%), and how (an index into the kinds)."""
    rng = np.random.default_rng(seed + 1)
    chosen = np.flatnonzero(rng.random(rows) < 1 / BROKEN_EVERY)
    return chosen, np.arange(len(chosen)) % 6


def _csv_chunk(titles: Titles, count: int, seed: int, index: int) -> bytes:
    table = titles.chunk(count, seed * 1_000_003 + index)
    title = table.column("title")
    # Quoted only where needed, as pandas and the csv module write it.
    needs_quotes = pc.match_substring_regex(title, '[,"]')
    quoted = pc.binary_join_element_wise(
        '"', pc.replace_substring(title, '"', '""'), '"', "")
    line = pc.binary_join_element_wise(
        pc.if_else(needs_quotes, quoted, title), table.column("label_quality"),
        table.column("language"), table.column("category"), ",")
    lines = [text.encode() for text in line.to_pylist()]
    for row, kind in zip(*_broken_rows(count, seed + index), strict=True):
        line = lines[row]
        category = line.rsplit(b",", 1)[1]
        lines[row] = (
            line.rsplit(b",", 1)[0],                                # 3 fields
            b"Caf\xe9 molido " + line,                              # Latin-1, not UTF-8
            b",reliable,spanish," + category,                      # empty title
            line.rsplit(b",", 1)[0] + b",",                         # no category
            b"x" * 1_500 + b",reliable,spanish," + category,       # too long
            line + b",extra",                                       # 5 fields
        )[kind]
    return b"\n".join(lines) + b"\n"


def _jsonl_chunk(titles: Titles, count: int, seed: int, index: int, rows: int) -> bytes:
    """Course-shaped JSON lines; the same titles as the CSV of the same seed and rows."""
    table = titles.chunk(count, seed * 1_000_003 + index)
    title = table.column("title").to_pylist()
    escaped = pa.array([json.dumps(t)[1:-1] for t in title])
    tokens = pc.utf8_split_whitespace(pc.utf8_lower(table.column("title")))
    token_list = pa.array([json.dumps(t) for t in tokens.to_pylist()])
    lengths = pc.list_value_length(tokens)
    data = pa.array([f"[{','.join(str(7 * i + 3) for i in range(n))}]"
                     for n in lengths.to_pylist()])
    category_index = pc.index_in(table.column("category"), value_set=titles.categories)
    line = pc.binary_join_element_wise(
        '{"language":"', table.column("language"), '","label_quality":"',
        table.column("label_quality"), '","title":"', escaped, '","category":"',
        table.column("category"), '","split":"train","tokenized_title":', token_list,
        ',"data":', data, ',"target":', pc.cast(category_index, pa.string()),
        f',"n_labels":{titles.count},"size":{rows}}}', "")
    lines = [text.encode() for text in line.to_pylist()]
    for row, kind in zip(*_broken_rows(count, seed + index), strict=True):
        good = lines[row]
        record = json.loads(good)
        lines[row] = (
            good[: len(good) // 2],                                        # malformed
            b'{"title": "Caf\xe9 molido", "category": "COFFEE_SETS"}',     # not UTF-8
            json.dumps(record | {"title": ""}).encode(),                   # empty title
            json.dumps({k: v for k, v in record.items()
                        if k != "category"}).encode(),                    # no category
            json.dumps(record | {"title": "x" * 1_500}).encode(),          # too long
            b'["not", "an", "object"]',                                    # not an object
        )[kind]
    return b"\n".join(lines) + b"\n"


_WORKER_TITLES: dict[tuple[int, int], Titles] = {}


def _compressed_chunk(kind: str, rows: int, seed: int, categories: int, chunk_rows: int,
                      index: int) -> bytes:
    """Chunk `index` of the file, as a gzip member of its own (a gzip file may be several, one
    after another): built in any process, in any order, the file's bytes are the same."""
    titles = _WORKER_TITLES.get((seed, categories))
    if titles is None:
        titles = _WORKER_TITLES.setdefault((seed, categories), Titles(seed, categories))
    count = min(chunk_rows, rows - index * chunk_rows)
    lines = (_csv_chunk(titles, count, seed, index) if kind == "csv"
             else _jsonl_chunk(titles, count, seed, index, rows))
    return gzip.compress(lines, compresslevel=1, mtime=0)


def build(kind: str, path: Path, rows: int, seed: int, categories: int = CATEGORIES,
          jobs: int = 1, chunk_rows: int = CHUNK_ROWS) -> None:
    """The test file of `kind` (csv: the challenge's shape; jsonl: the course's), built chunk by
    chunk in `jobs` processes and written in order."""
    chunks = range(-(-rows // chunk_rows))
    unfinished = path.with_suffix(".partial")
    with unfinished.open("wb") as out:
        if kind == "csv":
            out.write(gzip.compress(b"title,label_quality,language,category\n",
                                    compresslevel=1, mtime=0))
        if jobs <= 1:
            for index in chunks:
                out.write(_compressed_chunk(kind, rows, seed, categories, chunk_rows, index))
        else:
            with ProcessPoolExecutor(jobs) as pool:
                for member in pool.map(partial(_compressed_chunk, kind, rows, seed,
                                                categories, chunk_rows), chunks):
                    out.write(member)
    unfinished.rename(path)


# What a user sets at the full data's size: the README's "The full data" commands. fastText on
# every core and fewer passes (the course's 4.9M titles: 2 for the vectors; the challenge's 20M:
# 1), hierarchical softmax for the baseline over 1,600 categories, one epoch of each PyTorch
# model. Everything else is params.yaml's.
SCALE_SETTINGS = {
    "jsonl": ["embeddings.threads=auto", "embeddings.epochs=2", "baseline.threads=auto",
              "baseline.epochs=5", "baseline.loss=hs", "train.epochs=1"],
    "csv": ["embeddings.threads=auto", "embeddings.epochs=1", "baseline.threads=auto",
            "baseline.epochs=5", "baseline.loss=hs", "train.epochs=1"],
}


def pipeline_stages() -> list[str]:
    """Every stage of dvc.yaml in its order, a matrix stage once per model (`train@mlp`), then
    the registry update."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    names = []
    for name, stage in stages.items():
        matrix = stage.get("matrix")
        if matrix:
            (values,) = matrix.values()  # one dimension: the model
            names += [f"{name}@{value}" for value in values]
        else:
            names.append(name)
    return [*names, REGISTRY]


def parse_stages(text: str) -> list[str]:
    """`--stages`: `all`, or stage names separated by commas, each checked against dvc.yaml."""
    known = pipeline_stages()
    stages = [stage.strip() for stage in text.split(",") if stage.strip()]
    if stages == ["all"]:
        return known
    unknown = [stage for stage in stages if stage not in known]
    if unknown:
        raise SystemExit(f"--stages: unknown {', '.join(unknown)} (known: all, "
                         f"{', '.join(known)})")
    return stages


def _command(stage: str) -> tuple[str, list[str]]:
    """The module whose main() runs the stage, and its arguments (dvc.yaml's `cmd`)."""
    if stage == REGISTRY:
        return "meli.cli", ["registry", "--update"]
    name, _, model = stage.partition("@")
    return f"meli.stages.{name}", [model] if model else []


def _outputs(stage: str) -> list[str]:
    name, _, model = stage.partition("@")
    return {"check": ["data/params-checked.txt"], "ingest": ["data/raw"],
            "prepare": ["data/prepared"],
            "featurize": ["data/features"], "embeddings": ["models/embeddings"],
            "train": [f"models/{model}"], "baseline": ["models/fasttext"],
            "linear": ["models/linear"], "ensemble": ["models/ensemble"],
            "evaluate": [f"metrics/{model}.json", f"results/evaluate/{model}"],
            REGISTRY: ["dvc.yaml"]}[name]


def _size_mb(workdir: Path, stage: str) -> float:
    total = 0
    for name in _outputs(stage):
        path = workdir / name
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        total += sum(file.stat().st_size for file in files)
    return total / 1e6


def _train_words(workdir: Path) -> int:
    total = 0
    train = pq.ParquetFile(workdir / "data/prepared/train.parquet", pre_buffer=False)
    for batch in train.iter_batches(1_000_000, columns=["text"]):
        total += pc.sum(pc.list_value_length(pc.utf8_split_whitespace(
            batch.column("text")))).as_py() or 0
    return total


def _rows_into(stage: str, workdir: Path, params: dict) -> int | None:
    """Rows the stage read: ingest the source's, prepare the raw table's, featurize every
    split's, the training stages the training split's, the ensemble its validation sample's,
    evaluate the test split's; the params check and the registry none."""
    name = stage.partition("@")[0]
    if name in ("check", REGISTRY):
        return None
    source = json.loads((workdir / "data/raw/source.json").read_text())
    if name == "ingest":
        return source["rows_read"]
    if name == "prepare":
        return source["rows_written"]
    rows = json.loads((workdir / "metrics/data.json").read_text())["rows"]
    if name == "featurize":
        return sum(rows.values())
    if name == "ensemble":
        return min(rows["validation"], params["ensemble"]["max_rows"])
    return rows["test"] if name == "evaluate" else rows["train"]


def _set(params: dict, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    section, _, name = key.partition(".")
    if not name or section not in params:
        raise SystemExit(f"--set {assignment}: expected section.key=value")
    params[section][name] = yaml.safe_load(value)


def _gb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB"


def benchmark(name: str, source: Path, workdir: Path, stages: list[str],
              assignments: list[str]) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["source"] = str(source)
    for assignment in assignments:
        _set(params, assignment)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    print(f"{name}: {workdir}, params.yaml as the repository's with data.source={source} "
          f"{' '.join(assignments)}", flush=True)
    results = []
    for stage in stages:
        if stage == REGISTRY:
            # The registry rewrites dvc.yaml's artifacts: the workspace's own copy.
            shutil.copyfile(ROOT / "dvc.yaml", workdir / "dvc.yaml")
        module, argv = _command(stage)
        run = run_stage(stage, workdir, argv, module)
        rows = _rows_into(stage, workdir, params)
        result = {"dataset": name, "stage": stage, "rows": rows, "seconds": run.seconds,
                  "wall": run.wall, "peak_mb": run.peak_mb,
                  "longest_silence": run.longest_silence,
                  "rows_per_second": rows / run.seconds if rows else None,
                  "output_mb": _size_mb(workdir, stage)}
        extra = ""
        if stage in ("embeddings", "baseline"):
            section = params[stage]
            threads = section["threads"]
            threads = os.cpu_count() or 1 if threads == "auto" else int(threads)
            words = _train_words(workdir) * section["epochs"]
            result["words_per_second_per_thread"] = words / run.seconds / threads
            extra = (f"  {result['words_per_second_per_thread']:,.0f} words/s/thread "
                     f"({threads} threads, {section['epochs']} epochs)")
        results.append(result)
        speed = f"{result['rows_per_second']:>10,.0f} rows/s" if rows else " " * 17
        print(f"{name:>10} {stage:<18} {rows or 0:>11,} rows {run.seconds:8.1f} s "
              f"({run.wall:6.1f} s) {speed} {run.peak_mb:7,.0f} MB peak "
              f"{result['output_mb']:8,.1f} MB out, silent at most {run.longest_silence:.0f} s"
              f"{extra}", flush=True)
    return results


def table(results: list[dict]) -> str:
    """The runs as a markdown table, one row per stage, and the total of each file."""
    lines = ["| file | stage | rows in | time | rows/s | peak memory | longest silence |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        rows = f"{r['rows']:,}" if r["rows"] else ""
        speed = f"{r['rows_per_second']:,.0f}" if r["rows_per_second"] else ""
        lines.append(f"| {r['dataset']} | {r['stage']} | {rows} | {r['seconds']:,.0f} s | "
                     f"{speed} | {_gb(r['peak_mb'])} | {r['longest_silence']:.0f} s |")
    for name in sorted({r["dataset"] for r in results}):
        mine = [r for r in results if r["dataset"] == name]
        total = sum(r["wall"] for r in mine)
        lines.append(f"| {name} | **{len(mine)} stages** | | {total / 60:,.1f} min | | "
                     f"{_gb(max(r['peak_mb'] for r in mine))} | "
                     f"{max(r['longest_silence'] for r in mine):.0f} s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--format", choices=("csv", "jsonl", "both"), default="both")
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--categories", type=int, default=CATEGORIES,
                        help="categories of the made-up titles, at most %(default)s")
    parser.add_argument("--work", type=Path, default=Path("/tmp/meli-scale"),
                        help="where the test files and workspaces go (default: %(default)s)")
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES),
                        help="stages of dvc.yaml to run, in order, separated by commas "
                             "(train@rnn, evaluate@ensemble, ..., registry), or all "
                             "(default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a params value for the run, after the settings for the full "
                             "data's size, e.g. train.epochs=2")
    parser.add_argument("--json", type=Path, help="also write every stage's figures here")
    parser.add_argument("--build-only", action="store_true", help="build the files, run nothing")
    parser.add_argument("--build-jobs", type=int, default=os.cpu_count() or 1,
                        help="processes building a file (default: every core, %(default)s)")
    args = parser.parse_args()
    stages = parse_stages(args.stages)
    if not 1 <= args.categories <= CATEGORIES:
        raise SystemExit(f"--categories: between 1 and {CATEGORIES}")
    args.work.mkdir(parents=True, exist_ok=True)
    formats = ("csv", "jsonl") if args.format == "both" else (args.format,)
    results = []
    for kind in formats:
        name = "challenge" if kind == "csv" else "course"
        shape = f"{args.rows}" + (f"-c{args.categories}" if args.categories != CATEGORIES else "")
        source = args.work / f"{name}-{shape}-s{args.seed}.{kind}.gz"
        if not source.exists():
            started = time.perf_counter()
            build(kind, source, args.rows, args.seed, args.categories, args.build_jobs)
            print(f"built {source} ({source.stat().st_size / 1e6:,.0f} MB) in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        if args.build_only:
            continue
        workdir = args.work / f"{name}-{shape}"
        results += benchmark(name, source, workdir, stages, [*SCALE_SETTINGS[kind], *args.set])
    if not results:
        return
    data_stages = [r for r in results if r["stage"] in ("ingest", "prepare", "featurize")]
    for name in sorted({r["dataset"] for r in data_stages}):
        total = sum(r["seconds"] for r in data_stages if r["dataset"] == name)
        print(f"{name}: ingest + prepare + featurize {total:.1f} s")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
