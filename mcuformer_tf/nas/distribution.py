"""tf.distribute for supernet training: the strategies by name, and who writes checkpoints.

`multi-worker` is MultiWorkerMirroredStrategy configured from TF_CONFIG (one process per worker,
the same command on each). It has to exist before TensorFlow runs its first op in the process, so
`make_strategy` keeps the strategy it made and the CLI makes it before loading data. Under it the
chief (worker 0, or the `chief` task) writes the run's checkpoints and history; every other worker
saves its share of a checkpoint to a scratch folder it deletes (tf.train's contract: all workers
take part in a save), and all restore the chief's checkpoint on `--resume`.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import tensorflow as tf

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.train_settings import STRATEGIES, writes_run_files


@functools.lru_cache(maxsize=None)
def make_strategy(name: str) -> tf.distribute.Strategy:
    """A tf.distribute strategy by name: default (no distribution), mirrored, one-device, multi-worker."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one-device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "multi-worker":
        writes_run_files()  # TF_CONFIG must name the cluster and this task
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise McuformerError(f"unknown strategy {name!r} (use one of: {', '.join(STRATEGIES)})")


class CheckpointWriter:
    """Saves a tf.train.Checkpoint once per epoch: the chief into the run, others into scratch."""

    def __init__(self, checkpoint: tf.train.Checkpoint, checkpoint_dir: Path,
                 strategy: tf.distribute.Strategy, keep: int = 2):
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.chief = not multi_worker or writes_run_files()
        resolver = strategy.cluster_resolver if multi_worker else None
        self.directory = checkpoint_dir if self.chief else (
            checkpoint_dir.parent / f"worker-scratch-{resolver.task_type}-{resolver.task_id}")
        self.manager = tf.train.CheckpointManager(checkpoint, str(self.directory), max_to_keep=keep)

    def save(self, epoch: int) -> None:
        self.manager.save(checkpoint_number=epoch)
        if not self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
