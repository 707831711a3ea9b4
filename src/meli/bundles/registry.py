"""`meli registry`: the model bundles as DVC artifacts, with the facts a user chooses them by.

Every bundle is declared in the `artifacts:` section of dvc.yaml (`type: model`), so that
`dvc artifacts get <repository> <name>` fetches it from the DVC remote without a clone, and GTO's
Git tags (`gto register <name>`, `gto assign <name> --stage prod`) give it versions and stages
that `dvc artifacts get --rev/--stage` pick. Each artifact's `meta` says what the bundle is: its
architecture, the data it was trained on, and its validation and test balanced accuracy. Those
figures come from the pipeline's own metrics files; `meli registry --update` writes them into
dvc.yaml (after `dvc repro`, before committing), and a test fails when they disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from meli.errors import MeliError
from meli.layout import PARAMS_FILE, bundle_dir, model_metrics_path, train_results_dir

DVC_YAML = Path("dvc.yaml")
FASTTEXT = "fasttext"
LINEAR = "linear"
ENSEMBLE = "ensemble"
LABELS = ["meli-2019", "product-titles", "text-classification"]


def models() -> list[str]:
    """Every model that has a bundle: the registry's PyTorch models, the fastText baseline, the
    TF-IDF linear model and the ensemble."""
    from meli.models import names

    return [*names(), FASTTEXT, LINEAR, ENSEMBLE]


def _describe(name: str) -> tuple[str, str]:
    """(architecture, one-line description) of a model."""
    from meli.models import ARCHITECTURES

    if name == ENSEMBLE:
        return ("weighted average of the other bundles' probabilities",
                "Ensemble of the models, weights chosen on validation")
    if name == FASTTEXT:
        return ("fastText supervised (linear over averaged word vectors)",
                "fastText supervised classifier")
    if name == LINEAR:
        return ("TF-IDF word and character n-grams, SVM and/or softmax regression heads "
                "calibrated on validation",
                "TF-IDF + linear model, the field's first baseline")
    summary = ARCHITECTURES[name].summary
    return (f"{name}: {summary}", f"PyTorch {name.upper()} over fine-tuned fastText vectors")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise MeliError(f"{path}: not valid JSON: {error}") from None


def _data_description(params: dict[str, Any]) -> str:
    data = params.get("data") or {}
    source = data.get("source", "sample")
    if source == "sample":
        return (f"synthetic sample ({data.get('sample_rows', 12000)} titles, seed "
                f"{data.get('sample_seed', 2019)})")
    return str(source)


def artifact_entry(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The dvc.yaml artifact of one model, its meta read from the metrics files."""
    architecture, description = _describe(name)
    meta: dict[str, Any] = {"architecture": architecture,
                            "trained_on": _data_description(params)}
    training = _read_json(train_results_dir(name) / "metrics.json") or {}
    validation = (training.get("best") or {}).get("validation_balanced_accuracy")
    test = ((_read_json(model_metrics_path(name)) or {}).get("test") or {}).get(
        "balanced_accuracy")
    if validation is not None:
        meta["validation_balanced_accuracy"] = round(float(validation), 4)
    if test is not None:
        meta["test_balanced_accuracy"] = round(float(test), 4)
    meta["metrics"] = str(model_metrics_path(name))
    framework = {FASTTEXT: "fasttext", LINEAR: "scikit-learn", ENSEMBLE: "ensemble"}.get(
        name, "pytorch")
    return {"path": str(bundle_dir(name)), "type": "model", "desc": description,
            "labels": list(dict.fromkeys([framework, name, *LABELS])), "meta": meta}


def update(dvc_yaml: Path = DVC_YAML, params_file: Path = Path(PARAMS_FILE)) -> list[str]:
    """Rewrite the `artifacts:` section of dvc.yaml from the current metrics; the names.

    The section is the file's last: everything from its `artifacts:` line on is replaced, and
    the stages above are left exactly as written.
    """
    import yaml

    if not dvc_yaml.exists():
        raise MeliError(f"{dvc_yaml}: not found; run from the repository root")
    params = yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}
    names = models()
    section = yaml.safe_dump(
        {"artifacts": {name: artifact_entry(name, params) for name in names}},
        sort_keys=False, allow_unicode=True, width=100, indent=2)
    # PyYAML writes block lists flush with their key; indent them as the rest of the file.
    section = "\n".join(_indent_lists(section.splitlines())) + "\n"
    text = dvc_yaml.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip() == "artifacts:"]
    kept = "".join(lines[:starts[0]]) if starts else text.rstrip() + "\n\n"
    if starts and any(line.strip() and not line.startswith((" ", "#"))
                      for line in lines[starts[0] + 1:]):
        raise MeliError(f"{dvc_yaml}: the artifacts section must come last in the file")
    dvc_yaml.write_text(kept + section, encoding="utf-8")
    return names


def _indent_lists(lines: list[str]) -> list[str]:
    return ["  " + line if line.lstrip(" ").startswith("- ") else line for line in lines]


def show(dvc_yaml: Path = DVC_YAML) -> str:
    """A table of the artifacts declared in dvc.yaml."""
    import yaml

    declared = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("artifacts")
    if not declared:
        raise MeliError(f"{dvc_yaml}: no artifacts declared; run `meli registry --update`")
    rows = [("artifact", "path", "validation", "test", "trained on")]
    for name, entry in declared.items():
        meta = entry.get("meta") or {}
        rows.append((name, entry.get("path", "?"),
                     str(meta.get("validation_balanced_accuracy", "-")),
                     str(meta.get("test_balanced_accuracy", "-")),
                     str(meta.get("trained_on", "-"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                        strict=True)).rstrip()
                     for row in rows)
