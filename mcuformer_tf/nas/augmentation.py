"""The training recipe's augmentation after the crop: per image RandAugment and random erasing,
per batch mixup or cutmix on soft (one-hot, mixed) labels; all of it inside tf.data.

Mixup and cutmix follow timm's batch mode, as DeiT trains: each batch takes one of the two with
probability 0.5 (switch_prob), one Beta(alpha, alpha) weight, and as partners the batch reversed;
cutmix weighs the labels by the pixels its box really pasted. (Keras 3's MixUp and CutMix layers
run in tf.data too, but CutMix weighs the labels by the box's real-valued area while it pastes
whole pixels, which misweighs small images by several percent.) Random erasing is timm's: with
probability p a box of 2-33% of the image area, aspect ratio log-uniform in [0.3, 3.3], filled
with per-pixel uniform noise.
"""
from __future__ import annotations

import math

import tensorflow as tf

from mcuformer_tf.nas.rand_augment import rand_augment
from mcuformer_tf.nas.train_settings import TrainSettings

ERASE_AREA = (0.02, 1 / 3)
ERASE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))
SWITCH_PROBABILITY = 0.5


def random_erase(image, probability: float):
    """With `probability`, a random box of `image` [h, w, c] replaced by uniform noise."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    area = tf.cast(height * width, tf.float32) * tf.random.uniform([], *ERASE_AREA)
    aspect = tf.exp(tf.random.uniform([], *ERASE_LOG_ASPECT))
    box_h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, height)
    box_w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, width)
    top = tf.random.uniform([], 0, height - box_h + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, width - box_w + 1, dtype=tf.int32)
    rows, cols = tf.range(height)[:, None, None], tf.range(width)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    inside &= tf.random.uniform([]) < probability
    return tf.where(inside, tf.random.uniform(tf.shape(image)), image)


def per_image(settings: TrainSettings):
    """The per-image augmentation of `settings` on a float image, or None when it has none."""
    if not (settings.rand_augment or settings.random_erasing):
        return None

    def augment(image):
        if settings.rand_augment:
            image = rand_augment(image, magnitude=settings.rand_augment)
        if settings.random_erasing:
            image = random_erase(image, settings.random_erasing)
        return image

    return augment


def _beta(alpha):
    first, second = tf.random.gamma([], alpha), tf.random.gamma([], alpha)
    return first / (first + second)


def mixup(images, labels, alpha):
    """Each image blended with its partner in the reversed batch, weight Beta(alpha, alpha)."""
    weight = _beta(alpha)
    return (weight * images + (1 - weight) * tf.reverse(images, [0]),
            weight * labels + (1 - weight) * tf.reverse(labels, [0]))


def cutmix(images, labels, alpha):
    """A box of the partner image pasted in, its area 1 - Beta(alpha, alpha) before clipping at the
    border; the labels weighted by the pasted box's pixel count."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    side = tf.sqrt(1.0 - _beta(alpha))
    box_h = tf.cast(tf.cast(height, tf.float32) * side, tf.int32)
    box_w = tf.cast(tf.cast(width, tf.float32) * side, tf.int32)
    centre_y = tf.random.uniform([], 0, height, dtype=tf.int32)
    centre_x = tf.random.uniform([], 0, width, dtype=tf.int32)
    top, bottom = tf.maximum(centre_y - box_h // 2, 0), tf.minimum(centre_y + box_h // 2, height)
    left, right = tf.maximum(centre_x - box_w // 2, 0), tf.minimum(centre_x + box_w // 2, width)
    rows, cols = tf.range(height)[:, None, None], tf.range(width)[None, :, None]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    weight = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
    return (tf.where(inside[None], tf.reverse(images, [0]), images),
            weight * labels + (1 - weight) * tf.reverse(labels, [0]))


def batch_mixer(settings: TrainSettings):
    """(images, soft labels) -> mixed (images, soft labels) per `settings`, or None without mixing."""
    if not settings.mixes:
        return None

    def mix(images, labels):
        if not settings.cutmix:
            return mixup(images, labels, settings.mixup)
        if not settings.mixup:
            return cutmix(images, labels, settings.cutmix)
        return tf.cond(tf.random.uniform([]) < SWITCH_PROBABILITY,
                       lambda: mixup(images, labels, settings.mixup),
                       lambda: cutmix(images, labels, settings.cutmix))

    return mix
