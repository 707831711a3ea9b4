"""Model bundles: the self-contained directories `models/<name>/` that train, the baseline and the
ensemble write, loaded and scored the same way by evaluate, `meli predict` and `meli serve`.

- `bundle`: the files of a bundle, writing them atomically and reading them back checked;
- `classifier`: the `Classifier` interface (probabilities, predict in chunks, top-k);
- `pytorch`, `fasttext`, `ensemble`: the classifier of each kind of bundle;
- `load`: `load_classifier`, which opens any bundle as its kind's classifier;
- `predict`: `meli predict`'s streaming input and CSV output;
- `explain`: why a bundle chose a category, word by word (`meli explain`);
- `confusions`: the most confused category pairs and the words that drove them;
- `metrics`: balanced accuracy and the other figures bundles are judged by;
- `registry`: the bundles as DVC artifacts in dvc.yaml (`meli registry`).
"""
