"""The QAT fine-tune recipe: the held-out split, frozen ranges, the kept best state, and one seed
giving one .tflite."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

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
    assert {name for name in frozen if frozen[name] != moved[name]} == {"quantize_layer/quantize_layer_max:0"}


def _export(trained_run, config, recipe, seed):
    """(int8 bytes, held-out scores, the exported .tflite's held-out score) of `config` fine-tuned
    by `recipe` with `seed` on 320 training images (fresh layer names: equal runs, equal bytes)."""
    keras.backend.clear_session()
    digits = load_digits(32)
    data = dataclasses.replace(digits, train=digits.train.take(320), train_count=320)
    quantized = quantization_aware_subnet(extract_subnet(load_supernet(trained_run), config), data,
                                          recipe, seed=seed, progress=False)
    model_bytes = to_int8_tflite(quantized.model, calibration_images(data, 32, seed=seed))
    _, holdout = split_holdout(data)
    images = np.stack([x for x, _ in holdout.as_numpy_iterator()])
    target = tf.nn.softmax(quantized.teacher.predict(images, verbose=0))
    kept = float(np.mean(keras.losses.categorical_crossentropy(
        target, tflm_predictor(model_bytes)(images), from_logits=True)))
    return model_bytes, quantized.held_out_scores, kept


def test_one_seed_gives_one_tflite_and_the_best_held_out_state_is_kept(trained_run, digits_space):
    config = digits_space.smallest()
    first, scores, kept = _export(trained_run, config, ONE_EPOCH, seed=3)
    again, scores_again, _ = _export(trained_run, config, ONE_EPOCH, seed=3)
    assert first == again and scores == scores_again
    assert len(scores) == 2  # the calibrated state, then the epoch's
    assert kept == min(scores)  # the .tflite exported is the best-scoring state's, exactly


@pytest.mark.slow
def test_a_fine_tune_that_only_hurts_keeps_the_calibrated_state(trained_run, digits_space):
    _, scores, kept = _export(trained_run, digits_space.smallest(),
                              dataclasses.replace(ONE_EPOCH, learning_rate=0.05), seed=3)
    assert not scores[1] <= scores[0]  # far too hot: the epoch ends worse than it began (or NaN)
    assert kept == scores[0]
