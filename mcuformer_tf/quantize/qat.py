"""Quantisation-aware training of an extracted subnet with tensorflow-model-optimization.

Every layer of a subnet gets a QuantizeConfig, so that the fake-quantised
model sees the int8 tensors TFLite will hold:

| layer                          | QuantizeConfig                                         |
|--------------------------------|--------------------------------------------------------|
| Conv2D (patch embedding)       | `KernelQuantizeConfig` (per-channel kernel, output)    |
| Dense (low-rank factors, head) | `KernelQuantizeConfig` (per-tensor kernel, output)     |
| PositionEmbedding              | `PositionEmbeddingQuantizeConfig` (table, output)      |
| LayerNorm, QuickGELU           | `HookedQuantizeConfig` (inner tensors, output)         |
| AttentionScores, AttentionContext (the matmuls), Add, GlobalAveragePooling1D | `OutputQuantizeConfig` |
| Softmax                        | `ProbabilityQuantizeConfig` (TFLite's fixed 1/256, -128) |
| SplitHeads, Reshape            | `MovesBytesQuantizeConfig` (nothing to quantise)       |

The kernel configs follow tfmot's default 8-bit scheme (symmetric,
narrow-range kernels); activation ranges are tracked with a faster moving
average than tfmot's (decay 0.9, not 0.999) and set by a calibration pass
before fine-tuning, so that a fine-tune of a few hundred steps, or none,
still ends with ranges that fit the tensors.
A layer type missing from this table makes
`quantize_subnet` fail with its name; nothing is silently left float. Any
tensor no fake-quant node covers (none in our subnets; a converter lowering
may add some) is calibrated by the representative images given to the
converter.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.nas.subnet_layers import (
    AttentionContext,
    AttentionScores,
    LayerNorm,
    PositionEmbedding,
    QuickGELU,
    SplitHeads,
)

quantizers = tfmot.quantization.keras.quantizers
QuantizeConfig = tfmot.quantization.keras.QuantizeConfig

RANGE_EMA_DECAY = 0.9
EPSILON_VARIANCE_FRACTION = 1 / 64
CALIBRATION_BATCHES = 40
# TFLite's int8 SOFTMAX and LOGISTIC outputs are fixed at scale 1/256, zero point -128.
PROBABILITY_MAX = 255 / 256


def _start_range_from(inputs, min_var, max_var) -> None:
    """A range still at its start (0, 0) takes the batch's own range (0 included), so the first
    calibration batch is fake-quantised within its range, not a tenth of it (the average from 0
    would clip every tensor to a tenth, and twelve blocks of that shrink the residual stream to 0)."""
    unset = tf.logical_and(tf.equal(min_var, 0.0), tf.equal(max_var, 0.0))
    min_var.assign(tf.where(unset, tf.minimum(tf.reduce_min(inputs), 0.0), min_var))
    max_var.assign(tf.where(unset, tf.maximum(tf.reduce_max(inputs), 0.0), max_var))


class TensorQuantizer(quantizers.MovingAverageQuantizer):
    """8-bit asymmetric per-tensor fake-quant whose range variables carry the tensor's name.

    A layer with several inner tensors needs one range per tensor; the name
    keeps their variables apart inside one QuantizeWrapper.
    """

    def __init__(self, tensor="output"):
        super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        self.tensor = tensor

    def build(self, tensor_shape, name, layer):
        return super().build(tensor_shape, f"{self.tensor}_{name}", layer)

    def __call__(self, inputs, training, weights, **kwargs):
        if training:
            _start_range_from(inputs, weights["min_var"], weights["max_var"])
        return quant_ops.MovingAvgQuantize(
            inputs, weights["min_var"], weights["max_var"], ema_decay=RANGE_EMA_DECAY,
            is_training=training, num_bits=8, per_channel=False, symmetric=False,
            narrow_range=False)

    def get_config(self):
        return {"tensor": self.tensor}


def _probability_quantizer():
    return quantizers.FixedQuantizer(num_bits=8, init_min=0.0, init_max=PROBABILITY_MAX,
                                     narrow_range=False)


class _NoWeightsQuantizeConfig(QuantizeConfig):
    """Base of the configs below for layers whose weights (if any) stay as they are."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


