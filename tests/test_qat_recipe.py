"""The QAT fine-tune recipe: the held-out split, frozen ranges, the kept best state, and one seed
giving one .tflite."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer

from mcuformer_tf.nas.data import load_digits
from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.training import load_supernet
from mcuformer_tf.quantize.convert import to_int8_tflite
from mcuformer_tf.quantize.int8_accuracy import tflm_predictor
from mcuformer_tf.quantize.qat import RANGE_DECAY_SUFFIX, quantize_subnet
from mcuformer_tf.quantize.qat_recipe import (
    HOLDOUT_EVERY,
    QatRecipe,
    _FreezeRanges,
    calibration_images,
    fine_tune_batches,
    quantization_aware_subnet,
    split_holdout,
)

ONE_EPOCH = QatRecipe(epochs=1, frozen_range_epochs=0)


def test_the_holdout_is_every_fifth_training_image_and_left_out_of_the_fine_tune():
    data = load_digits(8)
    train, holdout = split_holdout(data)
    every = np.stack([x for x, _ in data.train.as_numpy_iterator()])
    held = np.stack([x for x, _ in holdout.as_numpy_iterator()])
    kept = np.stack([x for x, _ in train.train.as_numpy_iterator()])
    assert np.array_equal(held, every[HOLDOUT_EVERY - 1::HOLDOUT_EVERY])
    assert np.array_equal(kept, np.delete(every, np.s_[HOLDOUT_EVERY - 1::HOLDOUT_EVERY], axis=0))
    assert (train.train_count, len(held)) == (len(kept), data.train_count // HOLDOUT_EVERY)


def test_calibration_images_are_chosen_by_their_seed_alone():
    """The same seed picks the same images whatever the process seeded before (a training run or
    an earlier export sets TF's global seed); another seed picks others."""
    data = load_digits(8)
    tf.random.set_seed(1)
    first = calibration_images(data, 16, count=32, seed=3)
    tf.random.set_seed(2)
    again, other = calibration_images(data, 16, count=32, seed=3), calibration_images(data, 16, count=32, seed=4)
    assert first.shape == (32, 16, 16, 3) and np.array_equal(first, again) and not np.array_equal(first, other)


def test_mixup_blends_each_fine_tune_batch_with_its_reverse_and_its_labels_alike():
    data = load_digits(8)
    (plain, labels), = fine_tune_batches(data, QatRecipe(epochs=1, mixup=0.0), seed=2, size=8).take(1)
    (mixed, soft), = fine_tune_batches(data, QatRecipe(epochs=1, mixup=1.0), seed=2, size=8).take(1)
    onehot = tf.one_hot(labels, data.num_classes).numpy()
    weight = soft.numpy()[np.arange(len(labels)), labels.numpy()]  # the own label's share (same crops)
    differ = labels.numpy() != labels.numpy()[::-1]
    weight = weight[differ][0]
    assert 0 < weight < 1
    np.testing.assert_allclose(soft, weight * onehot + (1 - weight) * onehot[::-1], atol=1e-6)
    np.testing.assert_allclose(mixed, weight * plain + (1 - weight) * plain.numpy()[::-1], atol=1e-6)


def _ranges(model):
    """The tracked activation ranges (scalars; per-channel kernel ranges are not tracked)."""
    return {v.name: float(v.numpy()) for v in model.non_trainable_variables
            if v.name.rsplit(":", 1)[0].endswith(("_min", "_max")) and v.shape.rank == 0}


def test_frozen_ranges_do_not_move_and_tracked_ones_do(trained_run, digits_space):
    qat = quantize_subnet(extract_subnet(load_supernet(trained_run), digits_space.smallest()))
    images = tf.random.stateless_uniform([8, 32, 32, 3], seed=[3, 4])
    qat(images, training=True)
    before = _ranges(qat)
    qat(images * 3, training=True)
    moved = _ranges(qat)
    assert sum(moved[name] != before[name] for name in before) > len(before) // 2
    freeze = _FreezeRanges(qat, first=0)
    names = set(before)
    bases = [v.name.rsplit(":", 1)[0][:-len(RANGE_DECAY_SUFFIX)] for v in freeze.decays]
    assert bases and all({f"{b}_min:0", f"{b}_max:0"} <= names for b in bases)  # a decay per range
    freeze.on_epoch_begin(0)
    qat(images * 5, training=True)
    frozen = _ranges(qat)
    tracked = [f"{b}_{end}:0" for b in bases for end in ("min", "max")]
    assert [frozen[name] for name in tracked] == [moved[name] for name in tracked]
    # only tfmot's input layer (all-values range of the [0, 1] image) still widens
    input_layer = next(layer for layer in qat.layers if isinstance(layer, QuantizeLayer))
    assert {name for name in frozen if frozen[name] != moved[name]} == {
        v.name for v in input_layer.non_trainable_variables if v.name.endswith("_max:0")}


def _fine_tuned(trained_run, config, recipe, seed):
    """`config` fine-tuned by `recipe` with `seed` on 320 training images (fresh layer names, so
    equal runs convert to equal bytes), and that data."""
    keras.backend.clear_session()
    digits = load_digits(32)
    data = dataclasses.replace(digits, train=digits.train.take(320), train_count=320)
    return quantization_aware_subnet(extract_subnet(load_supernet(trained_run), config), data, recipe,
                                     seed=seed, progress=False), data


def _exported_score(quantized, data, seed):
    """The held-out score of the .tflite `export` writes for `quantized`: converted as export
    converts, run in TFLM, cross-entropy from the float teacher's softmax."""
    model_bytes = to_int8_tflite(quantized.model, calibration_images(data, 32, seed=seed))
    _, holdout = split_holdout(data)
    images = np.stack([x for x, _ in holdout.as_numpy_iterator()])
    target = tf.nn.softmax(quantized.teacher.predict(images, verbose=0))
    return float(np.mean(keras.losses.categorical_crossentropy(
        target, tflm_predictor(model_bytes)(images), from_logits=True)))


def test_one_seed_fine_tunes_one_model(trained_run, digits_space):
    no_keep = dataclasses.replace(ONE_EPOCH, keep_best=False)  # no conversions: the test stays cheap
    first, _ = _fine_tuned(trained_run, digits_space.smallest(), no_keep, seed=3)
    again, _ = _fine_tuned(trained_run, digits_space.smallest(), no_keep, seed=3)
    weights, weights_again = first.model.get_weights(), again.model.get_weights()
    assert len(weights) == len(weights_again) > 20
    for value, value_again in zip(weights, weights_again):
        np.testing.assert_array_equal(value, value_again)


@pytest.mark.slow
def test_the_exported_tflite_is_the_best_held_out_state(trained_run, digits_space):
    """About 2.5 minutes (three conversions beside the fine-tune): in make test-all."""
    quantized, data = _fine_tuned(trained_run, digits_space.smallest(), ONE_EPOCH, seed=3)
    assert len(quantized.held_out_scores) == 2  # the calibrated state, then the epoch's
    assert _exported_score(quantized, data, seed=3) == min(quantized.held_out_scores)


@pytest.mark.slow
def test_a_fine_tune_that_only_hurts_keeps_the_calibrated_state(trained_run, digits_space):
    quantized, data = _fine_tuned(trained_run, digits_space.smallest(),
                                  dataclasses.replace(ONE_EPOCH, learning_rate=0.05), seed=3)
    scores = quantized.held_out_scores
    assert not scores[1] <= scores[0]  # far too hot: the epoch ends worse than it began (or NaN)
    assert _exported_score(quantized, data, seed=3) == scores[0]


@pytest.mark.slow
def test_one_seed_exports_one_tflite(trained_run, digits_space):
    exports = []
    for _ in range(2):
        quantized, data = _fine_tuned(trained_run, digits_space.smallest(), ONE_EPOCH, seed=3)
        exports.append((to_int8_tflite(quantized.model, calibration_images(data, 32, seed=3)),
                        quantized.held_out_scores))
    assert exports[0] == exports[1]
