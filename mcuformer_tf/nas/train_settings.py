"""What a supernet training run is asked to do, checked before TensorFlow is imported: its settings,
the named recipes that fill them, and the tf.distribute strategies `distribution` knows."""
from __future__ import annotations

import dataclasses
import json
import os

from mcuformer_tf.errors import McuformerError

STRATEGIES = ("default", "mirrored", "one-device", "multi-worker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
DEIT_BASE_LR, DEIT_BASE_BATCH = 5e-4, 512

# Named recipes: `digits` is the small-data one the demo trains with; `deit` is DeiT's (Touvron et al.
# 2021, as AutoFormer and MCUFormer train their supernets): RandAugment m9 mstd0.5, mixup 0.8 and
# cutmix 1.0 on soft labels, label smoothing 0.1, random erasing 0.25, drop path 0.1, AdamW with
# weight decay 0.05, lr 5e-4 x batch / 512, 5 warmup epochs then cosine.
RECIPES = {
    "digits": {"learning_rate": 2e-3, "warmup_epochs": 2},
    "deit": {"warmup_epochs": 5, "label_smoothing": 0.1, "rand_augment": 9.0, "mixup": 0.8,
             "cutmix": 1.0, "random_erasing": 0.25, "drop_path": 0.1},
}


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
    rand_augment: float = 0.0       # RandAugment magnitude (0: off)
    mixup: float = 0.0              # mixup's Beta alpha (0: off)
    cutmix: float = 0.0             # cutmix's Beta alpha (0: off)
    random_erasing: float = 0.0     # probability of erasing a box of an image
    drop_path: float = 0.0          # stochastic depth of the last block (linear from 0 at the first)
    precision: str = "float32"

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise McuformerError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.random_subnets < 0:
            raise McuformerError(f"random_subnets must be >= 0, got {self.random_subnets}")
        if not self.learning_rate > 0:
            raise McuformerError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("label_smoothing", "random_erasing", "drop_path"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise McuformerError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.rand_augment <= 10.0:
            raise McuformerError(f"rand_augment magnitude must be in [0, 10], got {self.rand_augment}")
        if self.mixup < 0 or self.cutmix < 0:
            raise McuformerError("mixup and cutmix alphas must be >= 0")
        if self.precision not in PRECISIONS:
            raise McuformerError(f"unknown precision {self.precision!r} (use one of: "
                                 f"{', '.join(PRECISIONS)})")

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def recipe_settings(recipe: str, batch_size: int, **given) -> TrainSettings:
    """TrainSettings of a named recipe, with the options the user `given` (not None) on top."""
    if recipe not in RECIPES:
        raise McuformerError(f"unknown recipe {recipe!r} (use one of: {', '.join(RECIPES)})")
    values = {"learning_rate": DEIT_BASE_LR * batch_size / DEIT_BASE_BATCH, **RECIPES[recipe]}
    values.update({key: value for key, value in given.items() if value is not None})
    return TrainSettings(batch_size=batch_size, **values)


def writes_run_files() -> bool:
    """Whether this process is the chief of a TF_CONFIG cluster (the `chief` task, or worker 0
    where there is none): the process that writes a multi-worker run's files."""
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        task, cluster = config["task"], config["cluster"]
        return task["type"] == "chief" or (task["type"] == "worker" and int(task["index"]) == 0
                                           and "chief" not in cluster)
    except (KeyError, ValueError, TypeError):
        raise McuformerError("--strategy multi-worker needs TF_CONFIG, JSON with \"cluster\" and "
                             "\"task\" {\"type\", \"index\"} (see README, Train on ImageNet)") from None
