"""The full challenge's scale: build challenge- and course-shaped files, run the stages on them.

    python benchmarks/scale.py --rows 2000000 [--format csv|jsonl|both] [--work /tmp/meli-scale]
        [--stages ingest,prepare,featurize,embeddings,baseline,linear]
        [--set embeddings.epochs=1 ...]

Two test files of `--rows` rows each, built once and kept under `--work` (a rerun reuses them):
- `challenge-<rows>.csv.gz`: the MeLi 2019 challenge's `train.csv` shape, a header
  `title,label_quality,language,category` and one row per title, quoted only where needed
  (titles holding a comma, such as "1,5m", are quoted);
- `course-<rows>.jsonl.gz`: the course's JSON-lines shape (`language`, `label_quality`, `title`,
  `category`, `split`, `tokenized_title`, `data`, `target`, `n_labels`, `size` per line, titles
  escaped to ASCII like the course's files).

The titles are made up, deterministically from `--seed`, with numpy and Arrow: 1,600 categories
(names such as `KITCHEN_PARTS`), each with twelve pseudo-words of its own per language built from
Spanish or Portuguese syllables ("ción"/"ção", "ñ"/"nh", ...), plus 800 brands shared by every
category, model codes ("X42"), generic words per language ("nuevo"/"novo") and sizes ("1,5m");
half the rows are Spanish, half Portuguese, one in eight `reliable`, categories drawn with a
mild Zipf skew (the rarest still has hundreds of rows at 2M). About 1% of the rows are broken on
purpose, in turns: a wrong number of CSV fields or malformed JSON, bytes that are not UTF-8, an
empty title, a missing category, a 1,500-character title, and (JSON) a line that is not an object.
The files differ with the seed and the row count only, so a rerun measures the same bytes.

Each stage then runs as its own process, `python -m meli.stages.<stage>`, in a workspace holding a
`params.yaml` (the repository's, with `data.source` pointed at the file and the `--set` values),
exactly as DVC runs it. Printed per stage: seconds in the stage (the interpreter's start-up
aside; the process's own wall time in parentheses), rows/s, the peak resident memory of that
process (os.wait4's ru_maxrss) and the size of what it wrote; for the fastText stages also words
per second per thread. The machine may be busy with other work: rerun for steadier figures.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from pipeline_speed import run_stage  # the same per-stage driver and measures

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "prepare", "featurize", "embeddings", "baseline", "linear")
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

    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.categories = pa.array([f"{_FIRST[i % len(_FIRST)]}_{_SECOND[i // len(_FIRST)]}"
                                    for i in range(CATEGORIES)])
        ranks = rng.permutation(CATEGORIES) + 1
        weights = 1.0 / ranks.astype(np.float64) ** 0.5
        self.weights = weights / weights.sum()
        self.words = {language: self._words(rng, language, CATEGORIES * WORDS_PER_CATEGORY)
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
        category = rng.choice(CATEGORIES, size=rows, p=self.weights)
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


def build_csv(path: Path, rows: int, seed: int) -> None:
    titles = Titles(seed)
    with gzip.open(path.with_suffix(".partial"), "wb", compresslevel=1) as out:
        out.write(b"title,label_quality,language,category\n")
        for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
            count = min(CHUNK_ROWS, rows - start)
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
            out.write(b"\n".join(lines) + b"\n")
    path.with_suffix(".partial").rename(path)


def _escaped(words: list[str], lower: bool = False) -> list[str]:
    return [json.dumps(word.lower() if lower else word)[1:-1] for word in words]


def build_jsonl(path: Path, rows: int, seed: int) -> None:
    """Course-shaped JSON lines; the same titles as the CSV of the same seed and rows."""
    titles = Titles(seed)
    with gzip.open(path.with_suffix(".partial"), "wb", compresslevel=1) as out:
        for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
            count = min(CHUNK_ROWS, rows - start)
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
                f',"n_labels":{CATEGORIES},"size":{rows}}}', "")
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
            out.write(b"\n".join(lines) + b"\n")
    path.with_suffix(".partial").rename(path)


_OUTPUTS = {"ingest": ["data/raw"], "prepare": ["data/prepared"],
            "featurize": ["data/features"], "embeddings": ["models/embeddings"],
            "baseline": ["models/fasttext"], "linear": ["models/linear"]}


def _size_mb(workdir: Path, stage: str) -> float:
    total = 0
    for name in _OUTPUTS[stage]:
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


def _rows_into(stage: str, workdir: Path) -> int:
    """Rows the stage read: ingest the source's, prepare the raw table's, featurize every
    split's, the fastText stages the training split's."""
    source = json.loads((workdir / "data/raw/source.json").read_text())
    if stage == "ingest":
        return source["rows_read"]
    if stage == "prepare":
        return source["rows_written"]
    data = json.loads((workdir / "metrics/data.json").read_text())
    return sum(data["rows"].values()) if stage == "featurize" else data["rows"]["train"]


def _set(params: dict, assignment: str) -> None:
    key, _, value = assignment.partition("=")
    section, _, name = key.partition(".")
    if not name or section not in params:
        raise SystemExit(f"--set {assignment}: expected section.key=value")
    params[section][name] = yaml.safe_load(value)


def benchmark(name: str, source: Path, workdir: Path, stages: list[str],
              assignments: list[str]) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["source"] = str(source)
    for assignment in assignments:
        _set(params, assignment)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    results = []
    for stage in stages:
        seconds, wall, peak_mb = run_stage(stage, workdir)
        measured = {"seconds": seconds, "wall": wall, "peak_mb": peak_mb}
        rows = _rows_into(stage, workdir)
        result = {"dataset": name, "stage": stage, "rows": rows, **measured,
                  "rows_per_second": rows / measured["seconds"],
                  "output_mb": _size_mb(workdir, stage)}
        extra = ""
        if stage in ("embeddings", "baseline"):
            section = params[stage]
            threads = section["threads"]
            threads = os.cpu_count() or 1 if threads == "auto" else int(threads)
            words = _train_words(workdir) * section["epochs"]
            result["words_per_second_per_thread"] = words / measured["seconds"] / threads
            extra = (f"  {result['words_per_second_per_thread']:,.0f} words/s/thread "
                     f"({threads} threads, {section['epochs']} epochs)")
        results.append(result)
        print(f"{name:>10} {stage:<10} {rows:>11,} rows {measured['seconds']:8.1f} s "
              f"({measured['wall']:6.1f} s) {result['rows_per_second']:>10,.0f} rows/s "
              f"{measured['peak_mb']:7,.0f} MB peak {result['output_mb']:8,.1f} MB out{extra}",
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--format", choices=("csv", "jsonl", "both"), default="both")
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--work", type=Path, default=Path("/tmp/meli-scale"),
                        help="where the test files and workspaces go (default: %(default)s)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="comma-separated stages to run, in order (default: all five)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a params value for the run, e.g. embeddings.threads=auto")
    parser.add_argument("--build-only", action="store_true", help="build the files, run nothing")
    args = parser.parse_args()
    stages = [stage for stage in args.stages.split(",") if stage]
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise SystemExit(f"--stages: unknown {', '.join(unknown)} (known: {', '.join(STAGES)})")
    args.work.mkdir(parents=True, exist_ok=True)
    formats = ("csv", "jsonl") if args.format == "both" else (args.format,)
    results = []
    for kind in formats:
        name = "challenge" if kind == "csv" else "course"
        source = args.work / f"{name}-{args.rows}-s{args.seed}.{kind}.gz"
        if not source.exists():
            started = time.perf_counter()
            (build_csv if kind == "csv" else build_jsonl)(source, args.rows, args.seed)
            print(f"built {source} ({source.stat().st_size / 1e6:,.0f} MB) in "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        if args.build_only:
            continue
        workdir = args.work / f"{name}-{args.rows}"
        results += benchmark(f"{name}", source, workdir, stages, args.set)
    if results:
        data_stages = [r for r in results if r["stage"] in ("ingest", "prepare", "featurize")]
        for name in sorted({r["dataset"] for r in data_stages}):
            total = sum(r["seconds"] for r in data_stages if r["dataset"] == name)
            print(f"{name}: ingest + prepare + featurize {total:.1f} s; highest peak "
                  f"{max(r['peak_mb'] for r in results if r['dataset'] == name):,.0f} MB")


if __name__ == "__main__":
    main()
