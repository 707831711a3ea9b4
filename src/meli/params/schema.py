"""The schema of params.yaml: one typed, frozen dataclass per section, with its defaults and
ranges (`param(default, min=..., max=...)`).

Each stage reads only its own section (`params.prepare`, `params.embeddings`, ...); a model's own
section (`cnn:`, ...) is typed in its file under `meli.models`. The defaults here are the values
params.yaml ships with (tests/test_params.py checks that the two agree).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from meli.errors import MeliError


def param(default: Any, *, min: float | None = None, max: float | None = None,
          min_exclusive: bool = False, min_items: int | None = None) -> Any:
    """A dataclass field with bounds checked when params are loaded."""
    metadata = {"min": min, "max": max, "min_exclusive": min_exclusive, "min_items": min_items}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: typing.cast(Any, default).copy(), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DataParams:
    # "sample" (the synthetic set generated offline), a local file or directory, or a URL.
    source: str = "sample"
    sample_rows: int = param(12_000, min=100)
    sample_seed: int = 2019
    # Longer titles are rejected as broken rows: real MeLi titles are at most a few hundred chars.
    max_title_chars: int = param(1_000, min=10)


@dataclass(frozen=True)
class TextParams:
    lowercase: bool = True
    fold_accents: bool = True
    # keep: "32gb" stays; zero: every digit becomes 0 ("00gb"), so sizes share tokens; drop.
    digits: Literal["keep", "zero", "drop"] = "zero"
    # split: punctuation becomes its own token; drop: it becomes a space; keep: left in words.
    punctuation: Literal["split", "drop", "keep"] = "drop"


@dataclass(frozen=True)
class PrepareParams:
    languages: list[str] = param(["spanish", "portuguese"], min_items=1)
    label_quality: list[str] = param(["reliable", "unreliable"], min_items=1)
    min_examples: int = param(10, min=2)
    keep_source_split: bool = True
    validation_fraction: float = param(0.1, min=0.0, max=0.5, min_exclusive=True)
    test_fraction: float = param(0.1, min=0.0, max=0.5, min_exclusive=True)
    seed: int = 42
    text: TextParams = field(default_factory=TextParams)

    def problem(self) -> str | None:
        if self.validation_fraction + self.test_fraction >= 0.9:
            return "validation_fraction + test_fraction must leave at least 10% for training"
        return None


@dataclass(frozen=True)
class FeaturizeParams:
    min_count: int = param(1, min=1)
    max_size: int = param(50_000, min=10)
    max_length: int = param(24, min=1, max=512)


@dataclass(frozen=True)
class EmbeddingsParams:
    model: Literal["skipgram", "cbow"] = "skipgram"
    dim: int = param(100, min=2, max=1024)
    epochs: int = param(10, min=1, max=1000)
    learning_rate: float = param(0.05, min=0.0, max=1.0, min_exclusive=True)
    window: int = param(5, min=1, max=50)
    min_count: int = param(1, min=1)
    # Character n-gram lengths give vectors to rare and misspelled words; 0/0 turns them off.
    min_ngram: int = param(3, min=0, max=20)
    max_ngram: int = param(6, min=0, max=20)
    # Hash buckets for the n-grams: the fastText default (2M) makes an 800 MB model at dim 100.
    buckets: int = param(200_000, min=1_000)
    seed: int = 0
    # fastText is only reproducible with one thread (its threads update the vectors unlocked);
    # "auto" uses every core this process may run on (for the full data: see the README).
    threads: int | Literal["auto"] = param(1, min=1, max=256)
    # Path to a word2vec-format .vec(.gz) file to use instead of training (e.g. SBW vectors).
    pretrained: str | None = None

    def problem(self) -> str | None:
        if self.min_ngram > self.max_ngram:
            return f"min_ngram ({self.min_ngram}) must not exceed max_ngram ({self.max_ngram})"
        if self.min_ngram == 0 and self.max_ngram != 0:
            return "min_ngram is 0 (n-grams off), so max_ngram must be 0 too"
        return None


@dataclass(frozen=True)
class TrainParams:
    """Shared by every PyTorch model (train@mlp, train@cnn, ...); each model's own settings
    are its section, typed in its file under meli/models/."""

    epochs: int = param(10, min=1, max=1000)
    batch_size: int = param(128, min=1, max=65_536)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    learning_rate: float = param(0.004, min=0.0, max=10.0, min_exclusive=True)
    # onecycle: linear warm-up then cosine decay to zero; cosine: decay only; constant.
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup_fraction: float = param(0.1, min=0.0, max=0.5)
    weight_decay: float = param(0.0, min=0.0, max=1.0)
    label_smoothing: float = param(0.1, min=0.0, max=0.5)
    # balanced: loss weights 1/frequency; sqrt: 1/sqrt(frequency); none.
    class_weighting: Literal["none", "balanced", "sqrt"] = "none"
    # Epochs without a better validation balanced accuracy before training stops.
    patience: int = param(4, min=1)
    freeze_embeddings: bool = False
    seed: int = 42
    # Threads per process. With one process on a CPU, results are bit-identical run to run.
    threads: int = param(2, min=1, max=256)
    # auto: CUDA when PyTorch sees a GPU, else the CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on CUDA and on a CPU with native bf16 (AVX-512 BF16, AMX), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # CUDA kernels that give the same result every run (slower); a CPU is always deterministic.
    cuda_deterministic: bool = False
    # Processes per machine, and machines: above 1 in all, training runs under torch.distributed
    # (gloo on CPU, NCCL on CUDA); batch_size stays the global batch.
    processes: int = param(1, min=1, max=1024)
    nodes: int = param(1, min=1, max=4096)
    # Where the machines of a multi-machine run meet (the machine of --node-rank 0).
    master_address: str = "127.0.0.1"
    master_port: int = param(29500, min=1, max=65535)
    # Processes that read batches ahead (0: the training process reads them; more keep a GPU
    # busy). Changes no result.
    loader_workers: int = param(0, min=0, max=64)


@dataclass(frozen=True)
class BaselineParams:
    """fastText's supervised classifier, the reference the PyTorch models must beat."""

    epochs: int = param(30, min=1, max=1000)
    learning_rate: float = param(0.5, min=0.0, max=5.0, min_exclusive=True)
    dim: int = param(100, min=2, max=1024)
    word_ngrams: int = param(1, min=1, max=5)
    min_ngram: int = param(0, min=0, max=20)
    max_ngram: int = param(0, min=0, max=20)
    min_count: int = param(1, min=1)
    buckets: int = param(500_000, min=1_000)
    loss: Literal["softmax", "ns", "hs", "ova"] = "softmax"
    seed: int = 0
    # One thread is bit-reproducible; "auto" uses every core (see embeddings.threads).
    threads: int | Literal["auto"] = param(1, min=1, max=256)

    def problem(self) -> str | None:
        if self.min_ngram > self.max_ngram:
            return f"min_ngram ({self.min_ngram}) must not exceed max_ngram ({self.max_ngram})"
        return None


