"""Paper-scale first blocks (issue 14): one block (+ head) of four deit-tiny-mcu subnets as int8 models.

224/16 e192 h3 mlp4 at rank 0.5 and 0.95, 240/24 e192 h3 mlp4 r0.5 and 224/16 e168 h3 mlp3.5 r0.4,
each a one-block SubnetConfig of the deit-tiny-mcu space (1000 classes), converted from a supernet
with fresh weights: the kernels' instruction counts and the fused = unfused bytes contract do not
depend on the weights' values. The Cortex-M7 benchmark and the kernel test firmware's tests share them,
and the tests and fitting tools whose subject is shapes, graphs and bytes share its fresh supernets
(`fresh_supernet`, `perturbed_supernet`).
"""
from __future__ import annotations

import numpy as np

from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.search_space import SearchSpace, SubnetConfig
from mcuformer_tf.nas.supernet import Supernet
from mcuformer_tf.quantize.convert import to_int8_tflite

SPACE = "deit-tiny-mcu"
# label -> (image, patch, embed, heads, MLP ratio, rank ratio)
SHAPES = {"224/16 e192 h3 mlp4 r0.5": (224, 16, 192, 3, 4.0, 0.5),
          "224/16 e192 h3 mlp4 r0.95": (224, 16, 192, 3, 4.0, 0.95),
          "240/24 e192 h3 mlp4 r0.5": (240, 24, 192, 3, 4.0, 0.5),
          "224/16 e168 h3 mlp3.5 r0.4": (224, 16, 168, 3, 3.5, 0.4)}
FIRST_BLOCKS = {label: SubnetConfig(image, patch, rank, embed, 1, (heads,), (mlp,), 1000)
                for label, (image, patch, embed, heads, mlp, rank) in SHAPES.items()}


def fresh_supernet(space: SearchSpace, seed: int = 0) -> Supernet:
    """The space's supernet, built at its largest image, with the initial weights of `seed`."""
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    supernet = Supernet(space)
    size = max(space.image_size)
    supernet(np.zeros((1, size, size, 3), np.float32))
    return supernet


def perturbed_supernet(space: SearchSpace, std: float = 0.05, seed: int = 0) -> Supernet:
    """`fresh_supernet(space, seed)` with every weight moved by normal noise of std `std` (0: the fresh
    initialisation), so the converter keeps the LayerNorm gamma and beta and the biases it folds
    away where they are still exactly 1 and 0: the trained form's graph."""
    supernet = fresh_supernet(space, seed)
    rng = np.random.default_rng(seed)
    for variable in supernet.trainable_weights if std else ():
        variable.assign(variable + rng.normal(0, std, variable.shape).astype(variable.dtype.as_numpy_dtype))
    return supernet


def converted_model(supernet: Supernet, config: SubnetConfig) -> bytes:
    """The converter's int8 .tflite of a subnet's float model (ranges from 4 uniform random images;
    the fused = unfused tests convert their subnets so too)."""
    images = np.random.default_rng(0).uniform(0, 1, (4, config.image_size, config.image_size, 3)).astype(np.float32)
    return to_int8_tflite(extract_subnet(supernet, config), images)
