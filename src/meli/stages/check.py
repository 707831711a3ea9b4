"""check: validate the whole of params.yaml before any other stage runs.

Run by dvc.yaml as `python -m meli.stages.check`, first: it depends on every key of params.yaml,
and `ingest`, which every other stage comes after, depends on its output. DVC removes a stage's
outputs just before it runs that stage, so without this stage a misspelled key or a value out of
range (`dvc exp run -S +train.learnig_rate=0.01`) would be found only by the first stage that
reads its section, once DVC had removed that stage's outputs (`models/mlp`, for instance).
Here the whole file is loaded with the schema and the model registry, and the local files it
names (`data.source`, `embeddings.pretrained`) must exist, so such a mistake stops the pipeline
with one line before anything is removed.

Its output, `data/params-checked.txt`, is a fixed text: valid params write the same bytes
whatever their values, so this stage rerunning after a change of params makes no other stage
stale. It is `persist: true`: DVC does not remove it before the run, so a failed check removes
nothing at all.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from meli.errors import MeliError, run, stage_parser
from meli.files import atomic_file, writing
from meli.models import params_classes
from meli.params import Params, load_params

log = logging.getLogger(__name__)

# Only this stage and dvc.yaml name it (so it is not in meli.layout, whose change would make every
# stage stale).
PARAMS_CHECKED_FILE = "data/params-checked.txt"
CHECKED_TEXT = b"params.yaml: every key known, every value of its type and in its range\n"


def check(params: Params) -> None:
    """Refuse, with one line, the local files params name that do not exist (a URL is left to
    ingest: reaching it is ingest's work)."""
    source = params.data.source
    if source != "sample" and "://" not in source and not Path(source).expanduser().exists():
        raise MeliError(f"data.source: {source}: no such file or directory")
    vectors = params.embeddings.pretrained
    if vectors and not Path(vectors).expanduser().is_file():
        raise MeliError(f"embeddings.pretrained: {vectors}: no such vectors file")


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("check", __doc__)
    args = parser.parse_args(argv)

    def stage() -> None:
        check(load_params(args.params, models=params_classes()))
        output = Path(PARAMS_CHECKED_FILE)
        with writing(output):
            output.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(output) as out:
                out.write(CHECKED_TEXT)
        log.info("check: %s is valid", args.params)

    return run("check", stage)


if __name__ == "__main__":
    sys.exit(main())
