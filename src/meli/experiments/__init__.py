"""Experiments beyond one `dvc repro`: random search through the DVC queue, the leaderboard that
ranks its trials, and a `dvc pull` that checks out only intact objects.

- `space`: the grammar of `search.space` (distributions, validation against the params, draws);
- `commands`: the git and DVC subprocess helpers the other modules share;
- `search`: draws trials from the space and queues them (`meli search`);
- `leaderboard`: ranks experiments by validation balanced accuracy (`meli leaderboard`);
- `remote`: `meli pull`.
"""
