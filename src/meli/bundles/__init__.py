"""Model bundles: the self-contained directories `models/<name>/` that train, the baseline and the
ensemble write, loaded and scored the same way by evaluate, `meli predict` and `meli serve`.

- `bundle`: the files of a bundle, writing them atomically and reading them back checked;
- `classifier`: the `Classifier` interface (probabilities, predict in chunks, top-k);
- `pytorch`, `fasttext`, `ensemble`: the classifier of each kind of bundle;
- `load`: `load_classifier`, which opens any bundle as its kind's classifier;
- `calibration`: what a bundle knows of its own confidence and its prediction sets, measured
  on validation titles by the stage that writes it, and carried inside it;
- `conformal`: split conformal prediction sets (marginal or per category) from that;
- `confidence`: calibration error, reliability and risk-coverage figures;
- `answers`: what `meli predict` and `meli serve` answer: the top k, and with the knobs the set
  of a coverage and whether to abstain;
- `predict`: `meli predict`'s streaming input and CSV output;
- `explain`: why a bundle chose a category, word by word (`meli explain`);
- `confusions`: the most confused category pairs and the words that drove them;
- `metrics`: balanced accuracy and the other figures bundles are judged by;
- `registry`: the bundles as DVC artifacts in dvc.yaml (`meli registry`).
"""