@dataclass(frozen=True)
class LinearParams:
    """The linear stage: TF-IDF word and character n-grams, and a linear classifier over them
    (see meli.training.linear for the estimators, meli.data.tfidf for the features)."""

    # [min, max] words per word n-gram and bytes per in-word character n-gram; [0, 0]: none.
    word_ngrams: list[int] = param([1, 2])
    char_ngrams: list[int] = param([2, 5])
    # Training titles an n-gram must occur in to be kept, and the most frequent kept (null: all).
    # The caps bound the weights (features x categories x 4 bytes: 3.2 GB for 632 categories)
    # on millions of titles; the real sample keeps about 155,000 word and 66,000 character
    # n-grams, below them.
    word_min_df: int = param(1, min=1)
    char_min_df: int = param(2, min=1)
    max_word_features: int | None = param(1_000_000, min=1)
    max_char_features: int | None = param(250_000, min=1)
    sublinear_tf: bool = True  # 1 + log(tf) instead of tf
    char_weight: float = param(1.0, min=0.0)  # the character block's weight beside the words'
    # svm: liblinear's one-vs-rest squared hinge, all rows in memory, one core per category (the
    # most accurate alone here); softmax: multinomial logistic regression by streamed
    # mini-batches, for millions of titles; both: the two heads, their probabilities mixed with
    # a share chosen on validation (the losses err on different titles); auto: both up to
    # svm_max_rows training titles, softmax above.
    estimator: Literal["auto", "svm", "softmax", "both"] = "auto"
    svm_max_rows: int = param(300_000, min=0)
    C: float = param(0.5, min=0.0, min_exclusive=True)  # svm: inverse regularization
    class_weight: Literal["none", "balanced"] = "none"
    epochs: int = param(3, min=1, max=1000)  # softmax: passes over the training titles
    # softmax: 0 keeps one weight per (feature, category); above 0 factors them through this
    # many dimensions (fastText's shape): the weights of 1.25M features and 1,600 categories
    # take 0.6 GB instead of 8 GB, and each step is several times faster.
    rank: int = param(128, min=0, max=4096)
    batch_size: int = param(256, min=1)
    learning_rate: float = param(0.3, min=0.0, min_exclusive=True)  # softmax, decays to 0
    seed: int = 0
    # Cores: svm fits the categories side by side (the same weights at any count); softmax's
    # PyTorch threads.
    threads: int = param(2, min=1, max=256)
    # What the bundle keeps of each head (meli.bundles.linear; the README's "A compact linear
    # bundle" measures the choices): of the shares tried, smallest first, the first whose
    # calibrated heads stay within `max_loss` validation balanced accuracy of the heads as
    # fitted; a single share forces it. A sparse head (the svm, the softmax at rank 0) keeps
    # that share of its features x categories weights, the largest in magnitude (liblinear
    # leaves most at exactly 0 already); a factored head (the softmax at rank > 0) the rows of
    # that share of the features, those of largest norm (FastText.zip's pruning).
    max_loss: float = param(0.001, min=0.0, max=1.0)
    keep_weights: list[float] = param([0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 1.0],
                                      min_items=1)
    keep_rows: list[float] = param([0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], min_items=1)
    # int8: a byte per weight and a float32 scale per feature row; float16; float32 (as fitted).
    precision: Literal["int8", "float16", "float32"] = "int8"

    def problem(self) -> str | None:
        for name in ("word_ngrams", "char_ngrams"):
            ends = getattr(self, name)
            if len(ends) != 2 or not 0 <= ends[0] <= ends[1] or (ends[0] == 0) != (ends[1] == 0):
                return f"{name} must be [min, max] with 1 <= min <= max, or [0, 0] (none)"
        if self.char_ngrams[1] > 7:
            return "char_ngrams: at most 7 bytes (an n-gram's bytes are its key)"
        if self.word_ngrams == [0, 0] and self.char_ngrams == [0, 0]:
            return "word_ngrams and char_ngrams are both [0, 0]: no features"
        for name in ("keep_weights", "keep_rows"):
            if not all(isinstance(share, int | float) and 0 < share <= 1
                       for share in getattr(self, name)):
                return f"{name}: shares in (0, 1], as [0.02] or [0.01, 0.02, 1]"
        return None


