"""The quantisation-aware fine-tune of an extracted subnet: the recipe that keeps float accuracy.

`quantization_aware_subnet` runs it, each step for a measured reason (issue 15's notes,
`tools/bench_qat.py` prints the figures):

1. LayerNorm epsilons are widened (`qat.widen_layer_norm_epsilon`, `epsilon_fraction` of the largest token
   variance) and the subnet fake-quantised.
2. Activation ranges are calibrated on `calibration_batches` training batches before any step.
3. The fine-tune distils the float subnet (as extracted, before the epsilons were widened):
   the loss is the cross-entropy between its softmax and the QAT model's, so the fake-quantised
   model learns to be the float model on the int8 grid rather than to refit the labels. Its
   batches are mixed (mixup, both models see the same blend), so the student matches the
   teacher between the training images too, not only on them: after the fine-tune the int8
   model's disagreements with float are a distillation fit gap (the student in float, widened
   epsilons and all, disagrees on as many images), not quantisation noise.
4. AdamW with a warmup of one epoch and a cosine decay, at a peak (3e-4) between one too
   low to close that gap in a few epochs (1e-4) and a hot start that undoes what the supernet
   learned (1e-3); batches of 16, so a small training set's epoch is enough steps.
5. The ranges are frozen for the last epoch, so the weights settle on the grid the .tflite keeps.
6. Every HOLDOUT_EVERY-th training image is held out of the fine-tune; after calibration and after
   each epoch the state is converted to int8 and the .tflite's distillation loss on them, run in
   TFLM, is measured; the best state is kept. So the choice sees what the converter and TFLM's
   integer kernels add to the fake-quantised model. The val split, which reports accuracy, is
   never used to choose.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf
import tf_keras as keras

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.data import ImageData
from mcuformer_tf.nas.determinism import seed_run
from mcuformer_tf.nas.train_settings import TrainSettings
from mcuformer_tf.quantize.convert import to_int8_tflite
from mcuformer_tf.quantize.int8_accuracy import tflm_predictor
from mcuformer_tf.quantize.qat import RANGE_DECAY_SUFFIX, quantize_subnet, widen_layer_norm_epsilon

HOLDOUT_EVERY = 5


@dataclasses.dataclass(frozen=True)
class QatRecipe:
    """The fine-tune's settings; the defaults are the measured recipe."""

    epochs: int = 4
    batch_size: int = 16  # a small training set's epoch in more steps
    learning_rate: float = 3e-4  # peak, after the warmup
    warmup_epochs: int = 1  # linear from 0, then cosine to 0
    weight_decay: float = 0.01
    frozen_range_epochs: int = 1  # the last epochs train on fixed ranges
    distill: bool = True  # False: cross-entropy against the labels
    keep_best: bool = True  # the best state on the held-out training images
    weight_bits: int = 8  # the kernels' grid: 8, or 4 (packed into INT4 tensors)
    calibration_batches: int = 40  # training batches the activation ranges start from
    epsilon_fraction: float = 1 / 64  # each LayerNorm's epsilon: this much of its largest token variance
    mixup: float = 1.0  # mixup's Beta alpha on the fine-tune's batches (0: off); the teacher sees the mixed images


def split_holdout(data: ImageData) -> tuple[ImageData, tf.data.Dataset]:
    """`data` without every HOLDOUT_EVERY-th training image, and those images (unaugmented)."""
    def part(dataset: tf.data.Dataset | None, held: bool):
        def wanted(index, _):
            is_held = tf.equal(index % HOLDOUT_EVERY, HOLDOUT_EVERY - 1)
            return is_held if held else tf.logical_not(is_held)

        return None if dataset is None else dataset.enumerate().filter(wanted).map(lambda _, example: example)

    held_count = data.train_count // HOLDOUT_EVERY
    rest = dataclasses.replace(data, train=part(data.train, False), train_count=data.train_count - held_count,
                               train_encoded=part(data.train_encoded, False))
    return rest, part(data.train, True)


