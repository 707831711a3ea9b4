"""Experiments beyond one `dvc repro`: hyperparameter search through the DVC experiment queue,
and the leaderboard that ranks its trials.

- `space`: the grammar of `search.space` (distributions, validation against the params, draws);
- `search`: random search: draws trials from the space, shards them, queues them;
- `halving`: successive halving: rungs of growing budgets, promoting the best 1/eta;
- `names`: trial names, which carry their lineage (`cnn-s0-07-r1`);
- `driver`: what `meli search` does with its options (draw, shard, queue or take a halving step);
- `leaderboard`: ranks experiments by validation balanced accuracy (`meli leaderboard`);
- `git_dvc`: the git and DVC subprocess calls they share (and `meli pull` uses).
"""
