"""Conversion of a tf_keras subnet (float or QAT) to a full-integer int8 .tflite of TFLM builtins.

The model is converted from a concrete function with a fixed batch of 1: an
unknown batch leaves dynamic-shape ops that TFLM cannot run (DESIGN.md §3).
Input and output are int8; every op must be an int8 TFLite builtin, or
conversion fails rather than leaving a float op behind.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mcuformer_tf.errors import McuformerError


def to_int8_tflite(model, representative_images: np.ndarray) -> bytes:
    """An int8 .tflite of `model` at batch 1.

    `representative_images` (float, [n, h, w, 3]) calibrate whatever ranges
    quantisation-aware training did not record.
    """
    shape = (1,) + tuple(model.input_shape[1:])
    function = tf.function(lambda images: model(images, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = np.asarray(representative_images, np.float32)

    def representative():
        for image in samples:
            yield [image[None]]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as err:  # the converter reports unsupported ops by ConverterError and others
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise McuformerError(f"int8 conversion failed: {first}") from None