def calibration_images(data, image_size: int, count: int = 256, seed: int = 0) -> np.ndarray:
    """`count` training images (no augmentation) at `image_size`, for the converter's calibration and
    the epsilons' widening: a stateless choice by `seed` alone, in training order, so what the
    process seeded before (a training run, another export) does not change it."""
    total = data.train_count

    def chosen(index, _):
        return tf.random.experimental.index_shuffle(index, [seed, 0], total - 1) < count

    images = data.train.enumerate().filter(chosen).map(
        lambda _, example: tf.image.resize(example[0], [image_size, image_size]))
    return np.stack(list(images.as_numpy_iterator())).astype(np.float32)


class _Distillation(keras.Model):
    """Trains `student` towards `teacher`'s softmax (or the labels, with `distill` off)."""

    def __init__(self, student: keras.Model, teacher: keras.Model, distill: bool):
        super().__init__()
        self.student, self.teacher, self.distill = student, teacher, distill
        self.teacher.trainable = False

    def call(self, images, training=False):
        return self.student(images, training=training)

    def train_step(self, batch):
        images, labels = batch
        if self.distill:
            target = tf.nn.softmax(self.teacher(images, training=False))
        elif labels.shape.rank == 2:  # mixed batches carry soft labels
            target = labels
        else:
            target = tf.one_hot(labels, self.student.output_shape[-1])
        with tf.GradientTape() as tape:
            loss = self.compiled_loss(target, self.student(images, training=True))
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}


class _FreezeRanges(keras.callbacks.Callback):
    """Sets every tracked range's decay to 1 (no update) from epoch `first` on."""

    def __init__(self, student: keras.Model, first: int):
        super().__init__()
        self.decays = [v for v in student.non_trainable_variables
                       if v.name.rsplit(":", 1)[0].endswith(RANGE_DECAY_SUFFIX)]
        self.first = first

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.first:
            for decay in self.decays:
                decay.assign(1.0)


class _KeepBest(keras.callbacks.Callback):
    """Scores the student's int8 model on the held-out images before training and after each
    epoch (the cross-entropy from the teacher's softmax to the int8 logits in TFLM) and restores
    the best-scoring state at the end: the state kept is the one whose .tflite is closest to float."""

    def __init__(self, student: keras.Model, convert, images: np.ndarray, teacher_probs: np.ndarray):
        super().__init__()
        self.student, self.convert, self.images, self.target = student, convert, images, teacher_probs
        self.scores: list[float] = []
        self.best = (np.inf, None)

    def _score(self) -> None:
        logits = tflm_predictor(self.convert(self.student))(self.images)
        score = float(np.mean(keras.losses.categorical_crossentropy(self.target, logits, from_logits=True)))
        self.scores.append(score)
        if score < self.best[0]:
            self.best = (score, self.student.get_weights())

    def on_train_begin(self, logs=None):
        self._score()

    def on_epoch_end(self, epoch, logs=None):
        self._score()

    def on_train_end(self, logs=None):
        if self.best[1] is not None:  # else every score is NaN: fine_tune reports the divergence
            self.student.set_weights(self.best[1])


def _schedule(recipe: QatRecipe, steps_per_epoch: int):
    warmup = min(recipe.warmup_epochs, recipe.epochs) * steps_per_epoch
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, recipe.epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        0.0, max(1, recipe.epochs * steps_per_epoch - warmup), warmup_target=recipe.learning_rate,
        warmup_steps=warmup)


def fine_tune_batches(train: ImageData, recipe: QatRecipe, seed: int, size: int) -> tf.data.Dataset:
    """Every epoch's training batches at `size`, one after another: each epoch its own shuffle and
    crops (the same seed gives the same order and crops), mixed by `recipe.mixup` (soft labels)."""
    mixing = TrainSettings(mixup=recipe.mixup) if recipe.mixup else None
    return functools.reduce(tf.data.Dataset.concatenate, [
        train.at_size(train.train_batches(recipe.batch_size, seed * 1000 + epoch, mixing), size)
        for epoch in range(max(1, recipe.epochs))])


