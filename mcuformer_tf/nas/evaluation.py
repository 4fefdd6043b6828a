"""Top-1 accuracy of a float model, a supernet subnet or an extracted subnet on a data split."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mcuformer_tf.nas.data import ImageData
from mcuformer_tf.nas.extract import extract_subnet
from mcuformer_tf.nas.search_space import SubnetConfig
from mcuformer_tf.nas.supernet import Supernet

EVAL_BATCH = 256


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
