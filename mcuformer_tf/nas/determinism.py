"""One seed, one result: seeding and TensorFlow op determinism for training, QAT and export.

`seed_run(seed)` seeds Python, NumPy and TensorFlow and turns on TF's op
determinism, so two runs with the same seed on the same machine give the same
weights and accuracies. Across machines results can still differ: a CPU with
other vector instructions or another core count sums floats in another order
(oneDNN and Eigen pick kernels and splits by both).
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


def seed_run(seed: int) -> None:
    """Seed every random stream of the process and make TF's ops deterministic (for good)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
