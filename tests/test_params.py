"""params.yaml loading: every mistake fails at load time with one line naming the key."""

from __future__ import annotations

import dataclasses
import subprocess
import typing
from pathlib import Path

import pytest
import yaml

from meli.errors import MeliError
from meli.models import params_classes
from meli.params import (
    SECTIONS,
    EmbeddingsParams,
    Params,
    PrepareParams,
    TextParams,
    load_params,
    parse_params,
    to_dict,
)

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def load_text(tmp_path: Path, text: str) -> Params:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return load_params(path)


def error_of(raw: dict) -> str:
    with pytest.raises(MeliError) as caught:
        parse_params(raw)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("params.yaml: ")
    return message


def test_repository_params_load():
    # Not compared with the defaults: `dvc exp run -S` and `dvc exp apply` change params.yaml.
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    assert params.embeddings.problem() is None
    assert params.prepare.problem() is None


def yaml_keys(section: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in section.items():
        keys.add(prefix + key)
        # search.space is a free mapping (params key -> distribution), not a section of fields.
        if isinstance(value, dict) and prefix + key != "search.space":
            keys |= yaml_keys(value, f"{prefix}{key}.")
    return keys


def dataclass_keys(cls: type, prefix: str = "") -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        keys.add(prefix + field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            keys |= dataclass_keys(hints[field.name], f"{prefix}{field.name}.")
    return keys


def test_every_dataclass_field_is_written_in_params_yaml():
    # DVC tracks only the values present in params.yaml: a field left out would change silently.
    written = yaml_keys(yaml.safe_load(REPO_PARAMS.read_text(encoding="utf-8")))
    sections = {**SECTIONS, **params_classes()}
    typed = {key for name, kind in sections.items()
             for key in {name} | dataclass_keys(kind, f"{name}.")}
    assert typed - written == set()
    assert written - typed == set()


def test_model_sections_are_typed_by_the_registry():
    params = parse_params({"cnn": {"filters": 64}}, models=params_classes())
    assert params.model("cnn").filters == 64
    assert params.model("mlp") == params_classes()["mlp"]()  # absent: the defaults
    with pytest.raises(MeliError, match=r"^params.yaml: cnn.filters must be >= 1, got int 0$"):
        parse_params({"cnn": {"filters": 0}}, models=params_classes())
    with pytest.raises(MeliError, match=r"unknown key 'cnn.filtres' \(did you mean 'cnn.filters'"):
        parse_params({"cnn": {"filtres": 64}}, models=params_classes())


def test_without_the_registry_model_sections_are_left_to_the_stages_that_build_models():
    params = parse_params({"cnn": {"filters": 0}, "data": {"sample_rows": 500}})
    assert params.models == {}
    assert params.data.sample_rows == 500
    with pytest.raises(MeliError, match="no section for model 'cnn'"):
        params.model("cnn")


@pytest.mark.parametrize("models", [None, params_classes()], ids=["stage", "registry"])
def test_a_misspelled_section_is_caught_with_or_without_the_registry(models):
    with pytest.raises(MeliError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        parse_params({"trian": {"epochs": 3}}, models=models)


def test_an_unknown_section_is_caught_by_the_stages_that_know_every_model():
    with pytest.raises(MeliError, match=r"unknown key 'transformer'$"):
        parse_params({"transformer": {"layers": 2}}, models=params_classes())


def test_empty_file_gives_defaults(tmp_path):
    assert load_text(tmp_path, "# nothing set\n") == Params()


def test_values_are_read_and_converted(tmp_path):
    params = load_text(tmp_path, "prepare:\n  validation_fraction: 0.2\n  min_examples: 3\n"
                                 "  text:\n    digits: keep\nembeddings:\n  learning_rate: 1\n")
    assert params.prepare.validation_fraction == 0.2
    assert params.prepare.min_examples == 3
    assert params.prepare.text == TextParams(digits="keep")
    # An integer where a float is expected is accepted and becomes a float.
    assert params.embeddings.learning_rate == 1.0
    assert isinstance(params.embeddings.learning_rate, float)
    assert params.featurize == Params().featurize


def test_unknown_key_suggests_the_close_one():
    message = error_of({"data": {"sorce": "sample"}})
    assert "unknown key 'data.sorce'" in message
    assert "did you mean 'data.source'?" in message


def test_unknown_section():
    message = error_of({"featurise": {}})
    assert "unknown key 'featurise'" in message
    assert "did you mean 'featurize'?" in message


def test_misspelled_nested_key():
    message = error_of({"prepare": {"text": {"digitz": "zero"}}})
    assert "unknown key 'prepare.text.digitz'" in message
    assert "did you mean 'prepare.text.digits'?" in message


def test_unknown_key_without_a_close_match_has_no_suggestion():
    message = error_of({"featurize": {"xyzzy": 1}})
    assert "unknown key 'featurize.xyzzy'" in message
    assert "did you mean" not in message


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ({"data": {"sample_rows": "12k"}}, "data.sample_rows", "must be an integer, got str '12k'"),
        ({"featurize": {"max_length": True}}, "featurize.max_length", "must be an integer"),
        ({"featurize": {"max_size": 50.5}}, "featurize.max_size", "must be an integer"),
        ({"prepare": {"keep_source_split": "yes"}}, "prepare.keep_source_split",
         "must be true or false"),
        ({"prepare": {"test_fraction": "0.1"}}, "prepare.test_fraction", "must be a number"),
        ({"prepare": {"test_fraction": float("nan")}}, "prepare.test_fraction",
         "must be a number"),
        ({"prepare": {"languages": "spanish"}}, "prepare.languages", "must be a list"),
        ({"prepare": {"languages": []}}, "prepare.languages", "at least 1 item"),
        ({"prepare": {"languages": ["spanish", 3]}}, "prepare.languages[1]",
         "must be a non-empty string"),
        ({"data": {"source": ""}}, "data.source", "must be a non-empty string"),
        ({"embeddings": {"pretrained": 12}}, "embeddings.pretrained",
         "must be a non-empty string"),
        ({"prepare": {"text": "lowercase"}}, "prepare.text", "must be a mapping"),
        ({"data": None}, "data", "must be a mapping"),
    ],
)
def test_wrong_type(raw, key, expected):
    message = error_of(raw)
    assert f"{key} " in message
    assert expected in message


def test_bool_is_not_an_int_even_though_python_says_so():
    # isinstance(True, int) is True in Python; `dim: yes` must not become dim=1.
    message = error_of({"embeddings": {"dim": True}})
    assert "embeddings.dim must be an integer, got bool True" in message


@pytest.mark.parametrize(
    ("raw", "key", "bound"),
    [
        ({"prepare": {"min_examples": 0}}, "prepare.min_examples", ">= 2"),
        ({"prepare": {"validation_fraction": 0.7}}, "prepare.validation_fraction", "<= 0.5"),
        # The fractions' lower bound is exclusive: an empty validation set is not allowed.
        ({"prepare": {"validation_fraction": 0}}, "prepare.validation_fraction", "> 0.0"),
        ({"featurize": {"max_length": 513}}, "featurize.max_length", "<= 512"),
        ({"data": {"sample_rows": 99}}, "data.sample_rows", ">= 100"),
        ({"embeddings": {"learning_rate": 5.0}}, "embeddings.learning_rate", "<= 1.0"),
    ],
)
def test_out_of_range(raw, key, bound):
    message = error_of(raw)
    assert f"{key} must be {bound}" in message


def test_bad_literal_lists_the_choices():
    message = error_of({"prepare": {"text": {"digits": "ones"}}})
    assert "prepare.text.digits must be one of 'keep', 'zero', 'drop', got str 'ones'" in message
    assert "'skipgram', 'cbow'" in error_of({"embeddings": {"model": "sg"}})


def test_min_ngram_above_max_ngram():
    message = error_of({"embeddings": {"min_ngram": 7, "max_ngram": 6}})
    assert "embeddings.min_ngram (7) must not exceed max_ngram (6)" in message


def test_ngrams_off_needs_both_zero():
    assert "max_ngram must be 0" in error_of({"embeddings": {"min_ngram": 0, "max_ngram": 4}})
    assert parse_params({"embeddings": {"min_ngram": 0, "max_ngram": 0}}).embeddings.max_ngram == 0


def test_fractions_must_leave_room_for_training():
    message = error_of({"prepare": {"validation_fraction": 0.45, "test_fraction": 0.45}})
    assert "leave at least 10% for training" in message


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(MeliError) as caught:
        load_text(tmp_path, "data:\n  source: sample\n  sample_rows: 12: 3\n")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'params.yaml'}: line 3: ")
    assert "mapping values are not allowed here" in message


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(MeliError, match="the top level must be a mapping"):
        load_text(tmp_path, "- data\n- prepare\n")


