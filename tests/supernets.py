"""Fresh supernets, and int8 models of their subnets, for tests whose subject is shapes, graphs
and bytes, not accuracy."""
import numpy as np

from mcuformer_tf.compiler.int4_weights import onto_int4_grid as on_int4_grid  # noqa: F401 (tests import it here)


def perturbed_supernet(space, std: float = 0.05, seed: int = 0):
    """A built supernet of `space`, initialised from `seed`, with every weight moved by normal noise
    of std `std` (0: the fresh initialisation), so the converter keeps the LayerNorm gamma and beta
    and the biases it folds away where they are still exactly 1 and 0."""
    from mcuformer_tf.quantize.first_blocks import fresh_supernet

    supernet = fresh_supernet(space, seed)
    rng = np.random.default_rng(seed)
    for variable in supernet.trainable_weights if std else ():
        variable.assign(variable + rng.normal(0, std, variable.shape).astype(
            variable.dtype.as_numpy_dtype))
    return supernet

def digits_models(space, fresh_int8_tflite, perturbed_int8_tflite, fresh_seeds, perturbed_seeds):
    """[(label, SubnetConfig, .tflite bytes)]: `space.sample(random.Random(seed))` of each seed,
    converted from the fresh and from the perturbed supernet."""
    import random

    cases = []
    for label, make, seeds in (("fresh", fresh_int8_tflite, fresh_seeds),
                               ("perturbed", perturbed_int8_tflite, perturbed_seeds)):
        for seed in seeds:
            config = space.sample(random.Random(seed))
            cases.append((f"{label} {seed}", config, make(config).read_bytes()))
    return cases
