"""int8 models of fresh supernets' subnets (`first_blocks.perturbed_supernet`), for tests whose subject is
shapes, graphs and bytes, not accuracy."""

from mcuformer_tf.compiler.int4_weights import onto_int4_grid as on_int4_grid  # noqa: F401 (tests import it here)


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
