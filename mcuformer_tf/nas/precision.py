"""Keras mixed precision for supernet training: `float32`, `mixed_bfloat16` or `mixed_float16`.

The policy applies to the supernet built inside `policy_scope` (its variables stay float32,
its layers compute in the half type; LayerNorm, the attention softmax and the logits stay float32,
see `supernet_layers`). `mixed_float16` also needs loss scaling: `wrap_optimizer` puts the
optimizer in tf_keras's dynamic LossScaleOptimizer, and the train step scales its loss and
unscales its gradients through it (`scale_loss`, `unscale_gradients`) (bfloat16 has float32's range and needs none).
"""
import contextlib

import tf_keras as keras


@contextlib.contextmanager
def policy_scope(name: str):
    """Models and layers made inside take the Keras dtype policy `name`; the global one is restored."""
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def wrap_optimizer(optimizer, name: str):
    """The optimizer, in a dynamic LossScaleOptimizer under mixed_float16."""
    if name == "mixed_float16":
        return keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def _loss_scaled(optimizer) -> bool:
    return isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)


def scale_loss(loss, optimizer):
    """The loss times the optimizer's loss scale where it has one (inside the gradient tape)."""
    return optimizer.get_scaled_loss(loss) if _loss_scaled(optimizer) else loss


def unscale_gradients(gradients, optimizer):
    """Gradients of `scale_loss`'s loss brought back to the loss's scale."""
    return optimizer.get_unscaled_gradients(gradients) if _loss_scaled(optimizer) else gradients
