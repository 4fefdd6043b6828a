"""The crops of large-image data (`tfds:` and `imagefolder:`), as Inception and DeiT take them.

Training: a random-resized crop, a box of 8-100% of the image's area with an
aspect ratio in [3/4, 4/3] (tf.image.sample_distorted_bounding_box), resized
to the training size; a JPEG is decoded only inside the box
(decode_and_crop_jpeg). Evaluation: the shorter side resized to size / 0.875
(DeiT's crop ratio; 256 for 224) and the central size x size crop.
Both take encoded image bytes and return float32 in [0, 1].
"""
import tensorflow as tf

CROP_RATIO = 0.875
AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)


def _as_float(image, size):
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, [size, size], method="bilinear")
    return tf.clip_by_value(image, 0.0, 1.0)


def random_resized_crop(encoded, size: int, seed):
    """A random box of the encoded image, resized to size x size; `seed` a stateless seed pair."""
    is_jpeg = tf.io.is_jpeg(encoded)
    shape = tf.cond(is_jpeg, lambda: tf.image.extract_jpeg_shape(encoded),
                    lambda: tf.shape(tf.io.decode_image(encoded, 3, expand_animations=False)))
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, bounding_boxes=tf.zeros([1, 0, 4]), min_object_covered=0.0,
        aspect_ratio_range=ASPECT_RANGE, area_range=AREA_RANGE, max_attempts=10,
        use_image_if_no_bounding_boxes=True, seed=seed)
    window = tf.stack([begin[0], begin[1], box_size[0], box_size[1]])

    def crop_jpeg():
        return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)

    def crop_other():
        image = tf.io.decode_image(encoded, 3, expand_animations=False)
        return tf.slice(image, [begin[0], begin[1], 0], [box_size[0], box_size[1], 3])

    return _as_float(tf.cond(is_jpeg, crop_jpeg, crop_other), size)


def centre_crop(encoded, size: int, crop_ratio: float = CROP_RATIO):
    """The shorter side resized to size / crop_ratio, then the central size x size."""
    image = tf.cast(tf.io.decode_image(encoded, 3, expand_animations=False), tf.float32) / 255.0
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    scale = tf.math.ceil(size / crop_ratio) / tf.minimum(height, width)
    resized = tf.image.resize(image, tf.cast(tf.math.round(tf.stack([height, width]) * scale), tf.int32),
                              method="bilinear")
    return tf.clip_by_value(tf.image.resize_with_crop_or_pad(resized, size, size), 0.0, 1.0)
