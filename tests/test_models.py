"""models: the MLP, the CNN and the RNN on hand-made token rows (0 = padding), without data."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

import meli
from meli.layout import PAD
from meli.models import build_model
from meli.models.cnn import CNNClassifier
from meli.models.mlp import MLPClassifier
from meli.models.rnn import RNNClassifier
from meli.params import TrainParams
from meli.training.optimization import make_optimizer

VOCABULARY, DIM, CLASSES = 30, 8, 5


def vectors(seed: int = 0) -> torch.Tensor:
    """Random word vectors, the padding row included: models must not rely on it being zero."""
    return torch.randn(VOCABULARY, DIM, generator=torch.Generator().manual_seed(seed))


def mlp(**settings) -> MLPClassifier:
    torch.manual_seed(1)
    return MLPClassifier(vectors(), CLASSES, **({"hidden_sizes": [16]} | settings))


def cnn(**settings) -> CNNClassifier:
    torch.manual_seed(1)
    return CNNClassifier(vectors(), CLASSES, **({"filters": 6, "kernel_sizes": [1, 2, 5]}
                                                | settings))


def rnn(**settings) -> RNNClassifier:
    torch.manual_seed(1)
    return RNNClassifier(vectors(), CLASSES, **({"cell": "gru", "hidden_size": 6} | settings))


def padded(titles: list[list[int]], width: int) -> torch.Tensor:
    """Token-id rows of `titles`, zero-padded on the right to `width` columns."""
    return torch.tensor([title + [PAD] * (width - len(title)) for title in titles])


TITLES = [[3], [4, 5], [6, 7, 8], [9, 10, 11, 12, 13], [2, 14, 15, 16, 17, 18, 19]]


@pytest.mark.parametrize("make", [mlp, cnn, rnn], ids=["mlp", "cnn", "rnn"])
def test_output_is_one_score_per_class_for_each_row(make):
    model = make().eval()
    scores = model(padded(TITLES, 9))
    assert scores.shape == (len(TITLES), CLASSES)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize(("architecture", "config", "kind"), [
    ("mlp", {"hidden_sizes": [4], "activation": "gelu"}, MLPClassifier),
    ("cnn", {"filters": 3, "kernel_sizes": [2]}, CNNClassifier),
    ("rnn", {"cell": "lstm", "hidden_size": 3, "layers": 2, "pooling": "mean"}, RNNClassifier),
])
def test_build_model_builds_the_named_architecture(architecture, config, kind):
    model = build_model(architecture, config, vectors(), CLASSES)
    assert isinstance(model, kind)
    assert model.eval()(padded(TITLES, 9)).shape == (len(TITLES), CLASSES)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="transformer"):
        build_model("transformer", {}, vectors(), CLASSES)


def test_mlp_output_ignores_padding_and_the_padding_vector():
    model = mlp().eval()
    with torch.no_grad():
        reference = model(padded(TITLES, 7))
        wider = model(padded(TITLES, 16))
        model.embedding.weight[PAD] = torch.full((DIM,), 50.0)
        other_padding_vector = model(padded(TITLES, 7))
    torch.testing.assert_close(wider, reference)
    torch.testing.assert_close(other_padding_vector, reference)


def test_mlp_mean_is_over_the_real_tokens_only():
    model = mlp(hidden_sizes=[]).eval()
    title = [4, 9, 9, 21]
    with torch.no_grad():
        scores = model(padded([title], 10))[0]
        mean = model.embedding.weight[title].mean(dim=0)
        expected = model.output(mean)
        # The same title averaged with its padding positions gives something else.
        diluted = model.output(model.embedding.weight[padded([title], 10)[0]].mean(dim=0))
    torch.testing.assert_close(scores, expected)
    assert not torch.allclose(scores, diluted)


def test_cnn_handles_titles_shorter_than_the_widest_kernel():
    model = cnn(kernel_sizes=[1, 2, 5]).eval()
    with torch.no_grad():
        one_column = model(torch.tensor([[7], [12]]))  # narrower than the 5-wide kernel
        wide = model(padded([[7], [12]], 12))
        two_columns = model(torch.tensor([[7, 8]]))
        two_padded = model(padded([[7, 8]], 12))
    assert one_column.shape == (2, CLASSES)
    assert torch.isfinite(one_column).all()
    torch.testing.assert_close(one_column, wide)
    torch.testing.assert_close(two_columns, two_padded)
    assert not torch.allclose(one_column[0], one_column[1])


def test_cnn_output_does_not_depend_on_padding_beyond_the_title():
    model = cnn(kernel_sizes=[1, 2, 3]).eval()
    with torch.no_grad():
        tight = model(padded(TITLES, max(map(len, TITLES))))
        loose = model(padded(TITLES, 24))
        # Each title alone, padded only as far as the widest kernel needs.
        alone = torch.cat([model(padded([title], len(title))) for title in TITLES])
    torch.testing.assert_close(loose, tight)
    torch.testing.assert_close(alone, tight)


def test_cnn_output_changes_with_a_real_token():
    model = cnn().eval()
    with torch.no_grad():
        scores = model(padded([[3, 4, 5], [3, 4, 6]], 8))
    assert not torch.allclose(scores[0], scores[1])


@pytest.mark.parametrize("make", [mlp, cnn, rnn], ids=["mlp", "cnn", "rnn"])
def test_dropout_is_active_only_in_train_mode(make):
    model = make(dropout=0.5)
    tokens = padded(TITLES, 8)
    model.train()
    assert not torch.allclose(model(tokens), model(tokens))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), model(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("make", [mlp, cnn, rnn], ids=["mlp", "cnn", "rnn"])
@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_embeddings_keeps_the_vectors_through_an_optimizer_step(make, freeze):
    model = make(freeze_embeddings=freeze)
    before = model.embedding.weight.detach().clone()
    others = {name: p.detach().clone() for name, p in model.named_parameters()
              if not name.startswith("embedding.")}
    optimizer = make_optimizer(model, TrainParams(learning_rate=0.05))
    loss = torch.nn.functional.cross_entropy(model(padded(TITLES, 8)),
                                             torch.arange(len(TITLES)) % CLASSES)
    loss.backward()
    optimizer.step()
    after = model.embedding.weight.detach()
    used = sorted({token for title in TITLES for token in title})
    if freeze:
        assert not model.embedding.weight.requires_grad
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    else:
        assert not torch.equal(after[used], before[used])
    # Padding never learns, and the rest of the model learns either way.
    torch.testing.assert_close(after[PAD], before[PAD], rtol=0, atol=0)
    assert all(not torch.equal(p.detach(), others[name])
               for name, p in model.named_parameters() if name in others)


@pytest.mark.parametrize("make", [mlp, cnn, rnn], ids=["mlp", "cnn", "rnn"])
def test_embedding_starts_from_the_given_matrix_and_leaves_it_alone(make):
    given = vectors()
    model = {mlp: lambda: MLPClassifier(given, CLASSES, [4]),
             cnn: lambda: CNNClassifier(given, CLASSES, 4, [1, 2]),
             rnn: lambda: RNNClassifier(given, CLASSES, "lstm", 4)}[make]()
    torch.testing.assert_close(model.embedding.weight.detach(), vectors(), rtol=0, atol=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(padded(TITLES, 8)).sum().backward()
    optimizer.step()
    # Fine-tuning changes the model's copy, never the caller's matrix.
    assert not torch.equal(model.embedding.weight.detach(), given)
    torch.testing.assert_close(given, vectors(), rtol=0, atol=0)


def test_torch_load_is_always_called_with_weights_only():
    """Loading a pickle runs code: every torch.load in the package must pass weights_only=True."""
    uses, safe = [], []
    for path in sorted(Path(meli.__file__).parent.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"from\s+torch(\.serialization)?\s+import\s+[^\n]*\bload\b",
                             source), f"{path.name}: torch's load imported under another name"
        tree = ast.parse(source)
        for node in ast.walk(tree):
            # Every mention of torch.load (a call, or an alias that a call would hide behind).
            if (isinstance(node, ast.Attribute) and node.attr == "load"
                    and isinstance(node.value, ast.Name) and node.value.id == "torch"):
                uses.append((path.name, node.lineno))
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                    and any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                            and k.value.value is True for k in node.keywords)):
                safe.append((path.name, node.lineno))
    assert uses, "no torch.load found: the test no longer sees the bundle loader"
    assert sorted(uses) == sorted(safe), f"without weights_only=True: {set(uses) - set(safe)}"


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("pooling", ["max", "mean", "max_mean"])
def test_rnn_output_ignores_padding_and_the_padding_vector(cell, pooling):
    model = rnn(cell=cell, pooling=pooling, layers=2).eval()
    with torch.no_grad():
        reference = model(padded(TITLES, 7))
        wider = model(padded(TITLES, 16))
        model.embedding.weight[PAD] = torch.full((DIM,), 50.0)
        other_padding_vector = model(padded(TITLES, 7))
        # Each title alone, unpadded, as in a batch of one.
        alone = torch.cat([model(torch.tensor([title])) for title in TITLES])
    torch.testing.assert_close(wider, reference)
    torch.testing.assert_close(other_padding_vector, reference)
    torch.testing.assert_close(alone, reference)


def test_rnn_reads_word_order_both_ways():
    model = rnn(pooling="max_mean").eval()
    with torch.no_grad():
        forward, backward = model(padded([[3, 4, 5], [5, 4, 3]], 4))
    assert not torch.allclose(forward, backward)