@dataclass(frozen=True)
class EvaluateParams:
    # The confusion plot shows the categories of this many most-confused (true, predicted) pairs.
    confused_pairs: int = param(15, min=1, max=500)
    # The recall plot shows this many categories of lowest test recall: a bar per category is
    # unreadable by the hundreds (per_class_recall.csv keeps every one).
    worst_categories: int = param(40, min=1, max=2000)
    batch_size: int = param(2048, min=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 autocast on CUDA; on a CPU with native bf16, only for a bundle whose training
    # found that bf16 kept its validation balanced accuracy within 0.001 of float32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Equal-width confidence bins of the expected calibration error and the reliability plot.
    calibration_bins: int = param(15, min=2, max=100)
    # Coverages whose prediction sets (the bundle's calibration) are measured on test.
    set_coverages: list[float] = param([0.9, 0.95], min_items=1)
    # Top-1 accuracies whose coverage (the share of most confident titles) is reported.
    target_accuracies: list[float] = param([0.97, 0.98, 0.99], min_items=1)

    def problem(self) -> str | None:
        for name in ("set_coverages", "target_accuracies"):
            values = getattr(self, name)
            if not all(isinstance(v, int | float) and 0 < v < 1 for v in values):
                return f"{name} must be shares between 0 and 1 (such as 0.95), got {values}"
        return None


@dataclass(frozen=True)
class EnsembleParams:
    """The ensemble stage: which bundles it combines and how it fits their weights."""

    # Registered models and/or fasttext; each needs its bundle in models/<name>.
    members: list[str] = param(["mlp", "cnn", "rnn", "fasttext", "linear"], min_items=1)
    # Fit a temperature per member on validation before weighting.
    temperature: bool = True
    # Greedy selection steps: weights are multiples of 1/rounds.
    rounds: int = param(20, min=1, max=1000)
    # Validation titles the weights are fitted on (a seeded sample when there are more).
    max_rows: int = param(50_000, min=100)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def problem(self) -> str | None:
        if len(set(self.members)) != len(self.members):
            return "members names a model twice"
        return None


# The space `meli search` draws from when params.yaml's search section names none (params.yaml
# ships this same space, written out, as a starting point to edit).
DEFAULT_SPACE: dict[str, Any] = {
    "train.learning_rate": {"loguniform": [0.001, 0.01]},
    "train.label_smoothing": {"uniform": [0.0, 0.2]},
    "train.weight_decay": {"choice": [0.0, 0.00001, 0.0001]},
    "cnn.filters": {"choice": [128, 256, 384, 512]},
    "cnn.kernel_sizes": {"choice": [[1, 2, 3], [1, 2, 3, 4], [2, 3, 4]]},
    "cnn.dropout": {"uniform": [0.1, 0.5]},
    "cnn.word_dropout": {"uniform": [0.0, 0.25]},
    "mlp.hidden_sizes": {"choice": [[256], [512], [1024], [512, 256]]},
    "mlp.dropout": {"uniform": [0.1, 0.5]},
    "rnn.hidden_size": {"choice": [128, 192, 256]},
    "rnn.layers": {"choice": [1, 2]},
    "rnn.dropout": {"uniform": [0.1, 0.5]},
    "rnn.word_dropout": {"uniform": [0.0, 0.25]},
    "linear.C": {"loguniform": [0.1, 2.0]},
    "linear.word_ngrams": {"choice": [[1, 1], [1, 2], [1, 3]]},
    "linear.char_ngrams": {"choice": [[2, 4], [2, 5], [1, 5], [2, 6], [3, 6]]},
    "linear.char_weight": {"uniform": [0.5, 1.5]},
    "linear.class_weight": {"choice": ["none", "balanced"]},
}


@dataclass(frozen=True)
class SearchParams:
    """Hyperparameter search (`meli search`), run through the DVC experiment queue: random, or
    successive halving (see meli.experiments.halving)."""

    # random: every trial trains train.epochs. halving: rung 0 trains every trial min_epochs,
    # each next rung the best 1/eta of the previous one eta times longer, the last train.epochs.
    strategy: Literal["random", "halving"] = "random"
    trials: int = param(12, min=1, max=1000)
    seed: int = 0
    eta: int = param(3, min=2)
    min_epochs: int = param(1, min=1)
    rungs: int = param(3, min=1)
    # Registered model names (see meli.models); checked by `meli search` against the registry.
    models: list[str] = param(["cnn"], min_items=1)
    # params key -> one distribution: {choice: [values]}, {uniform: [low, high]},
    # {loguniform: [low, high]} or {int: [low, high]} (both ends included).
    space: dict[str, Any] = param(DEFAULT_SPACE)


@dataclass(frozen=True)
class Params:
    """The whole params.yaml: one section per pipeline stage, plus one per registered model.

    Model sections (`mlp:`, `cnn:`, ...) are typed by the model registry (`meli.models`), which
    needs PyTorch; the stages that build models pass the registry's classes to `load_params`,
    the others leave those sections to them (a misspelled section name is still caught).
    """

    data: DataParams = field(default_factory=DataParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    featurize: FeaturizeParams = field(default_factory=FeaturizeParams)
    embeddings: EmbeddingsParams = field(default_factory=EmbeddingsParams)
    train: TrainParams = field(default_factory=TrainParams)
    baseline: BaselineParams = field(default_factory=BaselineParams)
    linear: LinearParams = field(default_factory=LinearParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    ensemble: EnsembleParams = field(default_factory=EnsembleParams)
    search: SearchParams = field(default_factory=SearchParams)
    # Model name -> its typed section; empty when loaded without the registry.
    models: dict[str, Any] = field(default_factory=dict)

    def model(self, name: str) -> Any:
        if name not in self.models:
            raise MeliError(f"params: no section for model '{name}' (known: "
                            f"{', '.join(self.models) or 'none loaded'})")
        return self.models[name]


# The sections params.py itself types, in params.yaml's order.
SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Params)  # type: ignore[misc]
                             if f.name != "models"}


