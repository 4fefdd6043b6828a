"""Top-1 accuracy of a model, a supernet subnet or an extracted subnet on a data split."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mcuformer_tf.data import ImageData
from mcuformer_tf.extract import extract_subnet
from mcuformer_tf.search_space import SubnetConfig
from mcuformer_tf.supernet import Supernet

EVAL_BATCH = 256
TFLM_EVAL_ARENA = 16 << 20  # generous: evaluation is not where the arena is tuned


def accuracy(predict, batches: tf.data.Dataset) -> float:
    """Share of examples whose arg-max logit is the label; `predict` maps images to logits."""
    correct = total = 0
    for images, labels in batches:
        predicted = np.argmax(predict(images), axis=-1)
        correct += int(np.sum(predicted == labels.numpy()))
        total += int(labels.shape[0])
    return correct / total


def traced_predict(model) -> tf.function:
    """`model(images)` traced once for any batch size and image size."""
    return tf.function(lambda images: model(images, training=False),
                       input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])


def subnet_accuracy(supernet: Supernet, config: SubnetConfig, data: ImageData) -> float:
    """Val accuracy of `config` extracted from the supernet, as a standalone tf_keras model."""
    model = extract_subnet(supernet, config)
    return accuracy(traced_predict(model), data.val_batches(EVAL_BATCH, config.image_size))


def quantize_input(images: np.ndarray, quantization) -> np.ndarray:
    """Float images on an int8 input tensor's grid, as a firmware would feed them."""
    scale, zero_point = float(quantization.scale[0]), int(quantization.zero_point[0])
    return np.clip(np.round(images / scale) + zero_point, -128, 127).astype(np.int8)


def tflm_accuracy(model_bytes: bytes, batches: tf.data.Dataset) -> float:
    """Val accuracy of an int8 .tflite run image by image in the stock TFLM wheel."""
    from tflite_micro.python.tflite_micro import runtime

    from mcuformer_tf.tflite_graph import read_model

    graph = read_model(model_bytes)
    quantization = graph.tensor(graph.inputs[0]).quantization
    interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=TFLM_EVAL_ARENA)

    def predict(images):
        logits = []
        for image in quantize_input(images.numpy(), quantization):
            interpreter.set_input(image[None], 0)
            interpreter.invoke()
            logits.append(interpreter.get_output(0)[0])
        return np.stack(logits)

    return accuracy(predict, batches)