class KernelQuantizeConfig(QuantizeConfig):
    """Conv2D/Dense: the kernel symmetric narrow-range int8 (per output channel or per tensor)
    and the (linear) activation's output tracked."""

    def __init__(self, per_axis):
        self.per_axis = per_axis

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, quantizers.LastValueQuantizer(
            num_bits=8, per_axis=self.per_axis, symmetric=True, narrow_range=True))]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, TensorQuantizer("activation"))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"per_axis": self.per_axis}


class MovesBytesQuantizeConfig(_NoWeightsQuantizeConfig):
    """Reshape/transpose/unpack: int8 in, the same int8 out, nothing to quantise."""


class OutputQuantizeConfig(_NoWeightsQuantizeConfig):
    """The layer's output fake-quantised per tensor, asymmetric, range tracked by moving average."""

    def get_output_quantizers(self, layer):
        return [TensorQuantizer()]


class HookedQuantizeConfig(OutputQuantizeConfig):
    """Every inner tensor of a `_HookedLayer` (its HOOKS) and its output fake-quantised.

    Hooks named in FIXED_GRID (a sigmoid's output) take TFLite's fixed
    1/256 grid; the others a tracked range.
    """

    FIXED_GRID = ("gate_hook",)

    def get_activations_and_quantizers(self, layer):
        return [(getattr(layer, hook),
                 _probability_quantizer() if hook in self.FIXED_GRID else TensorQuantizer(hook))
                for hook in layer.HOOKS]

    def set_quantize_activations(self, layer, quantize_activations):
        for hook, activation in zip(layer.HOOKS, quantize_activations):
            setattr(layer, hook, activation)


class ProbabilityQuantizeConfig(_NoWeightsQuantizeConfig):
    """Softmax output on TFLite's fixed int8 grid: [0, 255/256] in steps of 1/256."""

    def get_output_quantizers(self, layer):
        return [_probability_quantizer()]


