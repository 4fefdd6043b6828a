"""RandAugment as DeiT trains with it: timm's `rand-m9-mstd0.5-inc1` policy, in tf.image ops.

Per image, two operations are drawn uniformly from the fifteen below; each is
applied with probability 0.5 at a magnitude drawn from N(m, mstd) clipped to
[0, 10] (m = 9, mstd = 0.5 for DeiT). At magnitude M (level = M / 10):
rotate up to 30 degrees, shear up to 0.3, translate up to 0.45 of the side
(each with a random sign, the uncovered area grey), enhance colour, contrast,
brightness or sharpness by 1 +- 0.9 level, posterize to 4 - 4 level bits,
solarize above 256 - 256 level, add 110 level below 128; autocontrast,
equalize and invert take no magnitude. Images are float32 [h, w, 3] in [0, 1].

Why not a package: Keras 3's `keras.layers.RandAugment` gives every operation
the one `factor` (so rotation and brightness cannot both take DeiT's
magnitudes), and TF Model Garden's `augment.RandAugment` (the same policy)
comes in tf-models-official, which requires another TensorFlow release.
"""
import math

import tensorflow as tf

GREY = 0.5
PROBABILITY = 0.5


def _blend(degenerate, image, factor):
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _grey(image):
    return tf.image.rgb_to_grayscale(image)


def _transform(image, matrix):
    """Image under the projective transform `matrix` (8 values, output -> input), grey outside."""
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(tf.reshape(matrix, [1, 8]), tf.float32),
        output_shape=tf.shape(image)[:2], fill_value=GREY, interpolation="BILINEAR",
        fill_mode="CONSTANT")
    return out[0]


def _rotate(image, level, sign):
    angle = sign * level * 30.0 * math.pi / 180.0
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return _transform(image, [cos, -sin, cx - cos * cx + sin * cy,
                              sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])


def _shear_x(image, level, sign):
    return _transform(image, [1.0, sign * level * 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def _shear_y(image, level, sign):
    return _transform(image, [1.0, 0.0, 0.0, sign * level * 0.3, 1.0, 0.0, 0.0, 0.0])


def _translate_x(image, level, sign):
    shift = sign * level * 0.45 * tf.cast(tf.shape(image)[1], tf.float32)
    return _transform(image, [1.0, 0.0, -shift, 0.0, 1.0, 0.0, 0.0, 0.0])


def _translate_y(image, level, sign):
    shift = sign * level * 0.45 * tf.cast(tf.shape(image)[0], tf.float32)
    return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -shift, 0.0, 0.0])


def _auto_contrast(image, level, sign):
    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    return tf.where(high > low, (image - low) / tf.maximum(high - low, 1e-6), image)


def _equalize_channel(channel):
    """PIL's ImageOps.equalize of one uint8 channel."""
    histogram = tf.histogram_fixed_width(channel, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    lut = (tf.cumsum(histogram, exclusive=True) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(lut, 0, 255)
    return tf.where(step > 0, tf.gather(lut, channel), channel)


def _equalize(image, level, sign):
    pixels = tf.cast(tf.round(image * 255.0), tf.int32)
    channels = [_equalize_channel(pixels[..., c]) for c in range(3)]
    return tf.cast(tf.stack(channels, axis=-1), tf.float32) / 255.0


def _invert(image, level, sign):
    return 1.0 - image


def _posterize(image, level, sign):
    shift = 8 - (4 - tf.cast(level * 4.0, tf.int32))
    pixels = tf.bitwise.left_shift(tf.bitwise.right_shift(tf.cast(image * 255.0, tf.int32), shift), shift)
    return tf.cast(pixels, tf.float32) / 255.0


def _solarize(image, level, sign):
    threshold = (256.0 - tf.floor(level * 256.0)) / 255.0
    return tf.where(image < threshold, image, 1.0 - image)


def _solarize_add(image, level, sign):
    added = tf.clip_by_value(image + tf.floor(level * 110.0) / 255.0, 0.0, 1.0)
    return tf.where(image < 128.0 / 255.0, added, image)


def _enhance(degenerate):
    def op(image, level, sign):
        return _blend(degenerate(image), image, 1.0 + sign * level * 0.9)
    return op


def _smooth(image):
    """PIL's SMOOTH filter inside the image, its border pixels kept."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    inner = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    padded = tf.pad(inner, [[1, 1], [1, 1], [0, 0]])
    mask = tf.pad(tf.ones_like(inner), [[1, 1], [1, 1], [0, 0]])
    return mask * padded + (1.0 - mask) * image


OPERATIONS = (
    _auto_contrast, _equalize, _invert, _rotate, _posterize, _solarize, _solarize_add,
    _enhance(lambda x: tf.image.grayscale_to_rgb(_grey(x))),                        # colour
    _enhance(lambda x: tf.fill(tf.shape(x), tf.reduce_mean(_grey(x)))),               # contrast
    _enhance(tf.zeros_like),                                                          # brightness
    _enhance(_smooth),                                                                # sharpness
    _shear_x, _shear_y, _translate_x, _translate_y,
)


def rand_augment(image, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5):
    """`num_ops` random operations of the policy on one float image (see the module docstring)."""
    image = tf.convert_to_tensor(image, tf.float32)
    for _ in range(num_ops):
        index = tf.random.uniform([], 0, len(OPERATIONS), dtype=tf.int32)
        level = tf.clip_by_value(tf.random.normal([], magnitude, magnitude_std), 0.0, 10.0) / 10.0
        sign = tf.where(tf.random.uniform([]) < 0.5, -1.0, 1.0)
        branches = [lambda op=op: op(image, level, sign) for op in OPERATIONS]
        applied = tf.ensure_shape(tf.switch_case(index, branches), image.shape)
        image = tf.cond(tf.random.uniform([]) < PROBABILITY, lambda: applied, lambda: image)
    return image
