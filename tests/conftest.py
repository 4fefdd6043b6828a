"""Shared fixtures: the presets and one small trained supernet run reused by several tests."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from mcuformer_tf.nas.search_space import PRESETS, SearchSpace  # noqa: E402

TRAINED_EPOCHS = 5


# deit-tiny-mcu-int4 is deit-tiny-mcu with lower rank ratios and 4-bit weights: the deit case covers
# its supernet and graphs (test_search_space loads and samples every preset).
SPACE_FIXTURE_PRESETS = tuple(p for p in PRESETS if p != "deit-tiny-mcu-int4")


@pytest.fixture(scope="session", params=SPACE_FIXTURE_PRESETS)
def space(request):
    return SearchSpace.load(request.param)


@pytest.fixture(scope="session")
def digits_space():
    return SearchSpace.load("digits")


@pytest.fixture(scope="session")
def trained_epochs():
    return TRAINED_EPOCHS


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A digits supernet trained for 5 epochs under tf.distribute (mirrored) with the CLI's own
    code path (about a minute; val accuracy about 69% largest, 51% smallest): trained enough that
    int8 logits of its subnets are not near-ties."""
    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.run_dir import RunDir
    from mcuformer_tf.nas.training import TrainSettings, train_supernet

    space = SearchSpace.load("digits")
    run = RunDir(tmp_path_factory.mktemp("run") / "demo")
    run.create({"space": space.to_dict(), "data": "digits", "settings": {}})
    settings = TrainSettings(epochs=TRAINED_EPOCHS, batch_size=32, warmup_epochs=1,
                             random_subnets=1)
    train_supernet(space, load_digits(32), run, settings, strategy_name="mirrored")
    return run


def _export_int8_subnets(run_path, seeds, weight_bits=8):
    """[(seed, model bytes)]: the export pipeline without QAT epochs, one subnet per seed, its weights
    on a `weight_bits` grid (4: packed INT4, as the converter writes them)."""
    import random

    from mcuformer_tf.nas.data import load_digits
    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.nas.run_dir import RunDir
    from mcuformer_tf.nas.training import load_supernet
    from mcuformer_tf.quantize.export import calibrated_int8_tflite

    run = RunDir(run_path)
    space, supernet, data = run.space(), load_supernet(run), load_digits(32)
    return [(seed, calibrated_int8_tflite(extract_subnet(supernet, space.sample(random.Random(seed))),
                                          data, count=64, weight_bits=weight_bits))
            for seed in seeds]


@pytest.fixture(scope="session")
def digits_int8_models(trained_run):
    """10 random digits subnets of the trained supernet as int8 .tflite (ranges calibrated, no QAT
    epochs).

    A list of (SubnetConfig, model bytes); configs are `space.sample(random.Random(seed))`, seeds 0-9.
    Two processes share the conversions (the converter is single-threaded and slow).
    """
    import multiprocessing
    import random
    from concurrent.futures import ProcessPoolExecutor

    space = trained_run.space()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        halves = pool.map(_export_int8_subnets, [str(trained_run.path)] * 2,
                          [range(0, 10, 2), range(1, 10, 2)])
        by_seed = dict(model for half in halves for model in half)
    return [(space.sample(random.Random(seed)), by_seed[seed]) for seed in range(10)]


@pytest.fixture(scope="session")
def digits_int4_model(trained_run):
    """A function: seed -> (SubnetConfig with 4-bit weights, its .tflite bytes): the digits subnet
    `space.sample(random.Random(seed))` exported as `digits_int8_models` are, with packed INT4
    weights (`export --weight-bits 4` without QAT epochs); each converted once per session."""
    import dataclasses
    import random

    space, models = trained_run.space(), {}

    def model_of(seed):
        if seed not in models:
            (_, raw), = _export_int8_subnets(str(trained_run.path), [seed], weight_bits=4)
            models[seed] = dataclasses.replace(space.sample(random.Random(seed)), weight_bits=4), raw
        return models[seed]

    return model_of


def _int8_tflite_factory(space, folder, perturbation: float = 0.0):
    """SubnetConfig -> path of its int8 .tflite, from one fresh supernet whose weights are moved
    by normal noise of std `perturbation`; each config converted once."""
    import numpy as np

    from mcuformer_tf.nas.extract import extract_subnet
    from mcuformer_tf.quantize.convert import to_int8_tflite
    from mcuformer_tf.quantize.first_blocks import perturbed_supernet

    supernet = perturbed_supernet(space, perturbation)
    images = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    paths = {}

    def tflite_of(config):
        if config not in paths:
            paths[config] = folder / f"model{len(paths)}.tflite"
            paths[config].write_bytes(to_int8_tflite(extract_subnet(supernet, config), images))
        return paths[config]

    return tflite_of


@pytest.fixture(scope="session")
def fresh_int8_tflite(digits_space, tmp_path_factory):
    """A function: digits SubnetConfig -> path of its int8 .tflite with a fresh supernet's weights.

    For tests of shapes and memory, where trained weights do not matter; each config is
    converted once per session.
    """
    return _int8_tflite_factory(digits_space, tmp_path_factory.mktemp("fresh_int8"))


@pytest.fixture(scope="session")
def perturbed_int8_tflite(digits_space, tmp_path_factory):
    """As fresh_int8_tflite, every weight moved by noise (std 0.05) first, so the converter keeps
    the LayerNorm gamma and beta and the biases it folds away where they are still 1 and 0."""
    return _int8_tflite_factory(digits_space, tmp_path_factory.mktemp("perturbed_int8"), 0.05)

