"""Training, one module per concern (the train stage, meli.stages.train, puts them together).

- data: the memory-mapped splits, read in shuffled batches.
- optimization: class weights, the optimizer and the learning-rate schedule.
- loop: seeds, `train_epoch`/`evaluate`, and the epochs with early stopping and checkpoints.
- state: TrainingState, what the epochs change; the one thing a checkpoint saves and restores.
- checkpoint: writing, fingerprinting and reading checkpoints; the lock on a model's outputs.
- live: the dvclive log of a training.
- device: the device and precision, shared with inference.
- distributed: several processes or machines under torch.distributed.
- watcher: a training dies with the `dvc repro` that started it.
- fasttext: fastText training, for the embeddings and the baseline stages.
"""