def test_missing_params_file(tmp_path):
    with pytest.raises(MeliError, match="no such params file"):
        load_params(tmp_path / "params.yaml")


def test_params_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"data:\n  source: caf\xe9\n")
    with pytest.raises(MeliError, match="not valid UTF-8"):
        load_params(path)


def test_defaults_are_valid_and_lists_are_not_shared():
    # Each instance gets its own default list (a shared one would leak between instances).
    first, second = PrepareParams(), PrepareParams()
    assert first.languages == second.languages
    assert first.languages is not second.languages
    assert EmbeddingsParams().problem() is None
    assert PrepareParams().problem() is None


def test_to_dict_round_trips():
    params = parse_params({"prepare": {"languages": ["spanish"], "text": {"digits": "drop"}},
                           "mlp": {"hidden_sizes": [8, 4]}}, models=params_classes())
    plain = to_dict(params)
    assert plain["mlp"]["hidden_sizes"] == [8, 4]  # model sections at the top, as in the file
    assert parse_params(plain, models=params_classes()) == params



def _drift_from_schema(shipped: dict) -> list[str]:
    """Every key whose value in a params.yaml-shaped mapping differs from the schema's default,
    or that only one of them has."""
    from meli.params import SECTIONS

    sections = {**SECTIONS, **params_classes()}
    drift = [f"{name}: only in {'params.yaml' if name in shipped else 'the schema'}"
             for name in set(shipped) ^ set(sections)]
    for name in set(shipped) & set(sections):
        default = to_dict(sections[name]())
        drift += [f"{name}.{key}: params.yaml {shipped[name].get(key)!r}, schema "
                  f"{default.get(key)!r}"
                  for key in sorted(set(default) | set(shipped[name]))
                  if shipped[name].get(key, KeyError) != default.get(key, KeyError)]
    return sorted(drift)


def _committed_params() -> dict:
    """params.yaml as the last commit has it: `dvc exp apply` and `-S` change the workspace's
    copy on purpose, and those values are not the schema's defaults."""
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=REPO_PARAMS.parent,
                           capture_output=True, text=True)
    return yaml.safe_load(shown.stdout if shown.returncode == 0 else REPO_PARAMS.read_text())


def test_every_default_in_params_yaml_is_the_schema_default():
    """params.yaml and the dataclasses both spell every default: they must say the same, or a
    key deleted from params.yaml would silently change a run."""
    assert _drift_from_schema(_committed_params()) == []


def test_a_default_that_drifts_from_the_schema_is_named():
    shipped = _committed_params()
    shipped["train"]["learning_rate"] = 0.01
    del shipped["cnn"]["dropout"]
    assert _drift_from_schema(shipped) == ["cnn.dropout: params.yaml None, schema 0.3",
                                           "train.learning_rate: params.yaml 0.01, schema 0.004"]
