"""The supernet and subnet extraction: same logits, save/load, closed-form sizes, no retracing."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from mcuformer_tf.nas.evaluation import traced_predict
from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.search_space import SearchSpace
from mcuformer_tf.nas.supernet import Supernet

CONFIGS_PER_PRESET = 20  # make test-all
QUICK_CONFIGS = {"digits": 20, "deit-tiny-mcu": 6}  # make test: 12-14-block saves and loads are slow


def _moved_supernet(space):
    """A fresh supernet with non-trivial weights everywhere (the default init leaves S = 1,
    biases = 0, LN = identity)."""
    net = Supernet(space)
    rng = np.random.default_rng(0)
    for variable in net.trainable_variables:
        variable.assign(variable + rng.normal(0, 0.05, variable.shape).astype(np.float32))
    return net


@pytest.fixture(scope="module")
def supernet(space):
    return _moved_supernet(space)


def _images(config, seed):
    return np.random.default_rng(seed).uniform(0, 1, (2, config.image_size, config.image_size, 3)
                                               ).astype(np.float32)


def _extracted_subnets_match_and_survive_save_load(space, supernet, tmp_path, count: int):
    predict = traced_predict(supernet)
    configs = [space.largest(), space.smallest()] + space.sample_many(count - 2, 7)
    for index, config in enumerate(configs):
        images = _images(config, index)
        supernet.set_active(config)
        expected = predict(images).numpy()
        model = extract_subnet(supernet, config)
        logits = model(images).numpy()
        assert np.max(np.abs(logits - expected)) < 1e-4, config.describe()
        assert model.count_params() == config.parameter_count(), config.describe()
        path = tmp_path / f"subnet{index}.keras"
        model.save(path)
        reloaded = keras.models.load_model(path)
        np.testing.assert_array_equal(reloaded(images).numpy(), logits)
    # All those subnets, one trace: switching subnets never retraces.
    assert predict.experimental_get_tracing_count() == 1


def test_extracted_subnets_match_the_supernet_and_survive_save_load(space, supernet, tmp_path):
    _extracted_subnets_match_and_survive_save_load(space, supernet, tmp_path, QUICK_CONFIGS[space.name])


@pytest.mark.slow
def test_twenty_extracted_deit_subnets_match_the_supernet_and_survive_save_load(tmp_path):
    """About 4 minutes: twenty 12-14-block subnets extracted, saved and loaded."""
    space = SearchSpace.load("deit-tiny-mcu")
    _extracted_subnets_match_and_survive_save_load(space, _moved_supernet(space), tmp_path,
                                                   CONFIGS_PER_PRESET)


def test_low_rank_layers_become_two_dense_layers_unless_dense_is_smaller(digits_space):
    net = Supernet(digits_space)
    smallest = digits_space.smallest()
    names = {layer.name for layer in extract_subnet(net, smallest).layers}
    # e32, 1 head, hidden 64, rank ratio 0.5: qkv 32->192 (r16) and fc1/fc2 are factorised,
    # proj 64->32 (r16: 16*96 >= 64*32 is false) too; with rank ratio 1 every layer is dense.
    assert {"block0_qkv_a", "block0_qkv_b", "block1_fc2_a", "block1_fc2_b"} <= names
    largest = {layer.name for layer in extract_subnet(net, digits_space.largest()).layers}
    assert {"block3_qkv", "block3_proj", "block3_fc1", "block3_fc2"} <= largest
    assert not any(name.endswith("_a") for name in largest)


def test_leading_slices_are_shared(digits_space):
    """A smaller subnet's weights are the leading slices of the largest one's."""
    net = Supernet(digits_space)
    big = extract_subnet(net, digits_space.largest())
    small_config = digits_space.sample_many(1, seed=11)[0]
    small = extract_subnet(net, small_config)
    e = small_config.embed_dim
    np.testing.assert_array_equal(small.get_layer("head").get_weights()[0],
                                  big.get_layer("head").get_weights()[0][:e])
    np.testing.assert_array_equal(small.get_layer("block0_ln1").get_weights()[0],
                                  big.get_layer("block0_ln1").get_weights()[0][:e])


def test_calling_with_an_encoding_equals_set_active(digits_space):
    net = Supernet(digits_space)
    config = digits_space.sample_many(1, seed=5)[0]
    images = _images(config, 0)
    by_argument = net(images, config=net.encode(config)).numpy()
    net.set_active(config)
    np.testing.assert_allclose(net(images).numpy(), by_argument, atol=1e-6)


def test_images_of_another_size_are_resized(digits_space):
    net = Supernet(digits_space)
    net.set_active(digits_space.largest())
    small = np.random.default_rng(0).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    expected = net(tf.image.resize(small, [32, 32])).numpy()
    np.testing.assert_allclose(net(small).numpy(), expected, atol=1e-6)
