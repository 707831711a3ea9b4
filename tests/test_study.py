"""The original study's settings (frozen vectors; the CNN's kernels 2 to 4), as the README runs
them with `dvc exp run -S`: valid params, and on the real sample clearly behind the defaults."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from meli.models import params_classes
from meli.models.mlp import MLPParams
from meli.params import (
    DataParams,
    EmbeddingsParams,
    FeaturizeParams,
    PrepareParams,
    TrainParams,
    parse_params,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared/data/meli-es-sample.jsonl.gz"


def readme_study_commands() -> dict[str, list[str]]:
    """{experiment name: its `-S key=value` settings} from the README's study section."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(
        "### The original study's settings", 1)[1].split("\n### ", 1)[0]
    commands = {}
    for line in section.splitlines():
        if line.startswith("dvc exp run ") and " -n study-" in line:
            words = shlex.split(line)
            settings = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
            commands[words[words.index("-n") + 1]] = settings
    return commands


def apply(settings: list[str]) -> dict:
    params = to_dict(parse_params(yaml.safe_load((ROOT / "params.yaml").read_text()),
                                  models=params_classes()))
    for setting in settings:
        key, value = setting.split("=", 1)
        *path, leaf = key.split(".")
        section = params
        for part in path:
            section = section[part]
        section[leaf] = yaml.safe_load(value)
    return params


def test_the_readme_study_experiments_are_valid_params():
    commands = readme_study_commands()
    assert set(commands) == {"study-mlp", "study-cnn"}
    for name, settings in commands.items():
        params = parse_params(apply(settings), models=params_classes())
        assert params.train.freeze_embeddings is True
        model = name.removeprefix("study-")
        assert params.model(model).word_dropout == 0
    assert parse_params(apply(commands["study-cnn"]),
                        models=params_classes()).model("cnn").kernel_sizes == [2, 3, 4]
    assert re.search(r"train@mlp evaluate@mlp", (ROOT / "README.md").read_text())


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE.exists(), reason=f"real MeLi sample not found at {SAMPLE}")
def test_on_the_real_sample_frozen_vectors_fall_clearly_behind(tmp_path):
    from meli.stages.embeddings import build_embeddings
    from meli.stages.featurize import featurize
    from meli.stages.ingest import ingest
    from meli.stages.prepare import prepare
    from meli.stages.train import train

    ingest(DataParams(source=str(SAMPLE)), tmp_path / "raw")
    prepare(PrepareParams(), tmp_path / "raw", tmp_path / "prepared", tmp_path / "data.json")
    featurize(FeaturizeParams(), tmp_path / "prepared", tmp_path / "features",
              tmp_path / "features.json")
    # Small and quick vectors: what is compared is frozen against fine-tuned, on the same ones.
    build_embeddings(EmbeddingsParams(dim=16, epochs=2, min_ngram=0, max_ngram=0),
                     tmp_path / "prepared", tmp_path / "features", tmp_path / "embeddings")
    results = {}
    for frozen in (True, False):
        results[frozen] = train(
            "mlp", TrainParams(epochs=2, freeze_embeddings=frozen, threads=2),
            MLPParams(word_dropout=0.0), tmp_path / "features", tmp_path / "embeddings",
            tmp_path / "prepared", tmp_path / f"mlp-{frozen}", tmp_path / f"live-{frozen}")
    gap = (results[False].validation_balanced_accuracy
           - results[True].validation_balanced_accuracy)
    assert gap > 0.05, f"fine-tuning gained only {gap:.3f} over frozen vectors"