def fine_tune(qat_model: keras.Model, teacher: keras.Model, data: ImageData, recipe: QatRecipe,
              representative: np.ndarray, seed: int = 0, progress: bool = True) -> list[float]:
    """Calibrate the ranges, then fine-tune by `recipe`; returns the held-out scores (calibrated
    state first, then one per epoch; empty with no epoch or no keep-best). `representative`: the
    images the converter calibrates on when it scores a state (`calibration_images`)."""
    seed_run(seed)
    size = qat_model.input_shape[1]
    train, holdout = split_holdout(data) if recipe.keep_best and recipe.epochs else (data, None)
    batches = fine_tune_batches(train, recipe, seed, size)
    for variable in qat_model.non_trainable_variables:
        if variable.name.rsplit(":", 1)[0].endswith(("_min", "_max")):  # ranges start from the data
            variable.assign(tf.zeros_like(variable))
    calibrate = tf.function(lambda images: qat_model(images, training=True))
    for images, _ in batches.repeat().take(recipe.calibration_batches):
        calibrate(images)
    scores = []
    if recipe.epochs > 0:
        scores = _fit(qat_model, teacher, batches, holdout, train.train_count // recipe.batch_size,
                      recipe, data, representative, progress)
    diverged = [v.name for v in qat_model.variables if not np.all(np.isfinite(v.numpy()))]
    if diverged:
        raise McuformerError(f"quantisation-aware training diverged: {diverged[0]} is not finite")
    return scores


def _fit(qat_model, teacher, batches, holdout, steps_per_epoch, recipe, data, representative, progress):
    size = qat_model.input_shape[1]
    distillation = _Distillation(qat_model, teacher, recipe.distill)
    distillation.compile(
        optimizer=keras.optimizers.AdamW(_schedule(recipe, steps_per_epoch),
                                         weight_decay=recipe.weight_decay, global_clipnorm=1.0),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    callbacks = [_FreezeRanges(qat_model, recipe.epochs - recipe.frozen_range_epochs)]
    if holdout is not None:
        images = np.stack([x for x, _ in data.at_size(holdout, size).as_numpy_iterator()])
        keep = _KeepBest(qat_model, lambda model: to_int8_tflite(model, representative), images,
                         tf.nn.softmax(teacher.predict(images, verbose=0)).numpy())
        callbacks.append(keep)
    distillation.fit(batches, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                     verbose=1 if progress else 0)
    return keep.scores if holdout is not None else []


@dataclasses.dataclass
class QuantizedSubnet:
    """A fine-tuned QAT model, the float teacher it distilled, the held-out scores (the calibrated
    state's first, then one per epoch) of which the lowest was kept, and the calibration images
    (`calibration_images`: the epsilons were widened on them, the converter calibrates on them)."""

    model: keras.Model
    teacher: keras.Model
    held_out_scores: list[float]
    calibration: np.ndarray

    def describe(self) -> str:
        if not self.held_out_scores:
            return "no fine-tune epoch: calibrated ranges"
        kept = int(np.argmin(self.held_out_scores))
        return (f"held-out distillation loss {' '.join(f'{s:.4f}' for s in self.held_out_scores)}; "
                f"kept {'the calibrated state' if kept == 0 else f'epoch {kept}'}")


def quantization_aware_subnet(model: keras.Model, data: ImageData, recipe: QatRecipe, seed: int = 0,
                              progress: bool = True) -> QuantizedSubnet:
    """The whole QAT recipe on an extracted float subnet (whose LayerNorm epsilons it widens)."""
    seed_run(seed)
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    calibration = calibration_images(data, model.input_shape[1], seed=seed)
    widen_layer_norm_epsilon(model, calibration, recipe.epsilon_fraction)
    qat_model = quantize_subnet(model, recipe.weight_bits)
    scores = fine_tune(qat_model, teacher, data, recipe, calibration, seed=seed, progress=progress)
    return QuantizedSubnet(qat_model, teacher, scores, calibration)
