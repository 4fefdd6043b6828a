"""The training loop's guard against a non-finite loss: the run stops at the step that produced
it, before the epoch's checkpoint is written, so the last good checkpoint stays the one --resume
uses."""
from __future__ import annotations

import math

from mcuformer_tf.errors import McuformerError


class NonFiniteLoss(McuformerError):
    """A training step's loss was NaN or infinite."""


def finite_loss(loss: float, epoch: int, step: int, checkpoint: str | None) -> float:
    """`loss`, or NonFiniteLoss naming the epoch and step (1-based) and the checkpoint kept."""
    if math.isfinite(loss):
        return loss
    kept = (f"the last good checkpoint {checkpoint} is kept for --resume" if checkpoint
            else "no checkpoint was written")
    raise NonFiniteLoss(f"the loss is {loss} at epoch {epoch}, step {step}: training stopped; {kept}")
