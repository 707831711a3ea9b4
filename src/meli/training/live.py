"""The dvclive log of a training, written by rank 0 alone: the params, one step per epoch, and at
the end a summary of the best epoch that `dvc exp show` compares.

What the log holds is what the params, code and data make: the same bytes from the same inputs
(the DVC outputs and git-tracked files of results/train/<model>/). The wall-clock time of each
epoch, which differs run to run, goes to the log line and to EPOCH_SECONDS_FILE beside the log,
which git ignores and no DVC output holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meli.training.state import EpochResult, TrainingState

EPOCH_SECONDS_FILE = "epoch_seconds.tsv"  # step, epoch_seconds: dvclive's own layout


class TrainingLog:
    """One training's dvclive log in `directory`; `resumed`: the state of a resumed run, whose
    log goes on from its last step."""

    def __init__(self, directory: Path, params: dict[str, Any], resumed: TrainingState | None):
        from dvclive import Live

        self.directory = directory
        self.timings = directory / EPOCH_SECONDS_FILE
        if resumed is not None:
            _restore_files(directory, resumed.live_files)
        else:
            self.timings.unlink(missing_ok=True)
        self.live = Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False,
                         resume=resumed is not None)
        if resumed is not None:
            self.live.step = resumed.live_step
        self.live.log_params(params)

    @property
    def step(self) -> int:
        return self.live.step

    def epoch(self, result: EpochResult) -> None:
        self.live.log_metric("train/loss", result.train_loss)
        self.live.log_metric("validation/loss", result.validation_loss)
        self.live.log_metric("validation/balanced_accuracy", result.validation_balanced_accuracy)
        self.live.log_metric("validation/accuracy", result.validation_accuracy)
        self.live.log_metric("learning_rate", result.learning_rate)
        new = not self.timings.exists()
        with self.timings.open("a", encoding="utf-8") as timings:
            if new:
                timings.write("step\tepoch_seconds\n")
            timings.write(f"{self.live.step}\t{result.seconds}\n")
        self.live.next_step()

    def files(self) -> dict[str, str]:
        """The log as text, to be put back on resume (DVC deletes it before a rerun)."""
        if not self.directory.exists():
            return {}
        return {str(path.relative_to(self.directory)): path.read_text(encoding="utf-8")
                for path in sorted(self.directory.rglob("*")) if path.is_file()}

    def end(self, state: TrainingState) -> None:
        """The summary: the best epoch's figures."""
        assert state.best is not None
        self.live.summary["best"] = {
            "epoch": state.best_epoch,
            "validation_balanced_accuracy": state.best.validation_balanced_accuracy,
            "validation_accuracy": state.best.validation_accuracy,
            "validation_loss": state.best.validation_loss,
        }
        self.live.end()


def _restore_files(directory: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
