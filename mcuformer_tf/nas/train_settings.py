"""What a supernet training run is asked to do, checked before TensorFlow is imported: its settings
and the tf.distribute strategies `training.make_strategy` knows."""
from __future__ import annotations

import dataclasses

from mcuformer_tf.errors import McuformerError

STRATEGIES = ("default", "mirrored", "one-device")


@dataclasses.dataclass
class TrainSettings:
    epochs: int = 32
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    random_subnets: int = 1
    label_smoothing: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise McuformerError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.random_subnets < 0:
            raise McuformerError(f"random_subnets must be >= 0, got {self.random_subnets}")
        if not self.learning_rate > 0:
            raise McuformerError(f"learning_rate must be positive, got {self.learning_rate}")
