"""An int8 .tflite as a firmware runs it, image by image in the stock TFLM wheel: its logits and
its top-1 accuracy."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mcuformer_tf.nas.evaluation import accuracy
from mcuformer_tf.tflm.tflite_graph import read_model

TFLM_EVAL_ARENA = 16 << 20  # generous: evaluation is not where the arena is tuned


def quantize_input(images: np.ndarray, quantization) -> np.ndarray:
    """Float images on an int8 input tensor's grid, as a firmware would feed them."""
    scale, zero_point = float(quantization.scale[0]), int(quantization.zero_point[0])
    return np.clip(np.round(images / scale) + zero_point, -128, 127).astype(np.int8)


def tflm_predictor(model_bytes: bytes):
    """images (float, [n, h, w, 3]) -> the int8 model's logits, dequantised, [n, classes]."""
    from tflite_micro.python.tflite_micro import runtime

    graph = read_model(model_bytes)
    quantization = graph.tensor(graph.inputs[0]).quantization
    output = graph.tensor(graph.outputs[0]).quantization
    scale, zero_point = float(output.scale[0]), int(output.zero_point[0])
    interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=TFLM_EVAL_ARENA)

    def predict(images):
        logits = []
        for image in quantize_input(np.asarray(images), quantization):
            interpreter.set_input(image[None], 0)
            interpreter.invoke()
            logits.append(interpreter.get_output(0)[0])
        return (np.stack(logits).astype(np.float32) - zero_point) * scale

    return predict


def tflm_accuracy(model_bytes: bytes, batches: tf.data.Dataset) -> float:
    """Val accuracy of an int8 .tflite run image by image in the stock TFLM wheel."""
    predict = tflm_predictor(model_bytes)
    return accuracy(lambda images: predict(images.numpy()), batches)
