"""Shared fixtures: the presets and one small trained supernet run reused by several tests."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from mcuformer_tf.search_space import PRESETS, SearchSpace  # noqa: E402


@pytest.fixture(scope="session", params=PRESETS)
def space(request):
    return SearchSpace.load(request.param)


@pytest.fixture(scope="session")
def digits_space():
    return SearchSpace.load("digits")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A digits supernet trained for one epoch with the CLI's own code path (about 40 s)."""
    from mcuformer_tf.data import load_digits
    from mcuformer_tf.run_dir import RunDir
    from mcuformer_tf.training import TrainSettings, train_supernet

    space = SearchSpace.load("digits")
    run = RunDir(tmp_path_factory.mktemp("run") / "demo")
    run.create({"space": space.to_dict(), "data": "digits", "settings": {}})
    settings = TrainSettings(epochs=1, batch_size=128, random_subnets=1)
    train_supernet(space, load_digits(32), run, settings, strategy_name="mirrored")
    return run