class PositionEmbeddingQuantizeConfig(OutputQuantizeConfig):
    """The position table quantised per tensor (it is an int8 ADD operand), and the output."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.embedding, quantizers.LastValueQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False))]

    def set_quantize_weights(self, layer, quantize_weights):
        layer.embedding = quantize_weights[0]


QUANTIZE_CONFIGS = {
    keras.layers.Conv2D: lambda: KernelQuantizeConfig(per_axis=True),
    keras.layers.Dense: lambda: KernelQuantizeConfig(per_axis=False),
    keras.layers.Reshape: MovesBytesQuantizeConfig,
    keras.layers.Add: OutputQuantizeConfig,
    keras.layers.GlobalAveragePooling1D: OutputQuantizeConfig,
    PositionEmbedding: PositionEmbeddingQuantizeConfig,
    LayerNorm: HookedQuantizeConfig,
    SplitHeads: MovesBytesQuantizeConfig,
    AttentionScores: OutputQuantizeConfig,
    keras.layers.Softmax: ProbabilityQuantizeConfig,
    AttentionContext: OutputQuantizeConfig,
    QuickGELU: HookedQuantizeConfig,
}
CUSTOM_OBJECTS = {cls.__name__: cls for cls in (
    PositionEmbedding, LayerNorm, SplitHeads, AttentionScores, AttentionContext, QuickGELU,
    KernelQuantizeConfig, MovesBytesQuantizeConfig, OutputQuantizeConfig, HookedQuantizeConfig,
    ProbabilityQuantizeConfig, PositionEmbeddingQuantizeConfig, TensorQuantizer)}


def _annotate(layer):
    config = QUANTIZE_CONFIGS.get(type(layer))
    if config is None:
        raise McuformerError(f"layer {layer.name} ({type(layer).__name__}) has no QuantizeConfig; "
                             "it would stay float")
    return tfmot.quantization.keras.quantize_annotate_layer(layer, config())


def widen_layer_norm_epsilon(model: keras.Model, images: np.ndarray) -> dict:
    """Raise each LayerNorm's epsilon to EPSILON_VARIANCE_FRACTION of its largest token variance.

    In int8, variance + eps sits on a grid whose step is about max variance / 255;
    with eps of four steps no token (a blank patch, say) reaches rsqrt(0), and the
    largest inverse std stays within a factor 8 of the smallest. Tokens whose
    variance is far above eps are unaffected. Returns {layer name: new epsilon}.
    """
    norms = [layer for layer in model.layers if isinstance(layer, LayerNorm)]
    probe = keras.Model(model.inputs, [norm.input for norm in norms])
    inputs = probe.predict(images, batch_size=64, verbose=0)
    widened = {}
    for norm, x in zip(norms, inputs if len(norms) > 1 else [inputs]):
        largest = float(np.max(np.var(x.astype(np.float64), axis=-1)))
        norm.epsilon = max(norm.epsilon, largest * EPSILON_VARIANCE_FRACTION)
        widened[norm.name] = norm.epsilon
    return widened


def quantize_subnet(model: keras.Model) -> keras.Model:
    """The fake-quantised (QAT) twin of an extracted subnet, starting from its weights."""
    annotated = keras.models.clone_model(model, clone_function=_annotate)
    annotated.set_weights(model.get_weights())
    with tfmot.quantization.keras.quantize_scope(CUSTOM_OBJECTS):
        try:
            return tfmot.quantization.keras.quantize_apply(annotated)
        except (RuntimeError, ValueError) as err:
            raise McuformerError(f"quantisation-aware model failed: {str(err).splitlines()[0]}") \
                from None


def fine_tune(qat_model: keras.Model, data, epochs: int, batch_size: int = 32,
              learning_rate: float = 1e-4, seed: int = 0, progress: bool = True) -> None:
    """Calibrate the activation ranges, then fine-tune on the training split (cross-entropy, AdamW)."""
    keras.utils.set_random_seed(seed)
    batches = data.train_batches(batch_size, seed)
    size = qat_model.input_shape[1]
    if size != data.image_size:
        batches = batches.map(lambda x, y: (tf.image.resize(x, [size, size]), y))
    for variable in qat_model.non_trainable_variables:
        if variable.name.rsplit(":", 1)[0].endswith(("_min", "_max")):  # ranges start from the data
            variable.assign(tf.zeros_like(variable))
    calibrate = tf.function(lambda images: qat_model(images, training=True))
    for images, _ in batches.repeat().take(CALIBRATION_BATCHES):
        calibrate(images)
    if epochs > 0:
        _fit(qat_model, batches, data.train_count // batch_size, epochs, learning_rate, progress)
    diverged = [v.name for v in qat_model.variables if not np.all(np.isfinite(v.numpy()))]
    if diverged:
        raise McuformerError(f"quantisation-aware training diverged: {diverged[0]} is not finite")


def _fit(qat_model, batches, steps_per_epoch, epochs, learning_rate, progress):
    steps = epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps))
    qat_model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01, global_clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat_model.fit(batches, epochs=epochs, verbose=1 if progress else 0)


def calibration_images(data, image_size: int, count: int = 256, seed: int = 0) -> np.ndarray:
    """`count` training images (no augmentation) at `image_size`, for the converter's calibration."""
    images = data.train.shuffle(data.train_count, seed=seed).take(count).map(
        lambda x, y: tf.image.resize(x, [image_size, image_size]))
    return np.stack(list(images.as_numpy_iterator())).astype(np.float32)



def quantization_aware_subnet(model: keras.Model, data, epochs: int, seed: int = 0,
                              progress: bool = True) -> keras.Model:
    """The whole QAT recipe: widen LayerNorm epsilons, quantise, calibrate ranges, fine-tune."""
    widen_layer_norm_epsilon(model, calibration_images(data, model.input_shape[1], seed=seed))
    qat_model = quantize_subnet(model)
    fine_tune(qat_model, data, epochs, seed=seed, progress=progress)
    return qat_model
